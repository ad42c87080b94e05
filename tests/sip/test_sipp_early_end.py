"""A caller that gives up before the bridge answers (sipp against the bridge CLI).

The bridge connects the agent session before it answers; here the agent server accepts TCP but never completes
the WebSocket handshake (a stalled server), so the call rings until the caller ends it.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.sip.media import wait_for
from tests.sip.peers import BridgeProcess, need, run_sipp
from tests.sip.sipp_scenario import expect, request, scenario, sdp

pytestmark = pytest.mark.slow


def test_a_caller_ending_the_early_dialog_by_bye_or_cancel_gets_487(tmp_path: Path) -> None:
    """RFC 3261 15 and 15.1.2: a caller may end an early dialog (our 180's To tag) with BYE: 200 OK to it and 487
    Request Terminated to its INVITE (the bridge had answered 481, leaving the INVITE pending until the answer).
    CANCEL (9.2) gives 200 OK and 487 too. Neither call is answered afterwards; the call log says how each ended."""
    need("sipp")
    stalled = socket.create_server(("127.0.0.1", 0))  # the kernel accepts connections; nothing answers them
    bridge = BridgeProcess(f"ws://127.0.0.1:{stalled.getsockname()[1]}/v1/realtime", tmp_path)
    same_branch = "branch=z9hG4bK-early-[call_number]"  # CANCEL names its INVITE's transaction (9.1)
    try:
        by_bye = run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(180, optional=(100,)),
            request("BYE", 2, in_dialog=True), expect(200, 487, optional=()),
            request("ACK", 1, in_dialog=True)), bridge.port, tmp_path)
        by_cancel = run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")).replace("branch=[branch]", same_branch),
            expect(180, optional=(100,)),
            request("CANCEL", 1, in_dialog=False).replace("branch=[branch]", same_branch),
            expect(200, 487, optional=()),
            request("ACK", 1, in_dialog=True).replace("branch=[branch]", same_branch)), bridge.port, tmp_path)
        calls = wait_for(lambda: len(bridge.calls()) == 2 and bridge.calls(), 20)  # after the 10 s connect timeout
    finally:
        bridge.stop()
        stalled.close()
    for code, errors in (by_bye, by_cancel):
        assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in calls] == ["remote hangup", "cancelled"], calls
    assert "answered" not in bridge.log()
