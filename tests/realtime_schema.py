"""Strict validation of server events against the `openai` package's Realtime (GA) types.

The SDK itself never rejects a bad server event (unknown types fall back to the first union
member, missing fields read None), so tests validate raw frames here:
- the members of `openai.types.realtime.RealtimeServerEvent` are rebuilt as a pydantic
  discriminated union and parsed with `validate_json(raw, strict=True)` (strict: no "0" -> 0);
- the SDK models allow extra keys, so we also walk the parsed models and reject any key the
  schema does not declare (catches misspelt field names). `session` objects are checked against
  RealtimeSessionCreateResponse (or RealtimeTranscriptionSessionCreateResponse for a transcription session),
  which declare the server-only keys (id, object, expires_at).

Usage: `from tests.realtime_schema import validate_server_event; validate_server_event(raw_json)`.
"""

from __future__ import annotations

import json
import typing
from typing import Annotated, Union

import pydantic
from openai.types.realtime import (RealtimeServerEvent, RealtimeSessionCreateResponse,
                                   RealtimeTranscriptionSessionCreateResponse)

__all__ = ["SchemaMismatch", "validate_server_event", "SERVER_EVENT_TYPES"]


class SchemaMismatch(AssertionError):
    """The raw event does not match the openai Realtime schema."""


def _members() -> tuple[type[pydantic.BaseModel], ...]:
    union = typing.get_args(RealtimeServerEvent)[0]  # Annotated[Union[...], PropertyInfo]
    return typing.get_args(union)


_MEMBERS = _members()
SERVER_EVENT_TYPES: frozenset[str] = frozenset(typing.get_args(m.model_fields["type"].annotation)[0] for m in _MEMBERS)
_ADAPTER: pydantic.TypeAdapter[pydantic.BaseModel] = pydantic.TypeAdapter(
    Annotated[Union[_MEMBERS], pydantic.Field(discriminator="type")]  # type: ignore[arg-type]
)
_SESSION_ADAPTERS = {"realtime": pydantic.TypeAdapter(RealtimeSessionCreateResponse),
                     "transcription": pydantic.TypeAdapter(RealtimeTranscriptionSessionCreateResponse)}


def _extras(value: object, path: str, skip: frozenset[str]) -> list[str]:
    """Paths of keys present in the data but not declared by the model (recursively)."""
    found: list[str] = []
    if isinstance(value, pydantic.BaseModel):
        if path not in skip:
            found += [f"{path}.{k}".lstrip(".") for k in (value.model_extra or {})]
        for name in type(value).model_fields:
            found += _extras(getattr(value, name), f"{path}.{name}", skip)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _extras(v, f"{path}[{i}]", skip)
    return found


def validate_server_event(raw_json: str) -> None:
    """Raise SchemaMismatch unless `raw_json` is one valid GA server event with no unknown keys."""
    try:
        event = _ADAPTER.validate_json(raw_json, strict=True)
    except pydantic.ValidationError as exc:
        raise SchemaMismatch(f"{exc}\nraw: {raw_json[:2000]}") from exc
    skip: frozenset[str] = frozenset()
    doc = json.loads(raw_json)
    if doc.get("type") in ("session.created", "session.updated"):
        skip = frozenset({".session"})
        try:
            adapter = _SESSION_ADAPTERS[doc["session"].get("type", "realtime")]
            session = adapter.validate_python(doc["session"], strict=True)
        except pydantic.ValidationError as exc:
            raise SchemaMismatch(f"session: {exc}") from exc
        extra = _extras(session, "session", frozenset())
        if extra:
            raise SchemaMismatch(f"undeclared keys: {extra}")
    extra = _extras(event, "", skip)
    if extra:
        raise SchemaMismatch(f"undeclared keys: {extra}\nraw: {raw_json[:2000]}")
