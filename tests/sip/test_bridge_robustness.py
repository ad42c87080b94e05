"""The bridge CLI against hostile and odd input over real UDP, with a real agent server behind it.

Garbage datagrams are dropped, broken requests get 400 Bad Request (RFC 3261 8.2, 21.4.1), an offer without
PCMU/PCMA gets 488 (RFC 3264 6), an INVITE retransmitted before the answer makes no second call (17.2.1), and a
valid call placed afterwards is answered, carried and torn down (BYE -> 200, agent session closed).
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients.sip.message import Response, SipParseError, parse_message
from tests.sip.media import free_udp_port, wait_for
from tests.sip.peers import BridgeProcess, sip_request

pytestmark = pytest.mark.slow

OFFER = (b"v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 7078 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")
G729_OFFER = OFFER.replace(b"RTP/AVP 0 101", b"RTP/AVP 18").replace(b"a=rtpmap:101 telephone-event/8000\r\n", b"")


class Phone:
    def __init__(self, bridge_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", bridge_port)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def recv(self, timeout: float) -> Response | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65535)
        except OSError:
            return None
        try:
            msg = parse_message(data)
        except SipParseError as exc:  # a 400 to a request without Call-ID cannot carry one either
            msg = exc.partial
        assert isinstance(msg, Response), data
        return msg

    def recv_until(self, status: int, timeout: float) -> list[Response]:
        got: list[Response] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.recv(max(0.05, deadline - time.monotonic()))
            if r is not None:
                got.append(r)
                if r.status == status:
                    break
        return got


def ack_of(invite: bytes, final: Response) -> bytes:
    """The ACK a phone sends for a non-2xx to `invite` (17.1.1.3): its branch, Call-ID, From and CSeq number, the
    response's To; no body. A malformed INVITE's ACK copies its flaws."""
    head = invite.split(b"\r\n\r\n")[0].replace(b"INVITE sip:", b"ACK sip:", 1).replace(b" INVITE\r\n", b" ACK\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith((b"content-", b"to:"))]
    lines += [b"To: " + (final.headers.get("To") or "").encode(), b"Content-Length: 0"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_a_malformed_invite_sent_again_gets_the_same_400_resent_until_its_ack(embedded_server, tmp_path) -> None:
    """RFC 3261 8.2.6.2: the same To tag for the same request; 17.2.1: an INVITE's retransmission gets the same
    final response, which is resent (Timer G, 0.5 s) until the ACK, and then no more."""
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    phone = Phone(bridge.port)
    try:
        cut = sip_request("INVITE", bridge.port, phone.port, call_id="cut", body=OFFER).replace(
            b"Content-Length: %d" % len(OFFER), b"Content-Length: 900")  # a datagram cut short
        phone.send(cut)
        first = phone.recv(2)
        phone.send(cut)  # its retransmission: the phone did not get the first
        again = phone.recv(2)
        resent = phone.recv(1.5)
        assert first is not None and first.status == 400
        assert again is not None and resent is not None
        assert again.serialize() == first.serialize() == resent.serialize()
        phone.send(ack_of(cut, first))
        while phone.recv(0.3) is not None:  # a copy already on its way as the ACK went
            pass
        assert phone.recv(2.5) is None  # Timer G's next copies (at 1.5 s, 3.5 s from the first) never come
    finally:
        code = bridge.stop()
        phone.sock.close()
    assert code == 0, bridge.log()


def test_an_ack_to_a_refusal_on_a_branch_of_its_own_stops_its_retransmissions(tmp_path) -> None:
    """RFC 3261 17.2.3: an RFC 2543 phone gives its ACK a branch of its own and is matched by Call-ID, From tag,
    CSeq and the response's To tag, as the bridge matched the ACK to a call's own 488. The 481 to an INVITE for no
    dialog (an INVITE transaction beside any call's) went on being resent for 32 s after such an ACK."""
    bridge = BridgeProcess(f"ws://127.0.0.1:{free_udp_port()}/v1/realtime", tmp_path)  # no agent needed
    phone = Phone(bridge.port)
    try:
        phone.send(sip_request("INVITE", bridge.port, phone.port, call_id="gone", body=OFFER, to_tag=";tag=old",
                               extra="Content-Type: application/sdp\r\n"))
        refused = phone.recv(2)
        assert refused is not None and refused.status == 481
        ack = sip_request("ACK", bridge.port, phone.port, call_id="gone", to_tag=";tag=old")
        assert b"branch=z9hG4bK-gone-ack" in ack  # not the INVITE's z9hG4bK-gone-invite
        phone.send(ack)
        assert phone.recv(2.5) is None  # no copy at 0.5 s, 1.5 s
    finally:
        code = bridge.stop()
        phone.sock.close()
    assert code == 0, bridge.log()


def test_a_cancel_that_crosses_a_refusal_gets_200(tmp_path) -> None:
    """RFC 3261 9.2: a CANCEL that matches a transaction whose final response was sent gets 200 (no effect); the
    phone sent it before our 481 to its INVITE for a dialog we do not have reached it. It got 481, which says
    there is no such INVITE transaction."""
    bridge = BridgeProcess(f"ws://127.0.0.1:{free_udp_port()}/v1/realtime", tmp_path)  # no agent needed
    phone = Phone(bridge.port)
    try:
        phone.send(sip_request("INVITE", bridge.port, phone.port, call_id="gone", body=OFFER, to_tag=";tag=old",
                               extra="Content-Type: application/sdp\r\n"))
        phone.send(sip_request("CANCEL", bridge.port, phone.port, call_id="gone", to_tag=";tag=old").replace(
            b"z9hG4bK-gone-cancel", b"z9hG4bK-gone-invite"))  # a CANCEL carries its INVITE's branch (9.1)
        answers = [phone.recv(2), phone.recv(2)]
        assert [(r.status, r.cseq.method) for r in answers if r is not None] == [(481, "INVITE"), (200, "CANCEL")]
    finally:
        code = bridge.stop()
        phone.sock.close()
    assert code == 0, bridge.log()


def test_garbage_and_broken_requests_then_a_real_call(embedded_server, tmp_path) -> None:
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    phone = Phone(bridge.port)
    try:
        rng = random.Random(7)
        garbage = [b"\x00\xff" * 40, b"hello world", b"INVITE", b"SIP/2.0 200 OK\r\n\r\n", bytes(9000),
                   *(rng.randbytes(rng.randint(1, 1400)) for _ in range(20)),
                   b"INVITE sip:x SIP/2.0\r\nVia SIP/2.0/UDP 1.2.3.4\r\n\r\n"]  # a header line without a colon
        for g in garbage:
            phone.send(g)
        assert phone.recv(0.5) is None  # unparseable: dropped, no reply

        no_call_id = sip_request("INVITE", bridge.port, phone.port, call_id="x").replace(b"Call-ID: x\r\n", b"")
        short_body = sip_request("INVITE", bridge.port, phone.port, call_id="y", body=OFFER).replace(
            b"Content-Length: %d" % len(OFFER), b"Content-Length: 900")
        bad_cseq = sip_request("OPTIONS", bridge.port, phone.port, call_id="z").replace(b"CSeq: 1 OPTIONS",
                                                                                         b"CSeq: one OPTIONS")
        for broken, branch in ((no_call_id, "x-invite"), (short_body, "y-invite"), (bad_cseq, "z-options")):
            phone.send(broken)
            r = phone.recv(2)
            assert r is not None and r.status == 400, broken
            assert f"branch=z9hG4bK-{branch}" in (r.headers.get("Via") or "")
            if broken.startswith(b"INVITE"):  # a phone ACKs the 400 (17.1.1.3), which stops it being resent
                phone.send(ack_of(broken, r))

        phone.send(sip_request("INVITE", bridge.port, phone.port, call_id="g729", body=G729_OFFER,
                               extra="Content-Type: application/sdp\r\n"))
        assert [r.status for r in phone.recv_until(488, 3)] == [100, 488]
        phone.send(sip_request("ACK", bridge.port, phone.port, call_id="g729", to_tag=""))

        # A valid call, its INVITE retransmitted before the answer.
        invite = sip_request("INVITE", bridge.port, phone.port, call_id="ok", body=OFFER,
                             extra="Content-Type: application/sdp\r\n")
        phone.send(invite)
        phone.send(invite)
        responses = phone.recv_until(200, 15)
        assert responses and responses[-1].status == 200, [r.status for r in responses]
        ok = responses[-1]
        assert b"m=audio " in ok.body and b"RTP/AVP 0 101" in ok.body
        to_tag = ";tag=" + (ok.headers.get("To") or "").split(";tag=")[1]
        phone.send(sip_request("ACK", bridge.port, phone.port, call_id="ok", to_tag=to_tag))
        assert wait_for(lambda: embedded_server.metrics()["stepaudio_sessions_live"] == 1, 5)
        time.sleep(0.5)
        while phone.recv(0.1) is not None:  # late copies of 180/200 for the retransmitted INVITE
            pass
        phone.send(sip_request("BYE", bridge.port, phone.port, call_id="ok", to_tag=to_tag))
        bye_ok = phone.recv(3)
        assert bye_ok is not None and bye_ok.status == 200 and bye_ok.cseq.method == "BYE"
        assert wait_for(lambda: embedded_server.metrics()["stepaudio_sessions_live"] == 0, 10)
        calls = wait_for(lambda: [c for c in bridge.calls() if c["sip_call_id"] == "ok"], 5)
        assert bridge.proc.poll() is None, bridge.log()
    finally:
        code = bridge.stop()
        phone.sock.close()
    assert code == 0, bridge.log()
    assert len(calls) == 1 and calls[0]["end_reason"] == "remote hangup"
    # the 488 never became a call: its call log line says so
    assert [(c["sip_call_id"], c["call"] != "", c["end_reason"].split(":")[0]) for c in bridge.calls()] == [
        ("g729", False, "refused 488"), ("ok", True, "remote hangup")]


def test_a_sip_port_in_use_is_named_with_its_address() -> None:
    """A second bridge (or a softphone) on the port: one line naming the address and what to do, exit 2 as
    `serve` and the bridge's option errors (it was `sip-bridge: [Errno 98] Address already in use`, then exit 1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        proc = _start_bridge("--port", str(port))
    assert (proc.returncode, proc.stderr) == (2, f"sip-bridge: cannot listen on 127.0.0.1:{port} (UDP): address "
                                                 "already in use (another bridge or SIP phone? choose a free one "
                                                 "with --port)\n"), proc.stderr


def test_an_address_that_is_not_ours_is_named() -> None:
    """--host with an address of no interface here: exit 2 and the address named, as `serve` does (it was
    `sip-bridge: [Errno 99] Cannot assign requested address`, exit 1; then the system's words alone, not which
    address would do)."""
    proc = _start_bridge("--host", "192.0.2.1", "--port", "5060")  # TEST-NET-1 (RFC 5737): never a local address
    assert (proc.returncode, proc.stderr) == (
        2, "sip-bridge: cannot listen on 192.0.2.1:5060 (UDP): Cannot assign requested address (not an address of "
           "this machine: give one of its own, or 0.0.0.0 with --advertise to listen on all of them)\n"), proc.stderr


def _start_bridge(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clients.sip.cli", *options, "--server-url",
                           "ws://127.0.0.1:9/v1/realtime"], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
