"""An OPTIONS ping to the bridge is answered as an INVITE would be (RFC 3261 11.2): 503 with Retry-After while its
agent server cannot be reached or its /healthz answers 503 (loading, full), 200 otherwise. A proxy that
probes its gateways with OPTIONS had seen 200 from a bridge whose every call got 503."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import socket

import pytest

from clients.sip.bridge import BridgeConfig, SipBridge
from clients.sip.message import Response, parse_message
from controller.server import ServerConfig
from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server
from tests.sip.test_ua import req


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _ping_until(server_url: str, status: int, asked: asyncio.Event | None = None,
                      api_key: str | None = None) -> Response:
    """Start a bridge for `server_url` and ping it (an out-of-dialog OPTIONS over UDP) until it answers `status`,
    for 20 s at most; its last answer. With `asked`, the first ping waits for the server to have been asked; with
    `api_key`, for the bridge to have checked the server (and its key) once."""
    port = _free_port(socket.SOCK_DGRAM)
    bridge = SipBridge(BridgeConfig(server_url=server_url, port=port, api_key=api_key), rng=random.Random(0))
    await bridge.start()
    if asked is not None:
        await asyncio.wait_for(asked.wait(), 20)
        await asyncio.sleep(0.5)  # for its answer to reach the UA core
    for _ in range(200 if api_key is not None else 0):
        if bridge._server_state is not None:
            break
        await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.1", 0))
        phone.setblocking(False)
        for n in itertools.count():  # each ping a transaction of its own, as a prober's are: one sent again is answered
            # as it was the first time (RFC 3261 17.2.2)
            await loop.sock_sendto(phone, req("OPTIONS", call_id="ping", branch=f"ping{n}"), ("127.0.0.1", port))
            answer = parse_message(await asyncio.wait_for(loop.sock_recv(phone, 65535), 10))
            assert isinstance(answer, Response)
            if answer.status == status or loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
    await bridge.close()
    return answer


async def _healthz_stub(answer: bytes, asked: asyncio.Event) -> asyncio.Server:
    """A stand-in agent server whose every HTTP request gets `answer`; `asked` is set at the first."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        asked.set()
        writer.write(answer)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def test_an_options_ping_gets_503_while_the_agent_server_cannot_be_reached() -> None:
    closed = _free_port(socket.SOCK_STREAM)  # nothing listens there
    answer = asyncio.run(_ping_until(f"ws://127.0.0.1:{closed}/v1/realtime", 503))
    assert answer.status == 503 and answer.headers.get("Retry-After") == "5"


@pytest.mark.parametrize(("healthz", "status", "retry_after"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, None),
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 200, None),  # a Realtime server without /healthz
    (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 30\r\nContent-Length: 0\r\n\r\n", 503, "30"),  # full
])
def test_an_options_ping_gets_what_the_agent_servers_healthz_says(healthz: bytes, status: int,
                                                                   retry_after: str | None) -> None:
    async def main() -> Response:
        asked = asyncio.Event()
        server = await _healthz_stub(healthz, asked)
        async with server:
            port = server.sockets[0].getsockname()[1]
            return await _ping_until(f"ws://127.0.0.1:{port}/v1/realtime", status, asked)

    answer = asyncio.run(main())
    assert answer.status == status and answer.headers.get("Retry-After") == retry_after


@pytest.mark.parametrize(("key", "status"), [("", 503), ("wrong", 503), ("right", 200)])
def test_an_agent_server_that_refuses_the_bridges_key_gets_options_503_and_a_warning(
        key: str | None, status: int, caplog: pytest.LogCaptureFixture) -> None:
    """A server run with --api-key and the bridge without its key ("": it sends none) or
    with another: /healthz said 200, so the bridge logged 'agent server ... available' and answered OPTIONS 200
    while it refused every call 503 (a proxy kept routing here)."""
    async def main() -> tuple[str, Response]:
        async with scripted_server(ScriptedPipeline(), server=ServerConfig(port=0, api_keys=("right",))) as app:
            url = f"ws://127.0.0.1:{app.server.port}/v1/realtime"
            return url, await _ping_until(url, status, api_key=key)

    with caplog.at_level(logging.INFO, logger="clients.sip.bridge"):
        url, answer = asyncio.run(main())
    assert answer.status == status
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("agent server")]
    assert said == [f"agent server {url} available"] if key == "right" else said == [
        f"agent server {url} refuses the bridge's API key: OPTIONS get 503, calls are refused; give the key with "
        "--api-key KEY or in env STEPAUDIO_RT_API_KEY"], said
