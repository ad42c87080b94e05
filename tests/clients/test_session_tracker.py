"""SessionTracker, the client's sans-I/O view of its server session, on a fake clock: exact truncations and events."""

from __future__ import annotations

import base64
import json

import pytest

from clients import events as ev
from clients.playback import Truncation
from clients.session_tracker import SessionTracker


def _event(data: dict[str, object]) -> ev.ServerEvent:
    return ev.parse_server_event(json.dumps(data))


def _created(interrupts: bool) -> ev.ServerEvent:
    return _event({"type": "session.created", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": {"type": "server_vad", "interrupt_response": interrupts}}}}})


ONE_SECOND = _event({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "a1", "output_index": 0,
                     "content_index": 0, "delta": base64.b64encode(b"\x00\x00" * 24000).decode()})
SPEECH = _event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "u1"})


@pytest.mark.parametrize(("interrupts", "auto_truncate"), [(True, True), (False, True), (True, False)])
def test_speech_over_a_playing_reply_asks_for_its_truncation_only_when_it_is_cut(interrupts: bool,
                                                                                 auto_truncate: bool) -> None:
    """1 s of reply audio arrives at t=10.0, the user speaks at t=10.25: the reply is cut at 250 ms, unless the
    server lets it play on (interrupt_response false) or the app truncates itself (auto_truncate off)."""
    tracker = SessionTracker()
    assert tracker.on_event(_created(interrupts), 9.0, auto_truncate=auto_truncate) == []
    assert tracker.on_event(ONE_SECOND, 10.0, auto_truncate=auto_truncate) == []
    cut = tracker.on_event(SPEECH, 10.25, auto_truncate=auto_truncate)
    assert cut == ([Truncation("a1", 0, 250)] if interrupts and auto_truncate else [])
    assert tracker.playback.is_playing(10.5) is not bool(cut)


def test_replies_under_way_when_the_connection_drops_are_reported_lost_once() -> None:
    tracker = SessionTracker()
    for event in ({"type": "response.created", "response": {"id": "r1"}},
                  {"type": "response.created", "response": {"id": "r2"}},
                  {"type": "response.done", "response": {"id": "r1"}}):
        tracker.on_event(_event(event), 1.0, auto_truncate=True)
    lost = tracker.lost_responses()
    assert [(e.type, e.data) for e in lost] == [
        (ev.CLIENT_RESPONSE_LOST, {"type": ev.CLIENT_RESPONSE_LOST, "response_id": "r2"})]
    assert tracker.lost_responses() == []


def test_a_refused_session_update_is_not_sent_again() -> None:
    tracker = SessionTracker()
    tracker.session.update({"instructions": "Be brief."})
    bad = tracker.session.update({"voice": "nobody"})
    tracker.on_event(_event({"type": "error", "error": {"type": "invalid_request_error", "code": "invalid_value",
                                                        "message": "no such voice", "event_id": bad["event_id"]}}),
                     1.0, auto_truncate=True)
    assert tracker.session.merged() == {"instructions": "Be brief."}
