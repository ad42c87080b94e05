"""The bridge's RTP stream is continuous from the answer on: while the agent is quiet it sends silence, one packet
per 20 ms. A PBX or SBC hangs up a call whose RTP stops (Asterisk rtp_timeout, FreeSWITCH media_timeout): a
caller talking for a minute would be cut off; and a far end that latches to our source (symmetric RTP / comedia,
our bridge behind a NAT) learns where to send the caller's audio only from our first packet, so a bridge that
stays silent until the agent speaks never hears the caller. On hold nothing is sent."""

from __future__ import annotations

import asyncio
import random

import pytest

from clients.sip.agent_call import AgentCall
from clients.sip.bridge_config import BridgeConfig
from clients.sip.rtp import OutboundStream, RtpPacket
from clients.sip.sdp import SessionDescription, negotiate
from clients.sip.ua_events import IncomingCall

OFFER = (b"v=0\r\no=u 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")


class _Ua:
    def __init__(self) -> None:
        self.keepalives: list[str] = []

    def keepalive(self, call: str, now: float) -> bool:
        self.keepalives.append(call)
        return True


class _Host:
    def __init__(self, rtp_timeout_s: float | None = 60.0, hold_keepalive_s: float | None = 60.0) -> None:
        self.config = BridgeConfig(server_url="ws://127.0.0.1:9/v1/realtime", rtp_timeout_s=rtp_timeout_s,
                                   hold_keepalive_s=hold_keepalive_s)
        self.rng = random.Random(0)
        self.ua = _Ua()

    def pump(self) -> None: ...

    def spawn(self, coro: object) -> None: ...

    def call_finished(self, call: object) -> None: ...


class _Socket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def close(self) -> None: ...


def _call(host: _Host, direction: str = "") -> AgentCall:
    """An answered call whose caller's SDP says `direction` (a=sendonly: the caller holds the call)."""
    offer = OFFER + (f"a={direction}\r\n".encode() if direction else b"")
    return AgentCall(host, IncomingCall("call1", "c1", "sip:a@127.0.0.1", ("127.0.0.1", 5070),  # type: ignore[arg-type]
                                        negotiate(SessionDescription.parse(offer))))


def _paced(direction: str = "", host: _Host | None = None) -> list[tuple[bytes, tuple[str, int]]]:
    """What an answered call whose agent has said nothing yet sends in 0.5 s."""

    async def main() -> list[tuple[bytes, tuple[str, int]]]:
        call = _call(host or _Host(), direction)
        sock = _Socket()
        call.rtp = sock  # type: ignore[assignment]
        call.line.expect(("127.0.0.1", 6000))
        call.line.last_rtp = asyncio.get_running_loop().time()
        task = asyncio.create_task(call._pace())
        await asyncio.sleep(0.5)
        task.cancel()
        return sock.sent

    return asyncio.run(main())


def test_silence_flows_while_the_agent_is_quiet() -> None:
    sent = _paced()
    assert len(sent) >= 15, len(sent)  # ~25 slots of 20 ms (timing slack on a loaded machine)
    packets = [RtpPacket.parse(d) for d, _ in sent]
    assert {a for _, a in sent} == {("127.0.0.1", 6000)}
    assert all(p.payload == b"\xff" * 160 and p.payload_type == 0 for p in packets)
    assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)  # the stream's start only
    assert [p.sequence - packets[0].sequence for p in packets] == list(range(len(packets)))


def test_nothing_is_sent_on_hold() -> None:
    assert _paced("sendonly") == []  # the caller holds us: we answer recvonly


def test_a_silent_held_caller_is_asked_whether_it_is_still_there() -> None:
    """A held phone may send no RTP, so the RTP timeout does not hang it up; after hold_keepalive_s without RTP the
    call asks the UA core for an in-dialog OPTIONS (ua.keepalive), which ends the call if the caller is gone."""
    host = _Host(hold_keepalive_s=0.2)
    _paced("sendonly", host)
    assert host.ua.keepalives and set(host.ua.keepalives) == {"call1"}  # one per 0.2 s without RTP


@pytest.mark.parametrize("rtp_timeout_s", [60.0, None])
def test_a_held_caller_is_asked_after_the_hold_keepalive_even_with_no_rtp_timeout(rtp_timeout_s: float | None) -> None:
    """`--rtp-timeout 0` (never hang up for missing RTP) turned the hold keep-alive off too, so a held caller that
    vanished kept its call and agent session forever. It has its own interval (default 60 s): asked once per
    minute on hold without RTP, with or without an RTP timeout, and never hung up for the silence itself."""
    host = _Host(rtp_timeout_s=rtp_timeout_s)
    call = _call(host, "sendonly")  # answered at loop time 0 (line.last_rtp)
    assert [call._timed_out(t) for t in (59.0, 61.0, 100.0, 122.0)] == [False] * 4
    assert host.ua.keepalives == ["call1", "call1"]  # at 61 s, and a minute after that question


def test_hold_keepalive_off_never_asks() -> None:
    """`--hold-keepalive 0`: a held caller is never asked (nor, held, timed out)."""
    host = _Host(hold_keepalive_s=None)
    assert not _call(host, "sendonly")._timed_out(3600.0)
    assert host.ua.keepalives == []


def test_the_agents_audio_after_silence_starts_a_talkspurt() -> None:
    out = OutboundStream(0, 0xFF, random.Random(1))
    out.tick(fill=True)  # the stream's first packet
    silence = RtpPacket.parse(out.tick(fill=True) or b"")
    out.push(b"\x10" * 160)
    speech = RtpPacket.parse(out.tick(fill=True) or b"")
    assert (silence.marker, speech.marker) == (False, True)
    assert (speech.sequence - silence.sequence, speech.timestamp - silence.timestamp) == (1, 160)


def test_the_agents_audio_waits_out_a_hold_and_plays_whole_on_resume() -> None:
    """The agent's queued audio played on, into nothing, while the caller held the call (3 s of a 10 s reply lost,
    its transcript still saying all of it was said): it waits for the resume now, and nothing is lost."""
    line = _call(_Host()).line
    line.expect(("127.0.0.1", 6000))
    line.outbound.push(bytes(range(1, 161)) * 50)  # 1 s of the agent's speech
    sent = [line.tick(0.0, can_send=True) for _ in range(10)]
    line.change(negotiate(SessionDescription.parse(OFFER + b"a=sendonly\r\n")), 0.2)  # the caller holds the call
    assert [line.tick(0.0, can_send=True) for _ in range(100)] == [None] * 100  # 2 s on hold: nothing sent
    line.change(negotiate(SessionDescription.parse(OFFER)), 2.2)
    sent += [line.tick(0.0, can_send=True) for _ in range(45)]
    packets = [RtpPacket.parse(s[0]) for s in sent if s is not None]
    speech = [p for p in packets if p.payload != b"\xff" * 160]
    assert len(speech) == 50 and len(packets) == 55  # the whole second, then silence
    assert [p.sequence - packets[0].sequence for p in packets] == list(range(55))  # no packet counts as lost
    resumed = packets[10]
    assert resumed.marker and resumed.timestamp - packets[9].timestamp == 101 * 160  # a new talkspurt, on the clock
