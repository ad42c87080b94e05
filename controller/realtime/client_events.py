"""Client -> server Realtime events: one frozen dataclass per event type, and the parser.

Rules:
- `parse_client_event` takes one WebSocket text (or binary) message and returns exactly one
  event or raises RemoteProtocolError; it never returns partial results. Errors carry the
  client's `event_id` whenever it could be read, so the `error` event can echo it.
- Codes: "message_too_large" (over max_bytes), "invalid_json" (a lone surrogate too), "invalid_event" (JSON but not an
  object), "missing_required_parameter", "unknown_event_type" (param "type"), "unknown_parameter" (a key of
  the event, or of its session or response object, that this server does not know; param its path), "invalid_value"
  (wrong type or value; param is the dotted path), "invalid_base64" (param "audio").
- GA names and shapes are the reference; beta shapes are accepted where they differ (session
  fields, assistant content types "text"/"audio", response.create `modalities` ...), and the beta
  `transcription_session.update` is a session.update of a transcription session.
- Items are parsed into ItemSpec values (items.py); the server assigns ids that are missing.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from controller.errors import RemoteProtocolError
from controller.realtime._json import Fields, invalid
from controller.realtime.items import ItemReference, ItemSpec, parse_item
from controller.realtime.session_config import SessionPatch
from controller.realtime.session_update import parse_session_patch, reasoning_served_as, served_as

__all__ = [
    "SessionUpdate",
    "InputAudioBufferAppend",
    "InputAudioBufferCommit",
    "InputAudioBufferClear",
    "OutputAudioBufferClear",
    "ConversationItemCreate",
    "ConversationItemRetrieve",
    "ConversationItemTruncate",
    "ConversationItemDelete",
    "ResponseCreate",
    "ResponseCancel",
    "ClientEvent",
    "parse_client_event",
    "DEFAULT_MAX_EVENT_BYTES",
]

# The Realtime API accepts client events up to 15 MiB.
DEFAULT_MAX_EVENT_BYTES = 15 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionUpdate:
    event_id: str | None
    patch: SessionPatch
    # session.model as sent: not a setting (the API lets no update change it), but the model a session connected
    # with (?model=) and shows, which a client may send back as it got it
    model: str | None = None
    served_as: tuple[str, ...] = ()  # what it serves another way (session_update.served_as), for the log


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferAppend:
    event_id: str | None
    audio: bytes  # decoded from base64; encoded in the session's input format


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferCommit:
    event_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferClear:
    event_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputAudioBufferClear:
    event_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemCreate:
    event_id: str | None
    previous_item_id: str | None  # None: append; "root": insert at the start
    item: ItemSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemRetrieve:
    event_id: str | None
    item_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemTruncate:
    event_id: str | None
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemDelete:
    event_id: str | None
    item_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseCreate:
    """response.create; `overrides` apply to this response only (apply_patch on the session config)."""

    event_id: str | None
    overrides: SessionPatch
    conversation: str  # "auto": the reply joins the conversation; "none": out-of-band
    input: tuple[ItemSpec | ItemReference, ...] | None  # None: the whole conversation is the input
    metadata: Mapping[str, str] | None
    served_as: tuple[str, ...] = ()  # what it serves another way (session_update.reasoning_served_as), for the log


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseCancel:
    event_id: str | None
    response_id: str | None


ClientEvent = (
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | OutputAudioBufferClear
    | ConversationItemCreate
    | ConversationItemRetrieve
    | ConversationItemTruncate
    | ConversationItemDelete
    | ResponseCreate
    | ResponseCancel
)


def parse_client_event(raw: str | bytes, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> ClientEvent:
    """Parse one client message.

    Raises:
        RemoteProtocolError: with `code`, `param` and (when readable) the client's `event_id`.
    """
    # A str is at most 4 UTF-8 bytes per character; only encode when the cheap bound can't decide.
    size = len(raw) if isinstance(raw, bytes) or 4 * len(raw) <= max_bytes else len(raw.encode("utf-8"))
    if size > max_bytes:
        raise RemoteProtocolError(
            f"Event of {size} bytes exceeds the maximum of {max_bytes} bytes.", code="message_too_large"
        )
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RemoteProtocolError(f"The event is not valid JSON: {exc}.", code="invalid_json") from exc
    except RecursionError as exc:  # arrays/objects nested thousands deep: Python's decoder gives up
        raise RemoteProtocolError("The event is not valid JSON: it is nested too deeply.",
                                  code="invalid_json") from exc
    if not isinstance(doc, dict):
        raise RemoteProtocolError("The event must be a JSON object.", code="invalid_event")
    event_id = doc.get("event_id")
    if _holds_lone_surrogate(doc):
        raise RemoteProtocolError(
            "The event is not valid JSON: a string holds half of a UTF-16 surrogate pair (\\ud800-\\udfff alone), "
            "which is no Unicode text.", code="invalid_json",
            event_id=event_id if isinstance(event_id, str) and not _holds_lone_surrogate(event_id) else None)
    if event_id is not None and not isinstance(event_id, str):
        raise invalid("event_id", "Invalid type for 'event_id': expected a string.")
    f = Fields(doc, "", event_id)
    kind = f.str_("type")
    parser = _PARSERS.get(kind)
    if parser is None:
        raise RemoteProtocolError(
            f"Invalid value: {kind!r}. Unknown client event type.",
            code="unknown_event_type",
            param="type",
            event_id=event_id,
        )
    f.refuse_unknown(("type", "event_id", *_EVENT_KEYS.get(kind, ())))  # a misspelt previous_item_id was ignored
    return parser(f, event_id)


def _holds_lone_surrogate(doc: object) -> bool:
    """Whether a string of the document holds half of a surrogate pair: json.loads joins an escaped pair into one
    character but keeps a lone half ("\\ud800"), which no text can be encoded with (the session failed on it where a
    text was first encoded). A binary frame in UTF-16 or UTF-32 may hold one unescaped."""
    pending = [doc]  # a loop: a document nested nearly as deep as json.loads takes would overflow a recursive walk
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if value.isascii():  # known to the str object: no scan (a base64 append costs nothing here)
                continue
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def _session_update(f: Fields, eid: str | None) -> SessionUpdate:
    session = f.obj_("session")
    return SessionUpdate(event_id=eid, patch=parse_session_patch(session.obj, path="session", event_id=eid),
                         model=session.opt_str("model"), served_as=tuple(served_as(session.obj)))


def _transcription_session_update(f: Fields, eid: str | None) -> ClientEvent:
    """The beta API's update of a transcription session: its session object has no `type`, it is one."""
    event = _session_update(f, eid)
    return dataclasses.replace(event, patch=dataclasses.replace(event.patch, kind="transcription"))


def _append(f: Fields, eid: str | None) -> ClientEvent:
    text = f.str_("audio")
    try:
        audio = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RemoteProtocolError(
            "Invalid 'audio': not valid base64.", code="invalid_base64", param="audio", event_id=eid
        ) from exc
    return InputAudioBufferAppend(event_id=eid, audio=audio)


def _item_create(f: Fields, eid: str | None) -> ClientEvent:
    item = parse_item(f.obj_("item"))
    if isinstance(item, ItemReference):
        raise invalid(
            "item.type", "Invalid value for 'item.type': 'item_reference' is only valid in response.input.", eid
        )
    return ConversationItemCreate(event_id=eid, previous_item_id=f.opt_str("previous_item_id"), item=item)


def _truncate(f: Fields, eid: str | None) -> ClientEvent:
    return ConversationItemTruncate(
        event_id=eid,
        item_id=f.str_("item_id"),
        content_index=f.int_("content_index", minimum=0),
        audio_end_ms=f.int_("audio_end_ms", minimum=0),
    )


def _response_create(f: Fields, eid: str | None) -> ClientEvent:
    r = f.opt_obj("response")
    if r is None:
        return ResponseCreate(event_id=eid, overrides=SessionPatch(), conversation="auto", input=None, metadata=None)
    conversation = "auto"
    if r.obj.get("conversation") is not None:
        conversation = r.choice("conversation", ("auto", "none"))
    items: tuple[ItemSpec | ItemReference, ...] | None = None
    if r.obj.get("input") is not None:
        items = tuple(parse_item(r.item_obj("input", i, v)) for i, v in enumerate(r.list_("input")))
    metadata = _metadata(r.obj_("metadata")) if r.obj.get("metadata") is not None else None
    return ResponseCreate(
        event_id=eid,
        overrides=parse_session_patch(r.obj, path="response", event_id=eid),
        conversation=conversation,
        input=items,
        metadata=metadata,
        served_as=tuple(reasoning_served_as(r.obj, "response")),
    )


# The API's limits on a response's metadata: 16 pairs, keys up to 64 characters, values up to 512.
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512


def _metadata(m: Fields) -> dict[str, str]:
    if len(m.obj) > MAX_METADATA_PAIRS:
        raise invalid(m.path, f"Invalid '{m.path}': {len(m.obj)} pairs; at most {MAX_METADATA_PAIRS} are allowed.",
                      m.event_id)
    out: dict[str, str] = {}
    for key in m.obj:
        value = m.str_(key)
        if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise invalid(m.param(key), f"Invalid '{m.param(key)}': keys are at most {MAX_METADATA_KEY} characters "
                          f"and values at most {MAX_METADATA_VALUE}.", m.event_id)
        out[key] = value
    return out


# Each event's own keys, besides type and event_id.
_EVENT_KEYS: dict[str, tuple[str, ...]] = {
    "session.update": ("session",),
    "transcription_session.update": ("session",),
    "input_audio_buffer.append": ("audio",),
    "conversation.item.create": ("previous_item_id", "item"),
    "conversation.item.retrieve": ("item_id",),
    "conversation.item.truncate": ("item_id", "content_index", "audio_end_ms"),
    "conversation.item.delete": ("item_id",),
    "response.create": ("response",),
    "response.cancel": ("response_id",),
}

_PARSERS: dict[str, Callable[[Fields, str | None], ClientEvent]] = {
    "session.update": _session_update,
    "transcription_session.update": _transcription_session_update,
    "input_audio_buffer.append": _append,
    "input_audio_buffer.commit": lambda f, eid: InputAudioBufferCommit(event_id=eid),
    "input_audio_buffer.clear": lambda f, eid: InputAudioBufferClear(event_id=eid),
    "output_audio_buffer.clear": lambda f, eid: OutputAudioBufferClear(event_id=eid),
    "conversation.item.create": _item_create,
    "conversation.item.retrieve": lambda f, eid: ConversationItemRetrieve(event_id=eid, item_id=f.str_("item_id")),
    "conversation.item.truncate": _truncate,
    "conversation.item.delete": lambda f, eid: ConversationItemDelete(event_id=eid, item_id=f.str_("item_id")),
    "response.create": _response_create,
    "response.cancel": lambda f, eid: ResponseCancel(event_id=eid, response_id=f.opt_str("response_id")),
}
