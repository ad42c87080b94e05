"""OpenAI Realtime (GA) wire events for the client side: server events parsed into `ServerEvent`, client events
built as plain dicts. Pure: no I/O, no clock.

Unknown server event types are not an error: they pass through as a `ServerEvent` with their raw fields, so a
newer server never breaks an older client. Only frames that are not a JSON object with a string "type" raise
`ServerEventError`.

The client also injects a few local events into the same stream; their type starts with "client." (see
`CLIENT_RECONNECTED`), a prefix the Realtime API never uses.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "CLIENT_RECONNECTED", "CLIENT_RESPONSE_LOST", "CLIENT_TRUNCATED", "ErrorInfo", "ServerEvent", "ServerEventError",
    "commit_event", "append_event", "cancel_response_event", "clear_event", "create_response_event",
    "merge_session", "parse_server_event", "session_update_event", "truncate_event",
    "BYTES_PER_WIRE_SAMPLE", "G711_ENCODERS", "REPLAY_EVENT_ID", "SessionFields", "input_format", "interrupts_response",
    "output_bytes_per_sample",
]

Json = dict[str, object]

CLIENT_RECONNECTED = "client.reconnected"  # data: {"attempt": int}; the server session is a new one
# data: {"response_id"}: the connection dropped while this reply was under way; it ends here, no response.done comes
CLIENT_RESPONSE_LOST = "client.response_lost"
CLIENT_TRUNCATED = "client.truncated"      # data: {"item_id", "content_index", "audio_end_ms"}: we sent a truncate


class ServerEventError(ValueError):
    """A frame from the server that is not a Realtime event (remote protocol error)."""


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The `error` object of an "error" event."""

    type: str
    message: str
    code: str | None = None
    param: str | None = None
    event_id: str | None = None

    def __str__(self) -> str:
        code = f" [{self.code}]" if self.code else ""
        return f"{self.type}{code}: {self.message}"


def _opt_str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _opt_int(v: object) -> int | None:
    # bool is an int in Python but never a valid count on the wire.
    return v if isinstance(v, int) and not isinstance(v, bool) else None


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One event from the server: its `type` and the whole decoded JSON object in `data`."""

    type: str
    data: Mapping[str, object] = field(default_factory=dict)

    def get(self, key: str, default: object = None) -> object:
        return self.data.get(key, default)

    @property
    def event_id(self) -> str | None:
        return _opt_str(self.data.get("event_id"))

    @property
    def item_id(self) -> str | None:
        item_id = _opt_str(self.data.get("item_id"))
        if item_id is None:  # conversation.item.* and response.output_item.* carry the item object
            item = self.data.get("item")
            if isinstance(item, Mapping):
                item_id = _opt_str(item.get("id"))
        return item_id

    @property
    def response_id(self) -> str | None:
        rid = _opt_str(self.data.get("response_id"))
        if rid is None:  # response.created / response.done carry the response object
            resp = self.data.get("response")
            if isinstance(resp, Mapping):
                rid = _opt_str(resp.get("id"))
        return rid

    @property
    def content_index(self) -> int:
        return _opt_int(self.data.get("content_index")) or 0

    @property
    def delta(self) -> str:
        """Text delta of *.delta events ("" when absent); base64 for output_audio.delta, see `audio`."""
        return _opt_str(self.data.get("delta")) or ""

    @property
    def transcript(self) -> str | None:
        return _opt_str(self.data.get("transcript"))

    @property
    def audio(self) -> bytes:
        """Decoded audio bytes of response.output_audio.delta (b"" for other events).

        Raises:
            ServerEventError: the delta is not base64.
        """
        if self.type not in ("response.output_audio.delta", "response.audio.delta"):
            return b""
        try:
            return base64.b64decode(self.delta)
        except binascii.Error as exc:
            raise ServerEventError(f"{self.type} {self.event_id or ''}: its audio is not base64 ({exc})") from exc

    @property
    def audio_start_ms(self) -> int | None:
        return _opt_int(self.data.get("audio_start_ms"))

    @property
    def audio_end_ms(self) -> int | None:
        return _opt_int(self.data.get("audio_end_ms"))

    @property
    def response_status(self) -> str | None:
        resp = self.data.get("response")
        return _opt_str(resp.get("status")) if isinstance(resp, Mapping) else None

    @property
    def response_reason(self) -> str | None:
        """status_details.reason of response.done: why a reply is incomplete (max_output_tokens, content_filter) or
        cancelled (turn_detected, client_cancelled)."""
        resp = self.data.get("response")
        details = resp.get("status_details") if isinstance(resp, Mapping) else None
        return _opt_str(details.get("reason")) if isinstance(details, Mapping) else None

    @property
    def response_error(self) -> str | None:
        """Why a response failed: status_details.error.message of a `failed` response.done (else None)."""
        resp = self.data.get("response")
        details = resp.get("status_details") if isinstance(resp, Mapping) else None
        err = details.get("error") if isinstance(details, Mapping) else None
        return _opt_str(err.get("message")) if isinstance(err, Mapping) else None

    @property
    def is_error(self) -> bool:
        return self.type == "error"

    @property
    def error(self) -> ErrorInfo | None:
        err = self.data.get("error")
        if self.type != "error" or not isinstance(err, Mapping):
            return None
        return ErrorInfo(
            type=_opt_str(err.get("type")) or "error",
            message=_opt_str(err.get("message")) or "",
            code=_opt_str(err.get("code")),
            param=_opt_str(err.get("param")),
            event_id=_opt_str(err.get("event_id")),
        )


# Beta names a pre-GA server may still send, mapped to their GA names so callers match one spelling.
_BETA_TO_GA = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "conversation.item.created": "conversation.item.added",
}


def parse_server_event(raw: str | bytes) -> ServerEvent:
    """Parse one WebSocket frame from the server.

    Raises:
        ServerEventError: the frame is not JSON, not an object, or has no string "type".
    """
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServerEventError(f"server frame is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ServerEventError("server frame is not a JSON object")
    etype = obj.get("type")
    if not isinstance(etype, str) or not etype:
        raise ServerEventError("server event has no type")
    return ServerEvent(_BETA_TO_GA.get(etype, etype), obj)


# ----- client events (dicts ready for json.dumps) -----

def session_update_event(session: Mapping[str, object]) -> Json:
    """session.update; `session` gets "type": "realtime" when it names no type (the GA API requires it)."""
    body = dict(session)
    body.setdefault("type", "realtime")
    return {"type": "session.update", "session": body}


# The objects whose fields a session.update sets one by one (a field it leaves out keeps its value): the session,
# audio, and audio.input / audio.output. Deeper objects (format, transcription, turn_detection) are set whole.
_Merged = Mapping[str, "_Merged"]
_MERGED_FIELDS: _Merged = {"audio": {"input": {}, "output": {}}}


def merge_session(earlier: Mapping[str, object], later: Mapping[str, object],
                  merged: _Merged = _MERGED_FIELDS) -> Json:
    """The session object that sets what `earlier` then `later` set when sent as two session.updates (pure)."""
    out = dict(earlier)
    for key, value in later.items():
        nested, prev = merged.get(key), out.get(key)
        if nested is not None and isinstance(prev, Mapping) and isinstance(value, Mapping):
            out[key] = merge_session(prev, value, nested)
        else:
            out[key] = value
    return out


# The event_id of the session.update that restores a client's fields in the new server session after a reconnect.
REPLAY_EVENT_ID = "client_session_replay"


class SessionFields:
    """The session fields a client set, as the server holds them: every session.update merged in order (a later
    field wins), less each one the server refused (an error naming that update's event_id), less each field a new
    server session refused when they were re-sent to it (see `replay`). Pure."""

    def __init__(self) -> None:
        self._updates: dict[str, Json] = {}  # event_id -> the update's session object, in sending order

    def update(self, session: Mapping[str, object]) -> Json:
        """The session.update event to send for `session`, with an event_id of its own."""
        event_id = f"client_session_update_{len(self._updates) + 1}"
        self._updates[event_id] = dict(session)
        return {**session_update_event(session), "event_id": event_id}

    def replay(self) -> Json | None:
        """The session.update that sets every accepted field in a new server session (after a reconnect); None when
        none were set."""
        fields = self.merged()
        return None if fields is None else {**session_update_event(fields), "event_id": REPLAY_EVENT_ID}

    def refused(self, error: ErrorInfo) -> bool:
        """Forget the session.update an error event refused: the one its event_id names or, when the server gave
        no event_id, the latest update that set the field its param names ("session.<field>..."); an error that
        names neither is not about a session field and forgets nothing.

        A refused replay is refused whole, for the one field its param names (a server back without a voice the old
        one had): that field is dropped from every update, and True says the rest is to be sent again."""
        path = _session_path(error.param)
        if error.event_id == REPLAY_EVENT_ID:
            before = list(self._updates.values())
            self._updates = {k: _without(v, path) for k, v in self._updates.items()} if path else self._updates
            return list(self._updates.values()) != before
        if error.event_id is not None:
            self._updates.pop(error.event_id, None)
            return False
        for event_id, session in reversed(self._updates.items()):
            if path and path[0] in session:
                del self._updates[event_id]
                break
        return False

    def merged(self) -> Json | None:
        """All accepted fields as one session object; None when none were set."""
        if not self._updates:
            return None
        out: Json = {}
        for session in self._updates.values():
            out = merge_session(out, session)
        return out


def _session_path(param: str | None) -> list[str]:
    """The session field an error's param names, as keys: "session.audio.output.voice" -> ["audio", "output",
    "voice"]; a list's element names the list ("session.tools[0].type" -> ["tools"]); [] for no session field."""
    if param is None or not param.startswith("session."):
        return []
    path = []
    for key in param.removeprefix("session.").split("."):
        name, bracket, _ = key.partition("[")
        if name:
            path.append(name)
        if bracket or not name:
            break
    return path


def _without(session: Mapping[str, object], path: list[str]) -> Json:
    """`session` less the field at `path` (its deepest key present there), the objects on the way copied."""
    out = dict(session)
    key, rest = path[0], path[1:]
    if key in out:
        inner = out[key]
        if rest and isinstance(inner, Mapping):
            out[key] = _without(inner, rest)
        else:
            del out[key]
    return out


def append_event(pcm: bytes) -> Json:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode("ascii")}


def commit_event() -> Json:
    return {"type": "input_audio_buffer.commit"}


def clear_event() -> Json:
    return {"type": "input_audio_buffer.clear"}


def create_response_event(response: Mapping[str, object] | None = None) -> Json:
    ev: Json = {"type": "response.create"}
    if response:
        ev["response"] = dict(response)
    return ev


def cancel_response_event(response_id: str | None = None) -> Json:
    ev: Json = {"type": "response.cancel"}
    if response_id:
        ev["response_id"] = response_id
    return ev


def truncate_event(item_id: str, audio_end_ms: int, content_index: int = 0) -> Json:
    if audio_end_ms < 0:
        raise ValueError("audio_end_ms must be >= 0")
    return {"type": "conversation.item.truncate", "item_id": item_id,
            "content_index": content_index, "audio_end_ms": int(audio_end_ms)}


# Bytes of output audio per 24 kHz sample, by output format: PCM16 24 kHz = 2; G.711 8 kHz = 1 byte per 3.
BYTES_PER_WIRE_SAMPLE = {"audio/pcm": 2.0, "audio/pcmu": 1 / 3, "audio/pcma": 1 / 3}


def _field(obj: object, *path: str) -> object:
    """The value at `path` in nested JSON objects, or None where one is missing or not an object."""
    for key in path:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def interrupts_response(event: ServerEvent) -> bool:
    """turn_detection.interrupt_response of a session event (true unless the session turns it off)."""
    return _field(event.data, "session", "audio", "input", "turn_detection", "interrupt_response") is not False


def output_bytes_per_sample(event: ServerEvent) -> float:
    fmt = _field(event.data, "session", "audio", "output", "format", "type")
    return BYTES_PER_WIRE_SAMPLE.get(fmt if isinstance(fmt, str) else "audio/pcm", 2.0)


# The beta API's names of the input formats (session.update input_audio_format), which the server also takes.
_BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
G711_ENCODERS: dict[object, str] = {"audio/pcmu": "ulaw_encode", "audio/pcma": "alaw_encode"}  # in clients.g711


def input_format(session: Mapping[str, object]) -> object:
    """The input format the session fields set (GA name; audio/pcm, the API's default, when they set none)."""
    fmt = _field(session, "audio", "input", "format", "type")
    beta = session.get("input_audio_format")
    return fmt or (_BETA_FORMATS.get(beta, beta) if isinstance(beta, str) else None) or "audio/pcm"
