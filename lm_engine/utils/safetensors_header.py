"""A safetensors file's header, read without torch and without its tensors: a cheap look at a download before the
weights load (the real Chat LM's shards are 5 GB each, and load after the other models).

    [8 bytes: header length N, little-endian] [N bytes: JSON {name: {dtype, shape, data_offsets: [begin, end]},
    "__metadata__": {...}}] [the tensors' bytes; offsets count from here]
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path


class SafetensorsHeaderError(ValueError):
    """A file whose start is no safetensors header (another format, or cut short within its header)."""


@dataclass(frozen=True, slots=True)
class SafetensorsHeader:
    shapes: dict[str, tuple[int, ...]]  # each tensor's shape, by name, in the header's order
    whole_size: int  # the file's size in bytes when whole: 8 + N + the end of its last tensor


def read_header(path: Path) -> SafetensorsHeader:
    """The header of the safetensors file at `path`; OSError when it cannot be read, SafetensorsHeaderError when
    what it holds is no header."""
    size = path.stat().st_size
    with path.open("rb") as f:
        start = f.read(8)
        if len(start) < 8:
            raise SafetensorsHeaderError(f"{size} bytes, shorter than a safetensors header")
        (length,) = struct.unpack("<Q", start)
        if length > size - 8:
            raise SafetensorsHeaderError("no safetensors header (another format, or cut short within its header)")
        try:
            header = json.loads(f.read(length))
            tensors = {k: v for k, v in header.items() if k != "__metadata__"}
            end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
            shapes = {k: tuple(int(n) for n in v["shape"]) for k, v in tensors.items()}
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise SafetensorsHeaderError(f"its header is not a safetensors one ({type(exc).__name__})") from exc
    return SafetensorsHeader(shapes=shapes, whole_size=8 + length + end)
