"""Whether a downloaded model file is whole, judged from its own bytes without loading it (the real ones take seconds
to minutes each, and load one after another, so a file cut short was found only once those before it had loaded):
a safetensors file from its header's last offset, a torch .pt zip archive from its end record, a .npy array from
its header's shape. Files of another kind, or unreadable ones, are left to their loaders, which name them."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from lm_engine.utils.safetensors_header import SafetensorsHeaderError, read_header

CUT_NOTE = "cut short: "
_ZIP_START = b"PK\x03\x04"  # torch.save's archive (since torch 1.6); a legacy pickle .pt starts otherwise


def damage(path: Path) -> str | None:
    """Why the file at `path` is not whole ("cut short: ..."), or None."""
    try:
        if path.suffix == ".safetensors":
            return _safetensors(path)
        if path.suffix == ".pt":
            return _torch_zip(path)
        if path.suffix == ".npy":
            return _npy(path)
    except OSError:
        return None
    return None


def _cut(size: int, whole: int) -> str | None:
    return f"{CUT_NOTE}{size:,} of its {whole:,} bytes" if size < whole else None


def _safetensors(path: Path) -> str | None:
    try:
        whole = read_header(path).whole_size
    except SafetensorsHeaderError as exc:
        return str(exc)
    return _cut(path.stat().st_size, whole)


def _torch_zip(path: Path) -> str | None:
    with path.open("rb") as f:
        start = f.read(len(_ZIP_START))
    # a zip archive ends with its directory: one cut short has none
    return f"{CUT_NOTE}its zip archive has no end" if start == _ZIP_START and not zipfile.is_zipfile(path) else None


def _npy(path: Path) -> str | None:
    with path.open("rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
        except ValueError:  # no .npy: its loader says what it is
            return None
        data_start = f.tell()
    if dtype.hasobject:  # pickled objects: their size is not in the header
        return None
    return _cut(path.stat().st_size, data_start + int(np.prod(shape)) * dtype.itemsize)
