"""Bad input gets a specific error event and the session goes on; a vanished client leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.e2e.helpers import open_conversation
from tests.realtime_schema import validate_server_event

pytestmark = pytest.mark.slow


async def _error_after(conv, n: int) -> dict:
    return (await conv.wait_for("error", after=n, timeout=15))["error"]


async def test_each_bad_input_gets_its_error_and_a_turn_still_works(embedded_server) -> None:
    conv = await open_conversation(embedded_server.ws)
    try:
        await conv.send({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
        await conv.wait_for("session.updated")
        cases = [
            ("{not json", "invalid_json", None),
            (json.dumps({"type": "no.such.event", "event_id": "ev_x"}), "unknown_event_type", "ev_x"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "@@not base64@@"}), "invalid_base64", None),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (20 * 1024 * 1024)}),
             "message_too_large", None),
            (json.dumps({"type": "input_audio_buffer.commit", "event_id": "ev_c"}),
             "input_audio_buffer_commit_empty", "ev_c"),
            (json.dumps({"type": "response.cancel", "event_id": "ev_k"}), "response_cancel_not_active", "ev_k"),
            (json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
                "input": {"format": {"type": "audio/ogg"}}}}}), "invalid_value", None),
        ]
        for raw, code, event_id in cases:
            n = len(conv.events)
            await conv.ws.send(raw)
            err = await _error_after(conv, n)
            assert err["code"] == code, (raw[:80], err)
            if event_id is not None:
                assert err["event_id"] == event_id
        assert conv.of_type("error")[-1]["error"]["param"] is not None  # the bad format names its field

        # The same session still completes a normal turn.
        await conv.ask("Say hello.")
        done = await conv.wait_for("response.done", timeout=120)
        assert done["response"]["status"] == "completed"
        assert conv.of_type("response.output_audio.delta")
    finally:
        await conv.close()
    for raw in conv.raw:
        validate_server_event(raw)


async def test_disconnect_mid_reply_frees_the_session(embedded_server) -> None:
    def gauges() -> tuple[float, float, float]:
        m = embedded_server.metrics()
        return (m["stepaudio_sessions_live"], m["stepaudio_session_tasks"], m["stepaudio_buffered_audio_seconds"])

    conv = await open_conversation(embedded_server.ws)
    await conv.ask("Tell me a long story about the sea.")
    await conv.wait_for("response.output_audio.delta", timeout=60)
    assert gauges()[0] >= 1
    conv.ws.transport.abort()  # vanish without a close frame
    await conv.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if gauges() == (0.0, 0.0, 0.0):
            break
        await asyncio.sleep(0.25)
    assert gauges() == (0.0, 0.0, 0.0)
