"""One session's trouble never touches another: a client that stops reading, one that sends garbage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect

from tests.conftest import ServerProcess
from tests.e2e.helpers import open_conversation

pytestmark = pytest.mark.slow


async def test_stalled_and_misbehaving_clients_do_not_stall_a_healthy_session(embedded_server) -> None:
    # A client that asks for a long spoken reply and then never reads: with max_queue=1 its socket
    # buffers fill and the server's writes to it block.
    stalled = await connect(embedded_server.ws, max_queue=1, max_size=32 * 1024 * 1024)
    await stalled.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "Tell me a very long story about the sea."}]}}))
    await stalled.send(json.dumps({"type": "response.create"}))
    # A client that sends garbage and vanishes.
    rude = await connect(embedded_server.ws)
    for raw in ("{", "[]", json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"})):
        await rude.send(raw)
    rude.transport.abort()

    healthy = await open_conversation(embedded_server.ws)
    try:
        await healthy.send({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
        await healthy.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hi."}]}})
        await asyncio.sleep(1.0)  # let the stalled session start speaking first
        await healthy.send({"type": "response.create"})
        done = await healthy.wait_for("response.done", timeout=120)
        assert done["response"]["status"] == "completed"
        assert healthy.of_type("response.output_audio.delta")
    finally:
        await healthy.close()
        stalled.transport.abort()
    # Everything is freed once they are gone.
    for _ in range(80):
        m = embedded_server.metrics()
        if m["stepaudio_sessions_live"] == 0 and m["stepaudio_session_tasks"] == 0:
            break
        await asyncio.sleep(0.25)
    assert m["stepaudio_sessions_live"] == 0 and m["stepaudio_session_tasks"] == 0


@pytest.fixture(scope="module")
def two_slot_server() -> Iterator[ServerProcess]:
    server = ServerProcess("--profile", "embedded", "--lm-slots", "2")
    yield server
    server.stop()


async def test_with_two_lm_slots_a_short_reply_is_not_kept_behind_a_long_one(two_slot_server) -> None:
    # Text-only replies end when their text is written, so the order of the two response.done events says whether
    # the second reply was generated beside the first or only after it (as with the default single slot).
    long_ask, short_ask = await asyncio.gather(open_conversation(two_slot_server.ws),
                                               open_conversation(two_slot_server.ws))
    try:
        text_only = {"type": "response.create", "response": {"output_modalities": ["text"]}}
        for conv, text in ((long_ask, "Count from 1 to 300, one number per line."), (short_ask, "Say hi.")):
            await conv.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
        await long_ask.send(text_only)
        await long_ask.wait_for("response.output_text.delta", timeout=120)
        await short_ask.send(text_only)
        short_done = await short_ask.wait_for("response.done", timeout=120)
        assert short_done["response"]["status"] == "completed"
        assert not long_ask.of_type("response.done"), "the short reply waited for the long one to be written"
        await long_ask.send({"type": "response.cancel"})
        await long_ask.wait_for("response.done", timeout=60)
    finally:
        await asyncio.gather(long_ask.close(), short_ask.close())
