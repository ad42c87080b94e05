"""The voice is fixed once assistant audio was sent (as the Realtime API: error code cannot_update_voice)."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import open_conversation
from tests.realtime_schema import validate_server_event

pytestmark = pytest.mark.slow


async def test_voice_changes_until_the_first_assistant_audio_then_is_refused(embedded_server) -> None:
    conv = await open_conversation(embedded_server.ws)
    try:
        # A voice change before any audio: accepted.
        first = await conv.update_session(temperature=0.0, audio={"input": {"turn_detection": None},
                                                                  "output": {"voice": "alloy"}})
        await conv.ask("Say hello.")
        done = await conv.wait_for("response.done", timeout=120)
        assert done["response"]["status"] == "completed" and conv.of_type("response.output_audio.delta")
        n = len(conv.events)
        await conv.send({"type": "session.update", "event_id": "evt_voice", "session": {
            "type": "realtime", "instructions": "Be brief.", "audio": {"output": {"voice": "joe"}}}})
        refused = await conv.wait_for("error", after=n)
        # The same voice again is no change: the rest of that update applies.
        await conv.send({"type": "session.update", "session": {
            "type": "realtime", "instructions": "Be brief.", "audio": {"output": {"voice": "alloy"}}}})
        later = await conv.wait_for("session.updated", after=n)
    finally:
        await conv.close()
    assert first["session"]["audio"]["output"]["voice"] == "alloy"
    assert refused["error"]["code"] == "cannot_update_voice"
    assert refused["error"]["event_id"] == "evt_voice"
    assert refused["error"]["param"] == "session.audio.output.voice"
    # Nothing of the refused update was applied before the accepted one.
    assert [e["type"] for e in conv.events[n:]].count("session.updated") == 1
    assert later["session"]["audio"]["output"]["voice"] == "alloy" and later["session"]["instructions"] == "Be brief."
    for raw in conv.raw:
        validate_server_event(raw)
