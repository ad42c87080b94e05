"""A SipBridge on real UDP sockets with an in-test agent server that records the audio it is sent: what tests of
the caller's media stand up in place of a real agent server (no models), with plain sockets as the caller."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from websockets.asyncio.server import ServerConnection, serve

from clients.sip.bridge import BridgeConfig, CallRecord, SipBridge
from tests.sip.media import free_udp_port

T = TypeVar("T")


class Agent:
    """An agent server that heard `audio` (the G.711 bytes of every input_audio_buffer.append)."""

    def __init__(self) -> None:
        self.audio = bytearray()

    async def handler(self, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {"id": "sess_1"}}))
        async for message in ws:
            event = json.loads(message)
            if event.get("type") == "input_audio_buffer.append":
                self.audio += base64.b64decode(event["audio"])


@asynccontextmanager
async def bridge_with_agent(agent: Agent, records: list[CallRecord]) -> AsyncIterator[SipBridge]:
    async with serve(agent.handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/realtime"
        bridge = SipBridge(BridgeConfig(server_url=url, port=free_udp_port()), on_call_end=records.append)
        await bridge.start()
        try:
            yield bridge
        finally:
            await bridge.close()


def run_call(agent: Agent, call: Callable[[int], T]) -> tuple[T, list[CallRecord]]:
    """`call(the bridge's SIP port)`, a caller on plain sockets, run in a thread against a bridge with `agent`: what
    it returned, and the call records once its call ended (its BYE), or after 10 s."""
    records: list[CallRecord] = []

    async def main() -> T:
        async with bridge_with_agent(agent, records) as bridge:
            result = await asyncio.to_thread(call, bridge.config.port)
            for _ in range(500):
                if records:
                    break
                await asyncio.sleep(0.02)
            return result

    return asyncio.run(main()), records


def udp(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


def heard_by(sock: socket.socket) -> list[float]:
    """When each packet waiting at `sock` was read (now)."""
    sock.setblocking(False)
    times = []
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return times
        times.append(time.monotonic())
