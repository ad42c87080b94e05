"""Server -> client Realtime events (GA), built as plain JSON-ready dicts.

Every builder returns a dict with a fresh `event_id` taken from the injected id source, so
tests are deterministic (SequentialIds) and production can use any unique generator. Shapes
follow `openai.types.realtime` exactly (tests validate each one strictly). Items come from
items.py, session objects from session_config.session_to_wire, responses from `response()`.
Note the GA quirk: content *parts* (response.content_part.*) use "audio"/"text" while item
content uses "output_audio"/"output_text".
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Literal, TypedDict

from controller.errors import ProtocolError
from controller.realtime.session_config import AudioFormat

__all__ = [
    "SequentialIds",
    "PartPosition",
    "ServerEvents",
    "ResponseStatus",
    "CancelReason",
    "response",
    "status_details",
    "usage",
    "audio_part",
    "text_part",
]

ResponseStatus = Literal["in_progress", "completed", "cancelled", "incomplete", "failed"]
CancelReason = Literal["turn_detected", "client_cancelled"]
Json = dict[str, object]


class PartPosition(TypedDict):
    """The content part a reply's part and delta events name: the builders' keywords, passed as **position."""

    response_id: str
    item_id: str
    output_index: int
    content_index: int


class SequentialIds:
    """Deterministic ids "<prefix><n>" (n from `start`); one instance per kind of id."""

    __slots__ = ("prefix", "_next")

    def __init__(self, prefix: str, start: int = 1) -> None:
        self.prefix = prefix
        self._next = start

    def __call__(self) -> str:
        n = self._next
        self._next += 1
        return f"{self.prefix}{n}"


def status_details(
    status: ResponseStatus,
    *,
    reason: str | None = None,
    error_type: str | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> Json | None:
    """`status_details` for response.done: None when completed or in progress.

    cancelled: reason "turn_detected" | "client_cancelled"; incomplete: "max_output_tokens" |
    "content_filter"; failed: an error {type, code, message}.
    """
    if status in ("completed", "in_progress"):
        return None
    details: Json = {"type": status}
    if reason is not None:
        details["reason"] = reason
    if status == "failed":
        details["error"] = {"type": error_type or "server_error", "code": error_code, "message": error_message}
    return details


def usage(
    *, input_text_tokens: int, output_text_tokens: int, input_audio_tokens: int = 0, output_audio_tokens: int = 0,
    cached_tokens: int = 0,
) -> Json:
    input_tokens = input_text_tokens + input_audio_tokens
    output_tokens = output_text_tokens + output_audio_tokens
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {
            "text_tokens": input_text_tokens,
            "audio_tokens": input_audio_tokens,
            "cached_tokens": cached_tokens,
        },
        "output_token_details": {"text_tokens": output_text_tokens, "audio_tokens": output_audio_tokens},
    }


def response(
    response_id: str,
    *,
    status: ResponseStatus,
    output: list[Json] | None = None,
    output_modalities: tuple[str, ...] = ("audio",),
    output_format: AudioFormat = AudioFormat.PCM,
    voice: str = "joe",
    max_output_tokens: int | Literal["inf"] | None = "inf",
    conversation_id: str | None = None,
    details: Json | None = None,
    usage: Json | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Json:
    """The GA `realtime.response` object for response.created (status in_progress) / response.done."""
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": details,
        "output": list(output or []),
        "conversation_id": conversation_id,
        "output_modalities": list(output_modalities),
        "max_output_tokens": max_output_tokens,
        "audio": {"output": {"format": output_format.to_wire(), "voice": voice}},
        "usage": usage,
        "metadata": dict(metadata) if metadata is not None else None,
    }


def audio_part(transcript: str = "") -> Json:
    """A content part of an audio reply (response.content_part.added/done)."""
    return {"type": "audio", "transcript": transcript}


def text_part(text: str = "") -> Json:
    return {"type": "text", "text": text}


class ServerEvents:
    """Builders for every server event we send; `event_id` comes from `next_event_id`."""

    __slots__ = ("_next_id",)

    def __init__(self, next_event_id: Callable[[], str]) -> None:
        self._next_id = next_event_id

    def _ev(self, type_: str, **fields: object) -> Json:
        return {"type": type_, "event_id": self._next_id(), **fields}

    # -- session -----------------------------------------------------------------------------
    def session_created(self, session: Json) -> Json:
        return self._ev("session.created", session=session)

    def session_updated(self, session: Json) -> Json:
        return self._ev("session.updated", session=session)

    # -- input audio buffer ------------------------------------------------------------------
    def speech_started(self, *, item_id: str, audio_start_ms: int) -> Json:
        return self._ev("input_audio_buffer.speech_started", audio_start_ms=audio_start_ms, item_id=item_id)

    def speech_stopped(self, *, item_id: str, audio_end_ms: int) -> Json:
        return self._ev("input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id)

    def committed(self, *, item_id: str, previous_item_id: str | None) -> Json:
        return self._ev("input_audio_buffer.committed", previous_item_id=previous_item_id, item_id=item_id)

    def cleared(self) -> Json:
        return self._ev("input_audio_buffer.cleared")

    def timeout_triggered(self, *, item_id: str, audio_start_ms: int, audio_end_ms: int) -> Json:
        return self._ev(
            "input_audio_buffer.timeout_triggered",
            audio_start_ms=audio_start_ms,
            audio_end_ms=audio_end_ms,
            item_id=item_id,
        )

    # -- conversation items ------------------------------------------------------------------
    def item_added(self, item: Json, *, previous_item_id: str | None) -> Json:
        return self._ev("conversation.item.added", previous_item_id=previous_item_id, item=item)

    def item_done(self, item: Json, *, previous_item_id: str | None) -> Json:
        return self._ev("conversation.item.done", previous_item_id=previous_item_id, item=item)

    def item_retrieved(self, item: Json) -> Json:
        return self._ev("conversation.item.retrieved", item=item)

    def item_truncated(self, *, item_id: str, content_index: int, audio_end_ms: int) -> Json:
        return self._ev(
            "conversation.item.truncated", item_id=item_id, content_index=content_index, audio_end_ms=audio_end_ms
        )

    def item_deleted(self, *, item_id: str) -> Json:
        return self._ev("conversation.item.deleted", item_id=item_id)

    def transcription_delta(self, *, item_id: str, content_index: int, delta: str) -> Json:
        return self._ev(
            "conversation.item.input_audio_transcription.delta",
            item_id=item_id,
            content_index=content_index,
            delta=delta,
        )

    def transcription_completed(
        self, *, item_id: str, content_index: int, transcript: str, audio_seconds: float
    ) -> Json:
        return self._ev(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=content_index,
            transcript=transcript,
            usage={"type": "duration", "seconds": float(audio_seconds)},
        )

    def transcription_failed(self, *, item_id: str, content_index: int, code: str, message: str) -> Json:
        return self._ev(
            "conversation.item.input_audio_transcription.failed",
            item_id=item_id,
            content_index=content_index,
            error={"type": "transcription_error", "code": code, "message": message, "param": None},
        )

    # -- responses ---------------------------------------------------------------------------
    def response_created(self, response: Json) -> Json:
        return self._ev("response.created", response=response)

    def response_done(self, response: Json) -> Json:
        return self._ev("response.done", response=response)

    def output_item_added(self, *, response_id: str, output_index: int, item: Json) -> Json:
        return self._ev("response.output_item.added", response_id=response_id, output_index=output_index, item=item)

    def output_item_done(self, *, response_id: str, output_index: int, item: Json) -> Json:
        return self._ev("response.output_item.done", response_id=response_id, output_index=output_index, item=item)

    def content_part_added(
        self, *, response_id: str, item_id: str, output_index: int, content_index: int, part: Json
    ) -> Json:
        return self._ev(
            "response.content_part.added", **_pos(response_id, item_id, output_index, content_index), part=part
        )

    def content_part_done(
        self, *, response_id: str, item_id: str, output_index: int, content_index: int, part: Json
    ) -> Json:
        return self._ev(
            "response.content_part.done", **_pos(response_id, item_id, output_index, content_index), part=part
        )

    def output_audio_delta(
        self, *, response_id: str, item_id: str, output_index: int, content_index: int, audio: bytes
    ) -> Json:
        """`audio` is already encoded in the session's output format; it is base64ed here."""
        delta = base64.b64encode(audio).decode("ascii")
        return self._ev(
            "response.output_audio.delta", **_pos(response_id, item_id, output_index, content_index), delta=delta
        )

    def output_audio_done(self, *, response_id: str, item_id: str, output_index: int, content_index: int) -> Json:
        return self._ev("response.output_audio.done", **_pos(response_id, item_id, output_index, content_index))

    def output_audio_transcript_delta(
        self, *, response_id: str, item_id: str, output_index: int, content_index: int, delta: str
    ) -> Json:
        pos = _pos(response_id, item_id, output_index, content_index)
        return self._ev("response.output_audio_transcript.delta", **pos, delta=delta)

    def output_audio_transcript_done(
        self, *, response_id: str, item_id: str, output_index: int, content_index: int, transcript: str
    ) -> Json:
        pos = _pos(response_id, item_id, output_index, content_index)
        return self._ev("response.output_audio_transcript.done", **pos, transcript=transcript)

    def output_text_delta(
        self, *, response_id: str, item_id: str, output_index: int, content_index: int, delta: str
    ) -> Json:
        return self._ev(
            "response.output_text.delta", **_pos(response_id, item_id, output_index, content_index), delta=delta
        )

    def output_text_done(
        self, *, response_id: str, item_id: str, output_index: int, content_index: int, text: str
    ) -> Json:
        return self._ev(
            "response.output_text.done", **_pos(response_id, item_id, output_index, content_index), text=text
        )

    def function_call_arguments_delta(
        self, *, response_id: str, item_id: str, output_index: int, call_id: str, delta: str
    ) -> Json:
        return self._ev(
            "response.function_call_arguments.delta",
            response_id=response_id,
            item_id=item_id,
            output_index=output_index,
            call_id=call_id,
            delta=delta,
        )

    def function_call_arguments_done(
        self, *, response_id: str, item_id: str, output_index: int, call_id: str, name: str, arguments: str
    ) -> Json:
        return self._ev(
            "response.function_call_arguments.done",
            response_id=response_id,
            item_id=item_id,
            output_index=output_index,
            call_id=call_id,
            name=name,
            arguments=arguments,
        )

    def output_audio_buffer_cleared(self, *, response_id: str) -> Json:
        """The reply to output_audio_buffer.clear: that response's audio was cut off."""
        return self._ev("output_audio_buffer.cleared", response_id=response_id)

    # -- errors ------------------------------------------------------------------------------
    def error(
        self,
        *,
        message: str,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        client_event_id: str | None = None,
    ) -> Json:
        return self._ev(
            "error",
            error={"type": error_type, "code": code, "message": message, "param": param, "event_id": client_event_id},
        )

    def error_from(self, exc: ProtocolError, client_event_id: str | None = None) -> Json:
        """The `error` event for a ProtocolError (its class decides the error type), naming the client event that
        caused it: `client_event_id`, else the one the error was raised with."""
        return self.error(message=exc.message, error_type=exc.error_type, code=exc.code, param=exc.param,
                          client_event_id=client_event_id or exc.event_id)


def _pos(response_id: str, item_id: str, output_index: int, content_index: int) -> Json:
    return {
        "response_id": response_id,
        "item_id": item_id,
        "output_index": output_index,
        "content_index": content_index,
    }
