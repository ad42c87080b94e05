"""Each request is its own server transaction (RFC 3261 17.2.3): a retransmission gets its transaction's answer
again, whatever the call did since, and an INVITE's refusal is resent until its ACK. sipp callers against the
bridge CLI, and a caller on a plain UDP socket where sipp cannot watch (it swallows a response sent again as a
retransmission); the agent server is a WebSocket server that takes the session and says nothing (the call only has
to be answered)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from websockets.sync.server import ServerConnection

from clients.sip.message import Response, parse_message
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


class _UdpCaller:
    """A caller on a UDP socket of its own: one dialog with the bridge, its requests written out by hand."""

    SDP = b"v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40900 RTP/AVP 0\r\n"

    def __init__(self, bridge_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port, self.bridge_port, self.to_tag = self.sock.getsockname()[1], bridge_port, ""

    def send(self, method: str, cseq: int, branch: str, *, sdp: bool = False) -> None:
        body = self.SDP if sdp else b""
        to = f"<sip:agent@127.0.0.1:{self.bridge_port}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        head = (f"{method} sip:agent@127.0.0.1:{self.bridge_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-{branch}\r\n"
                f"From: <sip:caller@127.0.0.1:{self.port}>;tag=caller\r\nTo: {to}\r\nCall-ID: udp-caller\r\n"
                f"CSeq: {cseq} {method}\r\nContact: <sip:caller@127.0.0.1:{self.port}>\r\nMax-Forwards: 70\r\n"
                + ("Content-Type: application/sdp\r\n" if sdp else "") + f"Content-Length: {len(body)}\r\n\r\n")
        self.sock.sendto(head.encode() + body, ("127.0.0.1", self.bridge_port))

    def responses(self, seconds: float, until: int | None = None) -> list[tuple[float, Response]]:
        """What came within `seconds`, or up to a response of status `until`, with when (s from now)."""
        start, out = time.monotonic(), []
        while (left := start + seconds - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                msg = parse_message(self.sock.recv(65535))
            except TimeoutError:
                break
            assert isinstance(msg, Response)
            out.append((time.monotonic() - start, msg))
            if msg.status == until:
                break
        return out


def test_a_reinvite_refused_491_is_resent_until_its_ack(tmp_path: Path) -> None:
    """RFC 3261 17.2.1: a non-2xx final to an INVITE is resent on Timer G (0.5 s, then 1 s, ...) until its ACK,
    for a caller that lost it and waits (a UAC that had a 100 Trying resends nothing). The 491 to a re-INVITE that
    came while our 200 to the last awaited its ACK was sent once; it is resent until its ACK, and then no more, and
    the call's own 200 is resent meanwhile as before."""
    with ws_server_thread(_silent_agent) as port:
        bridge = BridgeProcess(f"ws://127.0.0.1:{port}/v1/realtime", tmp_path, "--rtp-timeout", "0")
        caller = _UdpCaller(bridge.port)
        try:
            caller.send("INVITE", 1, "invite1", sdp=True)
            answered = [r for _, r in caller.responses(10, until=200) if r.status == 200]
            caller.to_tag = (answered[0].headers.get("To") or "").split(";tag=")[1]
            caller.send("ACK", 1, "ack1")
            caller.send("INVITE", 2, "reinvite2", sdp=True)
            caller.send("INVITE", 3, "reinvite3", sdp=True)
            before_ack = [(round(t, 1), r.status, r.cseq.number) for t, r in caller.responses(1.8)]
            caller.send("ACK", 3, "reinvite3")
            caller.send("ACK", 2, "ack2")
            after_ack = [(r.status, r.cseq.number) for _, r in caller.responses(2.5)]
            caller.send("BYE", 4, "bye4")
            assert [r.status for _, r in caller.responses(2, until=200)] == [200]
        finally:
            caller.sock.close()
            bridge.stop()
    refusals = [t for t, status, cseq in before_ack if (status, cseq) == (491, 3)]
    assert len(refusals) == 3 and refusals[1] - refusals[0] == pytest.approx(0.5, abs=0.2), before_ack
    assert refusals[2] - refusals[1] == pytest.approx(1.0, abs=0.2), before_ack
    assert [(s, c) for _, s, c in before_ack if c == 2][:2] == [(200, 2), (200, 2)], before_ack
    assert after_ack == [], after_ack
