"""RealtimeClient's automatic barge-in truncation against a scripted in-test WebSocket server (loopback only)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from websockets.asyncio.server import ServerConnection

from clients.realtime_client import RealtimeClient
from tests.clients.test_reconnect import FAST, Scripted, _server


@pytest.mark.parametrize("interrupts", [True, False])
async def test_speech_over_a_playing_reply_truncates_it_only_if_the_server_interrupts(interrupts: bool) -> None:
    """With interrupt_response off the server plays the reply on over the user (and sends speech_started anyway, as
    the Realtime API documents): a truncate would cut an item the listener goes on hearing."""
    truncates: list[dict[str, object]] = []

    async def script(n: int, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.created", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": {"type": "server_vad", "interrupt_response": interrupts}}}}}))
        second = base64.b64encode(b"\x00\x00" * 24000).decode()
        await ws.send(json.dumps({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "a1",
                                  "output_index": 0, "content_index": 0, "delta": second}))
        await asyncio.sleep(0.2)  # 200 ms of the reply played
        await ws.send(json.dumps({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0,
                                  "item_id": "u1"}))
        try:
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                if msg["type"] == "conversation.item.truncate":
                    truncates.append(msg)
        except TimeoutError:
            pass

    s = Scripted(script)
    async for url in _server(s):
        async with await RealtimeClient.connect(url, reconnect=FAST) as client:
            types = [(await client.recv(timeout=5)).type for _ in range(3)]
            assert types == ["session.created", "response.output_audio.delta", "input_audio_buffer.speech_started"]
            await asyncio.sleep(0.7)
    if interrupts:
        assert [(t["item_id"], 150 <= t["audio_end_ms"] <= 450) for t in truncates] == [("a1", True)], truncates
    else:
        assert truncates == []
