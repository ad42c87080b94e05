"""Model files opened by native libraries (onnxruntime, sentencepiece, CTranslate2, llama.cpp) under any name.

Those libraries take a file or folder name as a str and encode it as strict UTF-8 (some check it from Python with
the file system encoding first). In the C locale without UTF-8 mode (PYTHONUTF8=0 LC_ALL=C: Docker images, ssh
sessions, systemd units) Python holds each non-ASCII byte of a name as a lone surrogate, which no strict encoder
takes, so a model folder such as /tmp/模型 failed to load with a TypeError or UnicodeEncodeError traceback.

`native_name(path)` gives a name they open as that very file: the path itself where its UTF-8 is its bytes on disk,
else /proc/self/fd/N of a descriptor Python opened by the path's own bytes (ASCII, so every layer accepts it; a
folder's files resolve under it too). Bytes read in Python would not do: llama.cpp and faster-whisper take names
only, and a folder (CTranslate2's) has no bytes.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

_FD_DIR = "/proc/self/fd"


@contextlib.contextmanager
def native_name(path: Path | str) -> Iterator[str]:
    """A name of `path` (a file or a folder) that a native library opens correctly, valid inside the block.

    Load the model inside the block: the descriptor behind a /proc name is closed when it ends (a library that
    maps the file keeps its mapping).

    Raises:
        OSError: `path` cannot be opened (only where its own name would not do; the error names `path`).
    """
    name = os.fspath(path)
    if _spelled_the_same(name) or not os.path.isdir(_FD_DIR):
        yield name
        return
    fd = os.open(name, os.O_RDONLY)
    try:
        yield f"{_FD_DIR}/{fd}"
    finally:
        os.close(fd)


def _spelled_the_same(name: str) -> bool:
    """Whether a library that encodes `name` as UTF-8 gets the bytes the file system holds."""
    try:
        return name.encode("utf-8") == os.fsencode(name)
    except UnicodeEncodeError:  # lone surrogates: bytes the file system encoding could not decode
        return False
