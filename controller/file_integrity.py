"""Whether a downloaded model file is whole, judged from its own bytes without loading it (the real ones take seconds
to minutes each, and load one after another, so a file cut short was found only once those before it had loaded):
a safetensors file from its header's last offset, a torch .pt zip archive from its end record and its pickle
record (another zip archive has none), a .npy array from its header's shape, an .onnx model from its protobuf's
top-level fields (onnx_walk: their keys and lengths, not parsed: speech_tokenizer_v1.onnx is 523 MB). A file of none
of these kinds, or an unreadable one, is left to its loader, which names it; a .pt, .npy or .onnx file that does not
start as its kind does (a web page saved in its place by a download) is named as what it is."""
from __future__ import annotations

import itertools
import pickletools
import zipfile
from pathlib import Path

import numpy as np

from controller.onnx_walk import MODEL_GRAPH, MODEL_OPSET_IMPORT, NotProtobuf, ProtobufCut, fields
from lm_engine.utils.safetensors_header import SafetensorsHeaderError, read_header

CUT_NOTE = "cut short: "
PAGE_NOTE = "a web page (HTML)"
_ZIP_START = b"PK\x03\x04"  # torch.save's archive (since torch 1.6)
_PICKLE_START = b"\x80"  # a legacy torch.save pickle: protocol 2 (torch's default) and later open with PROTO
# ModelProto's fields that an ONNX model cannot do without: its graph, and (since IR version 3) its opset imports
_ONNX_NEEDS = {MODEL_GRAPH: "graph", MODEL_OPSET_IMPORT: "opset_import"}
_HEAD = 16  # the first bytes shown of a file that is not of its kind


def damage(path: Path) -> str | None:
    """Why the file at `path` is not whole ("cut short: ..."), or None."""
    try:
        if path.suffix == ".safetensors":
            return _safetensors(path)
        if path.suffix == ".pt":
            return _torch_zip(path)
        if path.suffix == ".npy":
            return _npy(path)
        if path.suffix == ".onnx":
            return _onnx(path)
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


def _not_a(kind: str, head: bytes) -> str:
    """Why a file that does not start as its kind is not one: a web page saved in its place by a download (a link
    that answered with a login or error page) is said as such."""
    if head.lstrip()[:1] == b"<":
        return f"not {kind} but {PAGE_NOTE}"
    return f"not {kind} (it starts with {head[:_HEAD]!r})"


def _torch_zip(path: Path) -> str | None:
    with path.open("rb") as f:
        head = f.read(_HEAD)
    if head.startswith(_PICKLE_START):
        return None
    if not head.startswith(_ZIP_START):
        return _not_a("a torch file", head)
    # a zip archive ends with its directory: one cut short has none
    if not zipfile.is_zipfile(path):
        return f"{CUT_NOTE}its zip archive has no end"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:  # a directory damaged otherwise: its loader names it
        return None
    if _pickle_record(names) is None:
        return f"not a torch file but a zip archive holding {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
    return None


def _pickle_record(names: list[str]) -> str | None:
    """The record of torch.save's pickle in its zip archive: NAME/data.pkl, NAME the saved file's stem (or
    "archive")."""
    return next((n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")), None)


def torch_names(path: Path) -> frozenset[str] | None:
    """The strings that a torch .pt zip archive's pickle holds before any _metadata, a state dict's tensor names
    among them (module paths not), read from its pickle record (tens of KB in a file of hundreds of MB: 17 ms for a
    150 MB one, where torch.load with mmap=True took 140 ms after torch's import) without unpickling it, so nothing
    in it runs. None for a file of another kind (damage names it) or a legacy pickle (the loader reads it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            record = _pickle_record(archive.namelist())
            data = archive.read(record) if record is not None else None
        if data is None:
            return None
        # string pushes alone: a GLOBAL's "torch._utils _rebuild_tensor_v2" is no name the pickle holds. A module's
        # state_dict() (how upstream's checkpoints are saved) ends in its _metadata, keyed by module paths
        # ("decoder.layers"): no tensor is named so, and one stood as the example of what a wrong file holds.
        strings = (arg for op, arg, _ in pickletools.genops(data) if "UNICODE" in op.name and isinstance(arg, str))
        return frozenset(itertools.takewhile(lambda name: name != "_metadata", strings))
    except (OSError, zipfile.BadZipFile, ValueError):  # a pickle cut short: genops' ValueError
        return None


def _npy(path: Path) -> str | None:
    with path.open("rb") as f:
        head = f.read(_HEAD)
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
        except ValueError:
            return _not_a("a .npy array", head)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        try:
            shape, _, dtype = read(f)
        except ValueError:  # a .npy whose header is damaged: its loader names it
            return None
        data_start = f.tell()
    if dtype.hasobject:  # pickled objects: their size is not in the header
        return None
    return _cut(path.stat().st_size, data_start + int(np.prod(shape)) * dtype.itemsize)


def _onnx(path: Path) -> str | None:
    """Walks the ModelProto's top-level fields (onnx_walk): a length past the file's end, or a field every model
    has (its graph, its opset imports) missing, is a file cut short; a key no protobuf has, another kind of file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(_HEAD)
        try:
            numbers = {field.number for field in fields(f, 0, size)}
        except ProtobufCut as cut:
            return f"{CUT_NOTE}{size:,} of at least {cut.needed:,} bytes"
        except NotProtobuf:
            return _not_a("an ONNX model", head)
    lacks = [name for number, name in _ONNX_NEEDS.items() if number not in numbers]
    return f"{CUT_NOTE}{size:,} bytes, without its {' and '.join(lacks)}" if lacks else None
