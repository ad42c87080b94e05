"""A full agent server (`serve --max-sessions`) refuses the bridge's session with HTTP 503 and Retry-After: the
caller's INVITE gets 503 with that Retry-After (RFC 3261 21.5.4), so a PBX or proxy in front of several bridges
tries another one, or this one later; without it a 503 counts as a 500."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from clients.realtime_client import RealtimeClient, ReconnectPolicy
from tests.conftest import ServerProcess
from tests.sip.peers import BridgeProcess, need, sipp_call
from tests.sip.sipp_scenario import expect, request, scenario, sdp

pytestmark = pytest.mark.slow


def test_a_full_agent_server_gets_the_caller_503_with_its_retry_after(tmp_path: Path) -> None:
    need("sipp")
    server = ServerProcess("--profile", "embedded", "--max-sessions", "1")
    holding = threading.Event()
    release = threading.Event()

    async def occupy() -> None:  # someone else's session (the browser page, say) takes the only place
        client = await RealtimeClient.connect(server.ws, reconnect=ReconnectPolicy(enabled=False))
        holding.set()
        await asyncio.to_thread(release.wait)
        await client.close()

    other = threading.Thread(target=asyncio.run, args=(occupy(),))
    other.start()
    try:
        assert holding.wait(30)
        bridge = BridgeProcess(server.ws, tmp_path)
        sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")),
            expect(503, match="^ *5 *$", header="Retry-After"),
            request("ACK", 1, in_dialog=True)), records=False)
    finally:
        release.set()
        other.join(30)
        server.stop()
    refused = [c for c in bridge.calls() if c["end_reason"].startswith("refused 503: agent server unreachable")]
    assert refused and "HTTP 503" in refused[0]["end_reason"], bridge.calls()
