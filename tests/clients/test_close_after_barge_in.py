"""RealtimeClient.close() right after an automatic barge-in truncation (loopback only)."""

from __future__ import annotations

import asyncio
import base64
import json

from websockets.asyncio.server import ServerConnection

from clients.realtime_client import RealtimeClient
from tests.clients.test_reconnect import FAST, Scripted, _server


async def test_close_right_after_a_barge_in_leaves_no_task_of_the_client_pending() -> None:
    """The truncate task started on barge-in was not kept: close() returned with it pending, and asyncio later
    warned "Task was destroyed but it is pending"."""
    async def script(n: int, ws: ServerConnection) -> None:
        second = base64.b64encode(b"\x00\x00" * 24000).decode()
        await ws.send(json.dumps({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "a1",
                                  "output_index": 0, "content_index": 0, "delta": second}))
        await asyncio.sleep(0.1)
        await ws.send(json.dumps({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0,
                                  "item_id": "u1"}))
        await ws.wait_closed()

    before = asyncio.all_tasks()
    async for url in _server(Scripted(script)):
        client = await RealtimeClient.connect(url, reconnect=FAST)
        assert [(await client.recv(timeout=5)).type for _ in range(3)] == [
            "response.output_audio.delta", "input_audio_buffer.speech_started", "client.truncated"]
        await client.close()
        left = [t for t in asyncio.all_tasks() - before if not t.done() and "truncate" in repr(t.get_coro())]
        assert left == []
