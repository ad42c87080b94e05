"""The RTP source policy (rtp_latch.py) of a call answered by a SipBridge on real UDP sockets, with an in-test agent
server that records the audio it is sent. A caller whose SDP names a private address is behind a NAT, and the
bridge must find its media source from the packets it receives (RFC 7362 latching), while strangers who learn the
call's RTP port try to take it; a PBX's media may move to another of its ports mid-call."""

from __future__ import annotations

import re
import socket
import time

import pytest

from clients.sip.message import Response, parse_message
from clients.sip.rtp import RtpPacket
from tests.sip.peers import sip_request
from tests.sip.udp_agent import Agent, heard_by, run_call, udp

PRIVATE_OFFER = (b"v=0\r\no=t 1 1 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\n"
                 b"m=audio 4000 RTP/AVP 0\r\n")
CALLER, STRANGER = 0x11, 0x22  # the bytes of each one's "speech"


def answered(phone: socket.socket, bridge_port: int, offer: bytes = PRIVATE_OFFER) -> tuple[str, int]:
    """INVITE with `offer` from `phone`, ACK the 200: (the To tag, the bridge's RTP port)."""
    local = phone.getsockname()[1]
    phone.sendto(sip_request("INVITE", bridge_port, local, call_id="nat", body=offer,
                             extra="Content-Type: application/sdp\r\n"), ("127.0.0.1", bridge_port))
    phone.settimeout(20)
    while True:
        msg = parse_message(phone.recv(65535))
        if isinstance(msg, Response) and msg.status >= 200:
            break
    assert msg.status == 200, msg
    to_tag = ";tag=" + (msg.headers.get("To") or "").split(";tag=")[1]
    phone.sendto(sip_request("ACK", bridge_port, local, call_id="nat", to_tag=to_tag), ("127.0.0.1", bridge_port))
    port = re.search(rb"m=audio (\d+)", msg.body)
    assert port is not None, msg.body
    return to_tag, int(port[1])


def test_a_stranger_who_sprays_a_nat_callers_port_first_does_not_keep_the_call() -> None:
    """A caller behind a NAT (its SDP names 192.168.1.20) called directly: its INVITE and its RTP come from its
    NAT's public address (127.0.0.1). A stranger (127.0.0.2) who learnt the call's RTP port sprays it before the
    caller's first packet, and goes on. Old Asterisk's strictrtp latched to the first source that sent a few
    packets in a row and kept it: the agent heard the stranger for the whole call and its replies went to the
    stranger, while the caller heard nothing. The caller's own host must win the call back: the agent hears only
    the caller once it talks, and the agent's audio goes to the caller, not the stranger."""
    agent = Agent()
    phone, caller_rtp, stranger = udp("127.0.0.1"), udp("127.0.0.1"), udp("127.0.0.2")
    caller_port = caller_rtp.getsockname()[1]

    def call(bridge_port: int) -> tuple[list[float], list[float], float]:
        to_tag, rtp_port = answered(phone, bridge_port)
        dest = ("127.0.0.1", rtp_port)
        for n in range(10):  # the stranger alone: latched, as any source of a NAT caller might be
            stranger.sendto(RtpPacket(0, n, n * 160, 0x5EED, bytes([STRANGER]) * 160).serialize(), dest)
            time.sleep(0.02)
        for n in range(150):  # 3 s: the caller talks, the stranger goes on
            stranger.sendto(RtpPacket(0, 10 + n, (10 + n) * 160, 0x5EED, bytes([STRANGER]) * 160).serialize(), dest)
            caller_rtp.sendto(RtpPacket(0, 500 + n, n * 160, 0xCA11, bytes([CALLER]) * 160).serialize(), dest)
            time.sleep(0.02)
            if n == 50:  # 1 s in: what reached each so far is read; from here on only the caller may get our audio
                heard_by(stranger)
                heard_by(caller_rtp)
        end = time.monotonic()
        got = heard_by(stranger), heard_by(caller_rtp)
        phone.sendto(sip_request("BYE", bridge_port, phone.getsockname()[1], call_id="nat", to_tag=to_tag),
                     ("127.0.0.1", bridge_port))
        return *got, end

    try:
        (to_stranger, to_caller, _), records = run_call(agent, call)
    finally:
        for s in (phone, caller_rtp, stranger):
            s.close()
    assert to_stranger == [], "the stranger still got the agent's audio after the caller had talked for 1 s"
    assert len(to_caller) >= 40, len(to_caller)  # of ~100 packets of 20 ms in those 2 s (slack for a loaded box)
    first_words = agent.audio.find(bytes([CALLER]) * 160)
    assert first_words >= 0, "the agent never heard the caller"
    assert STRANGER not in agent.audio[first_words:], "the agent heard the stranger after the caller"
    assert records and records[0].media_to == f"127.0.0.1:{caller_port}", records  # the call log says so too


@pytest.mark.parametrize("stray", [False, True], ids=["moved", "then-a-stray-packet-from-the-old-port"])
def test_a_pbx_that_moves_the_media_to_a_new_port_and_ssrc_mid_call_is_still_heard(stray: bool) -> None:
    """A PBX (127.0.0.1, its SDP naming its media port) transfers the call without a re-INVITE: after 1 s its
    media stops there and comes from another of its ports with a new SSRC. The agent heard nothing of the new
    stream, and its audio went on to the old port, for the rest of the call; now the bridge follows the new
    stream after its probation (RFC 4961 symmetric RTP: our audio goes where it comes from). One stray (or
    spoofed) packet from the old SDP port 1 s after the move took our audio back there for 0.5 s (24 packets),
    and its payload reached the agent; now the old port needs the probation as any other source."""
    agent = Agent()
    phone, old_rtp, new_rtp = udp("127.0.0.1"), udp("127.0.0.1"), udp("127.0.0.1")
    old_port, new_port = old_rtp.getsockname()[1], new_rtp.getsockname()[1]
    offer = (f"v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             f"m=audio {old_port} RTP/AVP 0\r\n").encode()
    moved = 0x33  # the transferred party's "speech"

    def call(bridge_port: int) -> tuple[list[float], list[float]]:
        to_tag, rtp_port = answered(phone, bridge_port, offer)
        dest = ("127.0.0.1", rtp_port)
        for n in range(50):
            old_rtp.sendto(RtpPacket(0, 100 + n, n * 160, 0xCA11, bytes([CALLER]) * 160).serialize(), dest)
            time.sleep(0.02)
        for n in range(100):  # the PBX's new media port, its own SSRC and sequence numbers
            new_rtp.sendto(RtpPacket(0, 40000 + n, 9999 + n * 160, 0xB0B, bytes([moved]) * 160).serialize(), dest)
            time.sleep(0.02)
            if n == 25:  # 0.5 s in: from here on our audio must go to the new port only
                heard_by(old_rtp)
                heard_by(new_rtp)
            if stray and n == 50:
                old_rtp.sendto(RtpPacket(0, 7, 0, 0xBAD, bytes([STRANGER]) * 160).serialize(), dest)
        got = heard_by(old_rtp), heard_by(new_rtp)
        phone.sendto(sip_request("BYE", bridge_port, phone.getsockname()[1], call_id="nat", to_tag=to_tag),
                     ("127.0.0.1", bridge_port))
        return got

    try:
        (to_old, to_new), records = run_call(agent, call)
    finally:
        for s in (phone, old_rtp, new_rtp):
            s.close()
    assert agent.audio.count(bytes([moved]) * 160) >= 60, "the agent did not hear the new stream"
    assert STRANGER not in agent.audio, "the agent heard the stray packet"
    assert to_old == [], "the agent's audio still went to the old port 0.5 s after the media moved"
    assert len(to_new) >= 35, len(to_new)  # of ~75 packets of 20 ms in those 1.5 s (slack for a loaded box)
    assert records and records[0].media_to == f"127.0.0.1:{new_port}", records
