"""Each request is its own server transaction (RFC 3261 17.2.3): a retransmission gets its transaction's answer
again, whatever the call did since. sipp callers against the bridge CLI; the agent server is a WebSocket server
that takes the session and says nothing (the call only has to be answered)."""

from __future__ import annotations

from pathlib import Path

import pytest
from websockets.sync.server import ServerConnection

from tests.sip.peers import BridgeProcess, need, sipp_call
from tests.sip.sipp_scenario import expect, request, scenario, sdp
from tests.ws_thread import ws_server_thread

pytestmark = pytest.mark.slow


def _silent_agent(ws: ServerConnection) -> None:
    for _ in ws:
        pass


def _in_transaction(step: str, name: str) -> str:
    """`step` sent in the transaction `name`: its copies are one request sent again (17.2.3: same branch)."""
    return step.replace("branch=[branch]", f"branch=z9hG4bK-{name}-[call_number]")


def _call(*steps: str, tmp_path: Path) -> list[dict]:
    """An answered call of `steps` between its ACK and BYE: the call log."""
    with ws_server_thread(_silent_agent) as port:
        bridge = BridgeProcess(f"ws://127.0.0.1:{port}/v1/realtime", tmp_path, "--rtp-timeout", "0")
        return sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200), request("ACK", 1, in_dialog=True),
            *steps, request("BYE", 9, in_dialog=True), expect(200, optional=())))


def test_an_info_sent_again_after_a_later_request_gets_its_200_again(tmp_path: Path) -> None:
    """RFC 3261 17.2.2: an INFO whose 200 was lost is sent again in its transaction; an OPTIONS (a PBX's dialog
    keep-alive) of a higher CSeq may have come meanwhile. The copy got 500 (its CSeq below the dialog's, 12.2.2),
    so the sender took its key press for refused; it gets its 200 again, and the key counts once."""
    need("sipp")
    info = _in_transaction(request("INFO", 2, in_dialog=True, body="Signal=4\nDuration=160\n",
                                   content_type="application/dtmf-relay"), "info2")
    calls = _call(info, expect(200, optional=()), request("OPTIONS", 3, in_dialog=True), expect(200, optional=()),
                  info, expect(200, optional=()), tmp_path=tmp_path)
    assert [(c["end_reason"], c["dtmf"]) for c in calls] == [("remote hangup", ["4"])], calls


def test_a_reinvite_refused_491_gets_491_again_when_sent_again_after_the_glare(tmp_path: Path) -> None:
    """RFC 3261 14.2, 17.2.1: a re-INVITE that comes while our 200 to the last awaits its ACK gets 491; sent again
    in its transaction (the 491 was lost) after that ACK, it was taken as a new re-INVITE and answered 200, a second
    outcome of one transaction. It gets its 491 again, and the call goes on to the BYE."""
    need("sipp")
    glare = _in_transaction(request("INVITE", 3, in_dialog=True, body=sdp("0", version=3)), "reinvite3")
    calls = _call(request("INVITE", 2, in_dialog=True, body=sdp("0", version=2)), expect(200, optional=()),
                  glare, expect(491, optional=()), request("ACK", 2, in_dialog=True),
                  glare, expect(491, optional=()), _in_transaction(request("ACK", 3, in_dialog=True), "reinvite3"),
                  tmp_path=tmp_path)
    assert [c["end_reason"] for c in calls] == ["remote hangup"], calls
