"""The client library streaming faster than the server reads keeps its connection: its keepalive pings do not wait
behind tens of seconds of its own audio in its socket."""

from __future__ import annotations

import asyncio

import numpy as np

from clients.realtime_client import RealtimeClient
from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server, speech
from tests.e2e.helpers import silence
from tests.ping_times import ping_round_trips


async def test_a_fast_stream_to_a_pacing_server_gets_its_pings_answered_within_seconds() -> None:
    """talk --fast against a server that reads input at the pace of its transcripts (1 s for each 1.2 s turn): the
    kernel grew this client's send buffer to 4 MB (45 s of audio) and its pings waited behind it, over 30 s, past
    websockets' 20 s keepalive timeout (1011, talk: 'connection lost'). The client now holds its send buffer to
    64 KB: its sends wait instead, and a ping (as the keepalive's) is answered in 2-4 s."""
    pipeline = ScriptedPipeline()
    pipeline.asr_seconds, pipeline.asr_lock = 1.0, asyncio.Lock()
    audio = np.tile(np.concatenate([speech(0.4), silence(0.8)]), 100)
    async with scripted_server(pipeline) as server:
        client = await RealtimeClient.connect(f"ws://127.0.0.1:{server.server.port}/v1/realtime", ping_interval=None)
        ws = client._ws  # the connection's own ping, as websockets' keepalive sends it
        assert ws is not None
        sending = asyncio.create_task(client.stream_audio(audio, 24000, realtime=False))
        try:
            rtts = await ping_round_trips(ws, 3)
        finally:
            ws.transport.abort()  # a close frame would wait behind the audio queued
            sending.cancel()
            await client.close()
    assert max(rtts) < 8.0, rtts
