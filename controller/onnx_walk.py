"""An ONNX file's protobuf structure, walked without parsing it: field keys and lengths, seeking past payloads
(speech_tokenizer_v1.onnx is 523 MB, nearly all of it one field), so a model folder's check costs no onnxruntime
session. Wire format: each field is a varint key (field number << 3 | wire type), then a varint (type 0), 8 bytes
(1), a varint length and that many bytes (2), or 4 bytes (5); types 3 and 4 (groups) are in no ONNX message.

    ModelProto   7 graph (GraphProto), 8 opset_import
    GraphProto   5 initializer (TensorProto: 8 name), 11 input (ValueInfoProto: 1 name)
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MODEL_GRAPH, MODEL_OPSET_IMPORT = 7, 8
_GRAPH_INITIALIZER, _GRAPH_INPUT = 5, 11
_TENSOR_NAME, _VALUE_INFO_NAME = 8, 1
_LENGTH_DELIMITED = 2


class ProtobufCut(Exception):
    """The bytes end inside a field; `needed` is the least size that would hold it."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"cut short: needs at least {needed} bytes")
        self.needed = needed


class NotProtobuf(Exception):
    """A key that no protobuf message has (HTML's "<" reads as wire type 4)."""


@dataclass(frozen=True, slots=True)
class Field:
    number: int
    wire: int
    start: int  # where its value starts (a length-delimited one's, past its length)
    end: int


def fields(f: BinaryIO, start: int, end: int) -> Iterator[Field]:
    """The fields of the message in f's bytes [start, end). A consumer may read `f` between two fields."""
    pos = start
    while pos < end:
        f.seek(pos)
        key = _varint(f, end)
        number, wire = key >> 3, key & 7
        if number == 0 or wire not in (0, 1, _LENGTH_DELIMITED, 5):
            raise NotProtobuf(f"field {number}, wire type {wire}")
        value_start = f.tell()
        if wire == 0:
            _varint(f, end)
            value_end = f.tell()
        elif wire == _LENGTH_DELIMITED:
            length = _varint(f, end)
            value_start = f.tell()
            value_end = value_start + length
        else:
            value_end = value_start + (8 if wire == 1 else 4)
        if value_end > end:
            raise ProtobufCut(value_end)
        yield Field(number, wire, value_start, value_end)
        pos = value_end


def graph_inputs(path: Path) -> list[str] | None:
    """The names of an ONNX model's graph inputs that are fed at run time (not initializers, which IR versions
    before 4 list among the inputs too); None when the file is no whole ONNX model (file_integrity says why)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        try:
            graph = next((g for g in fields(f, 0, size) if g.number == MODEL_GRAPH), None)
            if graph is None or graph.wire != _LENGTH_DELIMITED:
                return None
            inputs: list[str] = []
            initialized: set[str] = set()
            for part in fields(f, graph.start, graph.end):
                if part.number == _GRAPH_INPUT and part.wire == _LENGTH_DELIMITED:
                    inputs.append(_string(f, part, _VALUE_INFO_NAME))
                elif part.number == _GRAPH_INITIALIZER and part.wire == _LENGTH_DELIMITED:
                    initialized.add(_string(f, part, _TENSOR_NAME))
        except (ProtobufCut, NotProtobuf, UnicodeDecodeError):
            return None
    return [name for name in inputs if name not in initialized]


def _string(f: BinaryIO, message: Field, number: int) -> str:
    """Field `number` of `message` as text ("" when absent, as protobuf reads it)."""
    for part in fields(f, message.start, message.end):
        if part.number == number and part.wire == _LENGTH_DELIMITED:
            f.seek(part.start)
            return f.read(part.end - part.start).decode("utf-8")
    return ""


def _varint(f: BinaryIO, end: int) -> int:
    """A base-128 varint of at most 10 bytes from `f`, which must not read past `end`."""
    value = 0
    for shift in range(0, 70, 7):
        if f.tell() >= end:
            raise ProtobufCut(end + 1)
        byte = f.read(1)
        if not byte:
            raise ProtobufCut(end + 1)
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    raise NotProtobuf("a varint of more than 10 bytes")
