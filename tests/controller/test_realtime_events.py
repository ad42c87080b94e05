"""Server event builders: every output parses strictly with openai.types.realtime (GA)."""

from __future__ import annotations

import json

import pytest

from controller.errors import LocalProtocolError, RemoteProtocolError
from controller.realtime import items as it
from controller.realtime import server_events as sev
from controller.realtime.session_config import (
    AudioFormat,
    FunctionTool,
    SessionConfig,
    ToolChoiceFunction,
    Transcription,
    session_to_wire,
)
from tests.realtime_schema import SchemaMismatch, validate_server_event


def _events() -> sev.ServerEvents:
    return sev.ServerEvents(sev.SequentialIds("event_"))


POS = {"response_id": "resp_1", "item_id": "item_2", "output_index": 0, "content_index": 0}


def _all_events() -> list[dict[str, object]]:
    e = _events()
    tools = (
        FunctionTool(name="get_time", description="Current time", parameters={"type": "object", "properties": {}}),
    )
    cfgs = [
        SessionConfig(),
        SessionConfig(
            output_modalities=("text",),
            input_format=AudioFormat.PCMU,
            output_format=AudioFormat.PCMA,
            transcription=Transcription(model="whisper-1", language="en"),
            turn_detection=None,
            tools=tools,
            tool_choice=ToolChoiceFunction(name="get_time"),
            max_output_tokens=256,
        ),
    ]
    user = it.user_audio_item("item_1", transcript=None, status="in_progress")
    asst = it.assistant_message_item("item_2", audio=True, text="Hello there.")
    call = it.function_call_item("item_3", call_id="call_1", name="get_time", arguments="{}")
    out = it.function_call_output_item("item_4", call_id="call_1", output='{"time": "noon"}')
    done_usage = sev.usage(input_text_tokens=10, output_text_tokens=5, output_audio_tokens=40)
    evs = [e.session_created(session_to_wire(c, session_id="sess_1", model="step-audio")) for c in cfgs]
    evs += [e.session_updated(session_to_wire(c, session_id="sess_1", model="step-audio")) for c in cfgs]
    evs += [
        e.speech_started(item_id="item_1", audio_start_ms=200),
        e.speech_stopped(item_id="item_1", audio_end_ms=2400),
        e.committed(item_id="item_1", previous_item_id=None),
        e.committed(item_id="item_5", previous_item_id="item_4"),
        e.cleared(),
        e.timeout_triggered(item_id="item_6", audio_start_ms=5000, audio_end_ms=11000),
        e.item_added(user, previous_item_id=None),
        e.item_done(it.user_audio_item("item_1", transcript="what time is it"), previous_item_id=None),
        e.item_added(it.user_text_item("item_7", text="hi"), previous_item_id="item_1"),
        e.item_added(it.system_item("item_8", text="Be brief."), previous_item_id=None),
        e.item_added(it.assistant_message_item("item_9", audio=False, text="ok"), previous_item_id=None),
        e.item_added(call, previous_item_id="item_2"),
        e.item_added(out, previous_item_id="item_3"),
        e.item_retrieved(asst),
        e.item_truncated(item_id="item_2", content_index=0, audio_end_ms=1500),
        e.item_deleted(item_id="item_2"),
        e.transcription_delta(item_id="item_1", content_index=0, delta="what"),
        e.transcription_completed(item_id="item_1", content_index=0, transcript="what time is it", audio_seconds=2),
        e.transcription_failed(item_id="item_1", content_index=0, code="asr_failed", message="ASR crashed"),
        e.response_created(sev.response("resp_1", status="in_progress", conversation_id="conv_1")),
        e.output_item_added(
            response_id="resp_1",
            output_index=0,
            item=it.assistant_message_item("item_2", audio=True, text=None, status="in_progress"),
        ),
        e.content_part_added(**POS, part=sev.audio_part()),
        e.content_part_added(**POS, part=sev.text_part()),
        e.output_audio_delta(**POS, audio=b"\x00\x01\x02\x03"),
        e.output_audio_transcript_delta(**POS, delta="Hello"),
        e.output_text_delta(**POS, delta="Hello"),
        e.output_audio_done(**POS),
        e.output_audio_transcript_done(**POS, transcript="Hello there."),
        e.output_text_done(**POS, text="Hello there."),
        e.content_part_done(**POS, part=sev.audio_part("Hello there.")),
        e.content_part_done(**POS, part=sev.text_part("Hello there.")),
        e.output_item_done(response_id="resp_1", output_index=0, item=asst),
        e.function_call_arguments_delta(
            response_id="resp_1", item_id="item_3", output_index=1, call_id="call_1", delta="{"
        ),
        e.function_call_arguments_done(
            response_id="resp_1", item_id="item_3", output_index=1, call_id="call_1", name="get_time", arguments="{}"
        ),
        e.response_done(sev.response("resp_1", status="completed", output=[asst, call], usage=done_usage)),
        e.response_done(
            sev.response(
                "resp_2",
                status="cancelled",
                details=sev.status_details("cancelled", reason="turn_detected"),
                output=[it.assistant_message_item("item_2", audio=True, text="Hel", status="incomplete")],
            )
        ),
        e.response_done(
            sev.response(
                "resp_3",
                status="incomplete",
                output_modalities=("text",),
                max_output_tokens=16,
                details=sev.status_details("incomplete", reason="max_output_tokens"),
                metadata={"topic": "time"},
            )
        ),
        e.response_done(
            sev.response(
                "resp_4",
                status="failed",
                details=sev.status_details("failed", error_code="engine_error", error_message="LM crashed"),
            )
        ),
        e.output_audio_buffer_cleared(response_id="resp_1"),
        e.error(message="bad", code="invalid_value", param="session.voice", client_event_id="evt_9"),
        e.error_from(RemoteProtocolError("Not JSON.", code="invalid_json")),
        e.error_from(LocalProtocolError("oops", code="server_error", event_id="c1")),
    ]
    return evs


def test_every_builder_output_validates_strictly() -> None:
    events = _all_events()
    for event in events:
        validate_server_event(json.dumps(event))
    # event ids are fresh and in order
    assert [ev["event_id"] for ev in events] == [f"event_{i}" for i in range(1, len(events) + 1)]


def test_builders_cover_the_must_have_server_events() -> None:
    sent = {ev["type"] for ev in _all_events()}
    must = {
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "conversation.item.retrieved",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
        "response.created",
        "response.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "error",
    }
    assert must <= sent


def test_validator_rejects_wrong_shapes() -> None:
    e = _events()
    bad = [
        {"type": "response.output_audio.delta", "event_id": "e1", **POS, "delta": 5},  # wrong type
        {"type": "input_audio_buffer.cleared"},  # missing event_id
        {"type": "response.audio.delta", "event_id": "e1", **POS, "delta": ""},  # beta name
        {**e.speech_started(item_id="i", audio_start_ms=1), "audio_start_ms": "1"},  # strict: no str->int
        {**e.cleared(), "bogus": 1},  # undeclared key
        # item content uses output_audio, content parts use audio: swapping them is an error
        e.content_part_added(**POS, part={"type": "output_audio", "transcript": ""}),
        e.session_created({**session_to_wire(SessionConfig(), session_id="s", model="m"), "temperature": 0.8}),
        e.session_created(
            {k: v for k, v in session_to_wire(SessionConfig(), session_id="s", model="m").items() if k != "type"}
        ),
    ]
    for event in bad:
        with pytest.raises(SchemaMismatch):
            validate_server_event(json.dumps(event))


def test_session_wire_default_exact() -> None:
    assert session_to_wire(SessionConfig(), session_id="sess_1", model="step-audio") == {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_1",
        "model": "step-audio",
        "output_modalities": ["audio"],
        "instructions": (
            "You are a helpful voice assistant. Answer in one or two short spoken sentences. No lists or markdown."
        ),
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "joe", "speed": 1.0},
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": None,  # none set: the server's default reply length ("inf" is the longest it allows)
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
    }


def test_exact_audio_delta_and_error_events() -> None:
    e = _events()
    assert e.output_audio_delta(**POS, audio=b"\x00\x01\x02\x03") == {
        "type": "response.output_audio.delta",
        "event_id": "event_1",
        "response_id": "resp_1",
        "item_id": "item_2",
        "output_index": 0,
        "content_index": 0,
        "delta": "AAECAw==",
    }
    exc = RemoteProtocolError("Bad.", code="invalid_value", param="session.voice", event_id="client_7")
    assert e.error_from(exc) == {
        "type": "error",
        "event_id": "event_2",
        "error": {
            "type": "invalid_request_error",
            "code": "invalid_value",
            "message": "Bad.",
            "param": "session.voice",
            "event_id": "client_7",
        },
    }


def test_response_done_cancelled_exact() -> None:
    body = sev.response(
        "resp_9",
        status="cancelled",
        details=sev.status_details("cancelled", reason="client_cancelled"),
        output=[],
        voice="joe",
        output_format=AudioFormat.PCMU,
    )
    assert body == {
        "id": "resp_9",
        "object": "realtime.response",
        "status": "cancelled",
        "status_details": {"type": "cancelled", "reason": "client_cancelled"},
        "output": [],
        "conversation_id": None,
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "joe"}},
        "usage": None,
        "metadata": None,
    }
    assert sev.status_details("completed") is None
    assert sev.status_details("failed", error_message="x") == {
        "type": "failed",
        "error": {"type": "server_error", "code": None, "message": "x"},
    }


def test_usage_totals() -> None:
    assert sev.usage(input_text_tokens=10, output_text_tokens=5, input_audio_tokens=3, output_audio_tokens=40) == {
        "total_tokens": 58,
        "input_tokens": 13,
        "output_tokens": 45,
        "input_token_details": {"text_tokens": 10, "audio_tokens": 3, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 5, "audio_tokens": 40},
    }


def test_item_builders_exact() -> None:
    assert it.user_audio_item("item_1", transcript="hi") == {
        "id": "item_1",
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": "hi"}],
    }
    assert it.assistant_message_item("item_2", audio=True, text=None, status="in_progress")["content"] == []
    assert it.assistant_message_item("item_2", audio=False, text="ok")["content"] == [
        {"type": "output_text", "text": "ok"}
    ]
    assert it.function_call_item("item_3", call_id="call_1", name="f", arguments="{}") == {
        "id": "item_3",
        "object": "realtime.item",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_1",
        "name": "f",
        "arguments": "{}",
    }
    assert it.function_call_output_item("item_4", call_id="call_1", output="42") == {
        "id": "item_4",
        "object": "realtime.item",
        "type": "function_call_output",
        "status": "completed",
        "call_id": "call_1",
        "output": "42",
    }


def test_sequential_ids() -> None:
    ids = sev.SequentialIds("item_", start=7)
    assert [ids(), ids(), ids()] == ["item_7", "item_8", "item_9"]
