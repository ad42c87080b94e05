"""The bridge stopping (SIGINT/SIGTERM) while a call still rings: its INVITE gets 503 with Retry-After like every
other 503 of ours (RFC 3261 21.5.4: without one it counts as a 500 and the caller's proxy tries no other bridge)."""

from __future__ import annotations

import asyncio
import random
import socket

from clients.sip.bridge import BridgeConfig, SipBridge
from clients.sip.message import Response, parse_message
from tests.sip.test_ua import SDP, req


class Wire:
    """Stands in for the bridge's SIP socket: keeps what it sends."""

    def __init__(self) -> None:
        self.sent: list[Response] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        assert isinstance(msg, Response)
        self.sent.append(msg)

    def close(self) -> None:
        pass


def test_a_call_still_ringing_when_the_bridge_stops_gets_503_with_retry_after() -> None:
    wire = Wire()

    async def main(port: int) -> None:
        bridge = SipBridge(BridgeConfig(server_url=f"ws://127.0.0.1:{port}/v1/realtime", port=5080,
                                        connect_timeout_s=30), rng=random.Random(0))
        bridge._transport = wire  # type: ignore[assignment]
        bridge._on_sip(req("INVITE", body=SDP), ("127.0.0.1", 5070))
        await asyncio.sleep(0.2)  # the call rings while its agent session is opening
        await bridge.close()

    with socket.socket() as stalled:  # accepts TCP, never answers the WebSocket handshake: the call stays unanswered
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(4)
        asyncio.run(main(stalled.getsockname()[1]))
    final = [r for r in wire.sent if r.status >= 200]
    assert [r.status for r in final] == [503], [r.status for r in wire.sent]
    assert final[0].headers.get("Retry-After") == "5"
