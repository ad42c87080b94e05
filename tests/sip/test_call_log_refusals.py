"""A call refused with 503 because the agent server cannot be reached says why in the call log and the bridge's
log: refused connection, or no answer within the connect timeout (the log line had been empty for a timeout and
the call log said only "rejected")."""

from __future__ import annotations

import asyncio
import logging
import random
import socket

import pytest

from clients.sip.bridge import BridgeConfig, CallRecord, SipBridge
from controller.server import ServerConfig
from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server
from tests.sip.test_ua import SDP, req


async def _refused_call_in_loop(server_url: str, api_key: str | None = None) -> list[CallRecord]:
    records: list[CallRecord] = []
    bridge = SipBridge(BridgeConfig(server_url=server_url, port=5080, connect_timeout_s=0.3, api_key=api_key),
                       on_call_end=records.append, rng=random.Random(0))  # no socket: pump() sends nothing
    bridge._on_sip(req("INVITE", body=SDP), ("127.0.0.1", 5070))
    for _ in range(100):
        if records:
            break
        await asyncio.sleep(0.02)
    await bridge.close()
    return records


def _refused_call(server_url: str, caplog: pytest.LogCaptureFixture) -> CallRecord:
    with caplog.at_level(logging.WARNING, logger="clients.sip.agent_call"):
        records = asyncio.run(_refused_call_in_loop(server_url))
    assert len(records) == 1
    return records[0]


def test_a_refused_connection_is_named(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    rec = _refused_call(f"ws://127.0.0.1:{port}/v1/realtime", caplog)
    assert rec.end_reason is not None and rec.end_reason.startswith("refused 503: agent server unreachable: ")
    assert "Connect call failed" in rec.end_reason or "refused" in rec.end_reason.lower()


def test_a_server_that_never_answers_is_named(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as stalled:  # accepts TCP, never answers the WebSocket handshake
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(4)
        rec = _refused_call(f"ws://127.0.0.1:{stalled.getsockname()[1]}/v1/realtime", caplog)
    assert rec.end_reason == "refused 503: agent server unreachable: no answer within 0.3 s"
    assert any(r.getMessage().endswith("no answer within 0.3 s") for r in caplog.records), caplog.text


@pytest.mark.parametrize("key", [None, "wrong"])
def test_a_server_that_wants_another_key_is_not_called_unreachable(caplog: pytest.LogCaptureFixture,
                                                                     key: str | None) -> None:
    """An agent server run with --api-key, the bridge without the key (or with another): each call was refused
    'agent server unreachable: server rejected WebSocket connection: HTTP 401: invalid or missing API key', as if
    the server were down, and nothing said how to give the bridge its key."""
    async def main() -> tuple[str, list[CallRecord]]:
        async with scripted_server(ScriptedPipeline(), server=ServerConfig(port=0, api_keys=("right",))) as server:
            url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
            return url, await _refused_call_in_loop(url, key)

    with caplog.at_level(logging.WARNING, logger="clients.sip.agent_call"):
        url, [rec] = asyncio.run(main())
    said = "needs an API key" if key is None else "refused the API key"
    assert rec.end_reason == f"refused 503: the server at {url} {said} (HTTP 401: invalid or missing API key): " + (
        "give it with --api-key KEY or in env STEPAUDIO_RT_API_KEY" if key is None else
        "check the key given with --api-key or in env STEPAUDIO_RT_API_KEY against the server's --api-key (or its "
        "env STEPAUDIO_RT_API_KEYS)")
    assert any(r.getMessage().endswith(rec.end_reason.removeprefix("refused 503: ")) for r in caplog.records)


def test_an_invite_refused_before_it_became_a_call_has_its_line_too() -> None:
    """Full (503), no usable offer (488), a required extension (420): the call log is where calls are counted, so
    refused INVITEs are in it too, with the status and why (they were only in the bridge's log)."""
    records: list[CallRecord] = []

    async def main() -> None:
        bridge = SipBridge(BridgeConfig(server_url="ws://127.0.0.1:9/v1/realtime", port=5080),
                           on_call_end=records.append, rng=random.Random(0))
        g729 = SDP.replace(b"RTP/AVP 0 101", b"RTP/AVP 18")
        bridge._on_sip(req("INVITE", body=g729, call_id="g729-only"), ("127.0.0.1", 5070))
        await bridge.close()

    asyncio.run(main())
    [rec] = records
    assert (rec.sip_call_id, rec.caller, rec.call) == ("g729-only", "sip:caller@127.0.0.1", "")
    assert rec.end_reason == "refused 488: no PCMU/PCMA audio stream in the offer"
    assert rec.ended == rec.started
