"""Clients that misbehave at the transport: one that stops reading must not keep its session (and place) for ever."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import replace

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from controller.server import ServerConfig
from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server
from tests.e2e.helpers import Conversation, open_conversation


async def _client_that_stops_reading(port: int) -> ClientConnection:
    """Connected and past session.created, then reading nothing more: its socket's receive buffer fills, then the
    server's send buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    ws = await connect(f"ws://127.0.0.1:{port}/v1/realtime", sock=sock, max_size=None)
    await ws.recv()
    ws.transport.pause_reading()
    return ws


async def _flood_with_retrievals(ws: ClientConnection) -> None:
    """Retrievals of a 4 kB item, each answered with the item, until the server stops reading (its output is stuck) or
    drops the connection."""
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "word " * 800}]}
    with contextlib.suppress(ConnectionClosed):
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {"id": "big", **item}}))
        while True:
            try:
                async with asyncio.timeout(5):
                    await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": "big"}))
            except TimeoutError:
                return


async def _admitted(url: str, within_s: float) -> Conversation:
    async with asyncio.timeout(within_s):
        while True:
            with contextlib.suppress(InvalidStatus):
                return await open_conversation(url)
            await asyncio.sleep(0.5)


async def test_a_client_that_stopped_reading_is_dropped_and_its_place_freed() -> None:
    """--max-sessions 1: a client that stopped reading held its session and its place for good (seen for minutes in a
    soak), and every other client got 503. The keepalive could not end it: its ping waits behind the same full send
    buffer, so the pong timeout never starts. A send stuck for send_stall_s now drops the connection."""
    async with scripted_server(ScriptedPipeline(), server=ServerConfig(port=0, max_sessions=1)) as server:
        server.defaults = replace(server.defaults, send_stall_s=2.0)
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        stalled = await _client_that_stops_reading(server.server.port)
        try:
            await _flood_with_retrievals(stalled)
            conv = await _admitted(url, within_s=60)
            try:
                await conv.send({"type": "input_audio_buffer.clear"})
                await conv.wait_for("input_audio_buffer.cleared", timeout=10)
            finally:
                await conv.close()
        finally:
            stalled.transport.abort()
