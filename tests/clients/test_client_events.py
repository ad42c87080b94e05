"""Server event parsing and client event building (OpenAI Realtime GA shapes)."""

from __future__ import annotations

import base64
import json

import pytest

from clients import events as ev


def test_audio_delta_accessors() -> None:
    pcm = b"\x01\x00\xff\x7f"
    e = ev.parse_server_event(json.dumps({
        "type": "response.output_audio.delta", "event_id": "e1", "response_id": "r1", "item_id": "i1",
        "output_index": 0, "content_index": 2, "delta": base64.b64encode(pcm).decode()}))
    assert (e.type, e.event_id, e.response_id, e.item_id, e.content_index) == (
        "response.output_audio.delta", "e1", "r1", "i1", 2)
    assert e.audio == pcm
    assert not e.is_error and e.error is None


def test_beta_names_map_to_ga() -> None:
    e = ev.parse_server_event(b'{"type": "response.audio_transcript.delta", "delta": "hi"}')
    assert e.type == "response.output_audio_transcript.delta"
    assert e.delta == "hi"
    assert e.data["type"] == "response.audio_transcript.delta"  # raw data untouched


def test_nested_ids() -> None:
    done = ev.parse_server_event('{"type": "response.done", "response": {"id": "r9", "status": "cancelled"}}')
    assert done.response_id == "r9" and done.response_status == "cancelled"
    added = ev.parse_server_event('{"type": "conversation.item.added", "item": {"id": "it"}}')
    assert added.item_id == "it"


def test_error_event() -> None:
    e = ev.parse_server_event(json.dumps({"type": "error", "event_id": "x", "error": {
        "type": "invalid_request_error", "code": "bad", "message": "nope", "param": None, "event_id": "c1"}}))
    assert e.is_error
    assert e.error == ev.ErrorInfo("invalid_request_error", "nope", "bad", None, "c1")
    assert str(e.error) == "invalid_request_error [bad]: nope"


def test_unknown_type_passes_through() -> None:
    e = ev.parse_server_event('{"type": "x.future.event", "n": true, "audio_end_ms": true}')
    assert e.type == "x.future.event" and e.get("n") is True
    assert e.audio_end_ms is None  # a bool is not a count
    assert e.audio == b"" and e.delta == "" and e.transcript is None


@pytest.mark.parametrize("raw", ["not json", "[1]", "{}", '{"type": 3}', '{"type": ""}', b"\xff"])
def test_bad_frames_raise(raw: str | bytes) -> None:
    with pytest.raises(ev.ServerEventError):
        ev.parse_server_event(raw)


def test_client_event_builders() -> None:
    assert ev.session_update_event({"instructions": "x"}) == {
        "type": "session.update", "session": {"instructions": "x", "type": "realtime"}}
    assert ev.append_event(b"\x00\x01") == {"type": "input_audio_buffer.append", "audio": "AAE="}
    assert ev.commit_event() == {"type": "input_audio_buffer.commit"}
    assert ev.create_response_event() == {"type": "response.create"}
    assert ev.create_response_event({"instructions": "y"}) == {"type": "response.create",
                                                               "response": {"instructions": "y"}}
    assert ev.cancel_response_event() == {"type": "response.cancel"}
    assert ev.cancel_response_event("r1") == {"type": "response.cancel", "response_id": "r1"}
    assert ev.truncate_event("i1", 1234) == {"type": "conversation.item.truncate", "item_id": "i1",
                                             "content_index": 0, "audio_end_ms": 1234}
    with pytest.raises(ValueError):
        ev.truncate_event("i1", -1)


def test_client_events_validate_with_openai_types() -> None:
    """The events we build parse with the openai package's own client-event models."""
    types = pytest.importorskip("openai.types.realtime")
    from pydantic import TypeAdapter

    adapter = TypeAdapter(types.RealtimeClientEvent)
    for e in (ev.session_update_event({"instructions": "x"}), ev.append_event(b"\x00\x00"), ev.commit_event(),
              ev.create_response_event(), ev.cancel_response_event("r"), ev.truncate_event("i", 5),
              ev.clear_event()):
        assert adapter.validate_python(e).type == e["type"]


def test_a_refused_session_update_without_event_id_is_not_resent() -> None:
    """A server error naming only the refused field (no event_id) left that field in what a reconnect re-sends,
    so the new server refused the whole update and the instructions set before were lost too."""
    fields = ev.SessionFields()
    fields.update({"instructions": "be brief"})
    fields.update({"output_modalities": ["video"]})
    fields.refused(ev.ErrorInfo("invalid_request_error", "no video", "invalid_value", "session.output_modalities"))
    assert fields.merged() == {"instructions": "be brief"}


def test_an_error_about_no_session_field_forgets_no_session_update() -> None:
    fields = ev.SessionFields()
    fields.update({"instructions": "be brief"})
    fields.refused(ev.ErrorInfo("invalid_request_error", "no such item", "invalid_value", "item_id"))
    fields.refused(ev.ErrorInfo("server_error", "busy"))
    assert fields.merged() == {"instructions": "be brief"}


def test_a_refused_replay_drops_only_the_field_it_names_and_leaves_the_callers_objects_alone() -> None:
    """A new server session refuses the re-sent fields whole, for one of them: that one (a list for one of its
    elements) is dropped from every update, the rest is sent again; an error naming no field drops nothing."""
    fields = ev.SessionFields()
    audio = {"output": {"voice": "Tingting", "speed": 1.2}}
    fields.update({"instructions": "be brief", "audio": audio})
    fields.update({"tools": [{"type": "mcp"}], "audio": {"output": {"voice": "Tingting"}}})
    assert fields.replay() == {**ev.session_update_event(fields.merged() or {}), "event_id": ev.REPLAY_EVENT_ID}

    def refused(param: str | None) -> bool:
        return fields.refused(ev.ErrorInfo("invalid_request_error", "no", "invalid_value", param, ev.REPLAY_EVENT_ID))

    assert refused("session.audio.output.voice") and refused("session.tools[0].type")
    assert not refused(None) and not refused("session.audio.output.voice")
    assert fields.merged() == {"instructions": "be brief", "audio": {"output": {"speed": 1.2}}}
    assert audio == {"output": {"voice": "Tingting", "speed": 1.2}}
