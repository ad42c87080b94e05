"""The server while its models load: what a probe, a load balancer and a client are told."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from controller.metrics import Metrics
from controller.server import RealtimeServer, ServerConfig


async def _never(*_: object) -> None:
    raise AssertionError("no session is handed over while loading")


async def test_while_loading_healthz_and_the_handshake_are_503_with_when_to_come_back() -> None:
    """A 503 without Retry-After says nothing of when to try again: a load balancer or a client retrying at once
    hammered a server that needs a minute to load (a full server's 503 had it already)."""
    server = RealtimeServer(ServerConfig(port=0, retry_after_s=7), Metrics(), _never)
    await server.start()
    try:
        def probe() -> tuple[int, str | None]:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10)
            except urllib.error.HTTPError as answer:
                return answer.code, answer.headers.get("Retry-After")
            raise AssertionError("/healthz answered 200 while loading")

        assert await asyncio.to_thread(probe) == (503, "7")
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{server.port}/v1/realtime"):
                pass
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers.get("Retry-After") == "7"
    finally:
        await server.close()
