"""turn_detection updates over the real server and wire (scripted pipeline): what a client sets is what runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.controller.scripted_pipeline import ScriptedPipeline, conversation, speech
from tests.e2e.helpers import silence
from tests.realtime_schema import validate_server_event


async def test_a_zero_vad_threshold_is_refused_by_name_and_the_session_keeps_its_settings() -> None:
    """At threshold 0 every sound is speech and no turn would end. The update is refused as the client's error, naming
    the field, and nothing of it applies: the next session.updated still shows the threshold that runs."""
    async with conversation(ScriptedPipeline()) as (_, conv):
        await conv.send({"type": "session.update", "event_id": "td0", "session": {"type": "realtime", "audio": {
            "input": {"turn_detection": {"type": "server_vad", "threshold": 0.0}}}}})
        error = await conv.wait_for("error")
        updated = await conv.update_session(instructions="Be brief.")
    assert error["error"]["code"] == "invalid_value" and error["error"]["event_id"] == "td0"
    assert error["error"]["param"] == "session.audio.input.turn_detection.threshold"
    assert updated["session"]["audio"]["input"]["turn_detection"]["threshold"] == 0.5


@pytest.mark.parametrize("threshold", [math.nan, 1.5, 10**400])
async def test_a_vad_threshold_that_is_no_number_in_range_is_refused_saying_what_it_must_be(threshold: float) -> None:
    """NaN (which Python's json reads) was refused as "nan is outside [-inf, inf]", which did not say what a threshold
    must be; now the words of the threshold's own rule, as for any other value outside (0, 1]."""
    async with conversation(ScriptedPipeline()) as (_, conv):
        await conv.send({"type": "session.update", "event_id": "td", "session": {"type": "realtime", "audio": {
            "input": {"turn_detection": {"type": "server_vad", "threshold": threshold}}}}})
        error = await conv.wait_for("error")
        updated = await conv.update_session(instructions="Be brief.")
    assert (error["error"]["code"], error["error"]["event_id"], error["error"]["param"]) == (
        "invalid_value", "td", "session.audio.input.turn_detection.threshold")
    assert "threshold must be above 0 and at most 1, got " in error["error"]["message"], error
    assert updated["session"]["audio"]["input"]["turn_detection"]["threshold"] == 0.5


@pytest.mark.parametrize("key", ["idle_timeout_ms", "silence_duration_ms", "prefix_padding_ms"])
async def test_a_turn_detection_time_past_int32_is_refused_by_name_and_the_session_keeps_its_settings(key: str) -> None:
    """The API's schema types these times int32. idle_timeout_ms 10**400 failed as an internal server_error ("int too
    large to convert to float") after the session had taken the update, which no session.updated showed. Past int32
    the update is refused as the client's error, naming the field, and nothing of it applies."""
    async with conversation(ScriptedPipeline()) as (_, conv):
        await conv.send({"type": "session.update", "event_id": "big", "session": {"type": "realtime", "audio": {
            "input": {"turn_detection": {"type": "server_vad", "threshold": 0.9, key: 10**400}}}}})
        error = await conv.wait_for("error", timeout=10)
        updated = await conv.update_session(instructions="Be brief.")
    assert error["error"]["code"] == "invalid_value" and error["error"]["event_id"] == "big", error
    assert error["error"]["param"] == f"session.audio.input.turn_detection.{key}"
    assert updated["session"]["audio"]["input"]["turn_detection"]["threshold"] == 0.5


async def test_speech_after_turn_detection_is_turned_off_mid_turn_and_on_again_is_announced_as_a_turn() -> None:
    """A client switching to push-to-talk while the user speaks (turn_detection null), then back to hands-free: the
    next speech the VAD hears gets its input_audio_buffer.speech_started before its speech_stopped and commit. It had
    none (the session still counted the abandoned turn as open), so the client saw a turn end that never started.
    The speech under way when the VAD went off gets its speech_stopped there (it had none: its speech_started stayed
    unanswered), after the session.updated that turned it off."""
    async with conversation(ScriptedPipeline()) as (_, conv):
        await conv.stream(speech(0.6), pace=0)
        started = await conv.wait_for("input_audio_buffer.speech_started")
        off = await conv.update_session(audio={"input": {"turn_detection": None}})
        stopped = await conv.wait_for("input_audio_buffer.speech_stopped", timeout=5)
        assert conv.events.index(off) < conv.events.index(stopped)
        assert stopped["item_id"] == started["item_id"] and 550 <= stopped["audio_end_ms"] <= 600  # 0.6 s heard
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad"}}})
        n = len(conv.events)
        await conv.stream(np.concatenate([silence(0.5), speech(0.6), silence(1.0)]), pace=0)
        await conv.wait_for("input_audio_buffer.committed", after=n, timeout=10)
    after = [e["type"] for e in conv.events[n:] if e["type"].startswith("input_audio_buffer.")]
    assert after[:3] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                         "input_audio_buffer.committed"], after
    assert not conv.of_type("error")
    for raw in conv.raw:
        validate_server_event(raw)
