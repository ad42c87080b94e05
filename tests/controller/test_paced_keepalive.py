"""A client the server reads slowly (input pacing) still gets its keepalive pings answered in time: the server's
socket does not let it queue tens of seconds of audio ahead of them."""

from __future__ import annotations

import asyncio
import base64
import json
import socket

import numpy as np
from websockets.asyncio.client import connect

from controller.server import ServerConfig
from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server, speech
from tests.e2e.helpers import silence
from tests.ping_times import ping_round_trips


async def test_a_paced_fast_sender_gets_its_ping_answered_within_seconds() -> None:
    """A sender 15x faster than real time (here: as fast as it can), read by the server at the pace of its transcripts
    (1 s for each 1.2 s turn). Its ping waits behind everything it sent before: with the kernel's own receive buffer
    (grown to 3 MB) that was 8-11 s within 8 s of sending, growing, and websockets' keepalive (20 s) closed the
    connection with 1011. The client here holds its own send buffer to 64 KB (its kernel's grew to 4 MB on loopback,
    which only a client can limit), so what waits ahead of its ping is what the server's socket takes: 2-3 s now."""
    pipeline = ScriptedPipeline()
    pipeline.asr_seconds, pipeline.asr_lock = 1.0, asyncio.Lock()
    pcm = (np.tile(np.concatenate([speech(0.4), silence(0.8)]), 100) * 32767).astype("<i2").tobytes()
    async with scripted_server(pipeline, server=ServerConfig(port=0)) as server:
        async with connect(f"ws://127.0.0.1:{server.server.port}/v1/realtime", ping_interval=None) as ws:
            ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)

            async def send() -> None:
                for i in range(0, len(pcm), 960):  # 20 ms appends
                    chunk = base64.b64encode(pcm[i:i + 960]).decode()
                    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))

            async def read() -> None:
                async for _ in ws:
                    pass

            tasks = [asyncio.create_task(send()), asyncio.create_task(read())]
            try:
                rtts = await ping_round_trips(ws, 4)
            finally:
                ws.transport.abort()  # a close frame would wait behind the audio queued
                for task in tasks:
                    task.cancel()
    assert max(rtts) < 6.0, rtts
