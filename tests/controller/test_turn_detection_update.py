"""turn_detection updates over the real server and wire (scripted pipeline): what a client sets is what runs."""

from __future__ import annotations

from tests.controller.scripted_pipeline import ScriptedPipeline, conversation


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
