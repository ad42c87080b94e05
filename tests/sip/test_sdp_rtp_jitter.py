"""SDP offer/answer (RFC 3264/4566), RTP (RFC 3550), DTMF (RFC 4733) and the jitter buffer. Pure, synchronous."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from clients.sip.bridge_config import BridgeConfig
from clients.sip.call_media import CallMedia
from clients.sip.call_record import CallRecord
from clients.sip.errors import IncompatibleAddress, IncompatibleTransport, NoCommonCodec, RemoteProtocolError
from clients.sip.jitter import JitterBuffer
from clients.sip.rtp import DtmfDigit, DtmfReceiver, OutboundStream, RtpPacket, TelephoneEvent, is_rtcp
from clients.sip.sdp import Codec, SessionDescription, build_answer, negotiate
from tests.sip.media import read_pcap_udp
from tests.conftest import missing_peer

OFFER = (b"v=0\r\no=alice 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
         b"m=video 5002 RTP/AVP 96\r\n"
         b"m=audio 6000 RTP/AVP 18 8 0 101\r\nc=IN IP4 10.0.0.2\r\na=rtpmap:101 telephone-event/8000\r\n"
         b"a=fmtp:101 0-15\r\na=sendonly\r\n")


def test_negotiation_follows_the_offerers_order_and_keeps_telephone_event() -> None:
    """RFC 3264 6.1: the first offered codec we support (PCMA here, G.729 skipped); media-level c= wins."""
    n = negotiate(SessionDescription.parse(OFFER))
    assert (n.codec, n.dtmf_payload_type, n.remote_host, n.remote_port) == (Codec(8, "PCMA"), 101, "10.0.0.2", 6000)
    assert (n.direction, n.media_index) == ("recvonly", 1)


def test_answer_is_exact_and_rejects_other_streams() -> None:
    """RFC 3264 6: one m= line per offered one; the video stream gets port 0."""
    offer = SessionDescription.parse(OFFER)
    answer = build_answer(offer, negotiate(offer), local_host="127.0.0.1", rtp_port=40000, session_id=7)
    assert answer.serialize() == (
        b"v=0\r\no=stepaudio-rt 7 1 IN IP4 127.0.0.1\r\ns=stepaudio-rt\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=video 0 RTP/AVP 96\r\n"
        b"m=audio 40000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\na=ptime:20\r\na=recvonly\r\n")
    assert SessionDescription.parse(answer.serialize()) == answer


def test_dynamic_payload_type_named_pcmu() -> None:
    sdp = b"v=0\r\no=x 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\nt=0 0\r\nm=audio 1 RTP/AVP 97\r\na=rtpmap:97 pcmu/8000\r\n"
    assert negotiate(SessionDescription.parse(sdp)).codec == Codec(97, "PCMU")


@pytest.mark.parametrize("m_line", [b"m=audio 6000 RTP/AVP 18 9", b"m=audio 0 RTP/AVP 0", b"m=video 6000 RTP/AVP 0"])
def test_no_common_codec_is_488(m_line: bytes) -> None:
    sdp = b"v=0\r\no=x 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\nt=0 0\r\n" + m_line + b"\r\n"
    with pytest.raises(NoCommonCodec) as info:
        negotiate(SessionDescription.parse(sdp))
    assert info.value.status == 488


def test_an_ipv6_only_offer_is_488_with_warning_301() -> None:
    """Our sockets are IPv4: an IN IP6 stream (session- or media-level c=) cannot be answered (RFC 3261 20.43,
    warning 301: incompatible network address formats)."""
    for sdp in (b"v=0\r\no=x 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n",
                b"v=0\r\no=x 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"
                b"c=IN IP6 2001:db8::5\r\n"):
        with pytest.raises(IncompatibleAddress, match="IN IP6 2001:db8::5") as info:
            negotiate(SessionDescription.parse(sdp))
        assert (info.value.status, info.value.warn_code) == (488, 301)


@pytest.mark.parametrize("proto", ["RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF"])
def test_an_srtp_only_offer_is_488_with_warning_302_naming_its_profile(proto: str) -> None:
    """An offer of PCMU over SRTP is refused for its profile (RFC 3261 20.43, warning 302: incompatible transport
    protocol), not with "no PCMU/PCMA" (the codec is there: that message sent the caller's operator to the wrong
    setting); an offer of the same audio also over RTP/AVP is answered on that stream."""
    srtp = f"m=audio 6000 {proto} 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abc\r\n".encode()
    sdp = b"v=0\r\no=x 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\nt=0 0\r\n" + srtp
    with pytest.raises(IncompatibleTransport) as info:
        negotiate(SessionDescription.parse(sdp))
    assert (info.value.status, info.value.warn_code) == (488, 302)
    assert str(info.value) == f"audio over {proto}: this bridge speaks plain RTP/AVP, no SRTP"
    assert negotiate(SessionDescription.parse(sdp + b"m=audio 6002 RTP/AVP 0\r\n")).media_index == 1

def test_a_dual_stack_offer_is_answered_on_its_ipv4_stream() -> None:
    """RFC 4091-style offers list the stream once per address family: the IPv6 one is rejected with port 0
    (RFC 3264 6) and the IPv4 one taken; IN IP6 survives a parse/serialize round trip."""
    sdp = (b"v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n"
           b"m=audio 6000 RTP/AVP 0\r\nc=IN IP6 2001:db8::5\r\n"
           b"m=audio 6002 RTP/AVP 0\r\nc=IN IP4 10.0.0.1\r\n")
    offer = SessionDescription.parse(sdp)
    assert offer.serialize() == sdp
    n = negotiate(offer)
    assert (n.remote_host, n.remote_port, n.media_index) == ("10.0.0.1", 6002, 1)
    answer = build_answer(offer, n, local_host="127.0.0.1", rtp_port=40000, session_id=7)
    assert [(m.port, m.connection) for m in answer.media] == [(0, None), (40000, None)]


@pytest.mark.parametrize("sdp", [b"v=1\r\no=x\r\n", b"garbage", b"v=0\r\nm=audio x RTP/AVP 0\r\n", b"\xff\xfe"])
def test_bad_sdp_raises(sdp: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        SessionDescription.parse(sdp)


def test_rtp_round_trip_with_csrc_extension_and_padding() -> None:
    """RFC 3550 5.1/5.3.1: CSRCs kept, the extension skipped, padding stripped."""
    p = RtpPacket(0, 65535, 2**32 - 1, 0xDEADBEEF, b"\x01" * 160, marker=True, csrcs=(1, 2))
    assert RtpPacket.parse(p.serialize()) == p
    raw = bytearray(RtpPacket(8, 1, 2, 3, b"abc").serialize())
    raw[0] |= 0x30  # padding + extension
    ext = b"\xbe\xde\x00\x01" + b"\x00" * 4
    data = bytes(raw[:12]) + ext + b"abc" + b"\x00\x00\x03"
    assert RtpPacket.parse(data).payload == b"abc"
    for bad in (b"\x80\x00", b"\x40" + bytes(11), b"\x8f" + bytes(11), bytes(raw[:12]) + b"\x00\x00\x09"):
        with pytest.raises(RemoteProtocolError):
            RtpPacket.parse(bad)


def test_outbound_stream_paces_marks_talkspurts_and_pads() -> None:
    """One packet per 20 ms tick, timestamp +160 per tick sent or idle, marker after an idle tick (RFC 3551 4.1)."""
    out = OutboundStream(0, 0xFF, random.Random(3))
    seq0, ts0 = out.sequence, out.timestamp
    out.push(b"\x10" * 400)
    a, b = RtpPacket.parse(out.tick() or b""), RtpPacket.parse(out.tick() or b"")
    assert out.tick() is None  # 80 bytes left, utterance not finished: wait
    out.finish()
    c = RtpPacket.parse(out.tick() or b"")
    assert [(p.sequence - seq0, p.timestamp - ts0, p.marker) for p in (a, b, c)] == [(0, 0, True), (1, 160, False),
                                                                                       (2, 480, True)]
    assert c.payload == b"\x10" * 80 + b"\xff" * 80 and {a.ssrc, b.ssrc, c.ssrc} == {out.ssrc}
    out.push(b"\x10" * 1000)
    assert out.flush() == 1000 and out.tick() is None
    small = OutboundStream(0, 0xFF, random.Random(3), max_queue_bytes=320)
    small.push(b"\x01" * 500)
    assert (small.queued, small.bytes_dropped) == (320, 180)


def test_dtmf_from_debians_rfc4733_pcap() -> None:
    """RFC 4733 2.5.1.4: the end packet is sent three times; the digit is reported once."""
    pcap = Path("/usr/share/sip-tester/dtmf_2833_5.pcap")
    if not pcap.exists():
        missing_peer("needs sip-tester (apt-get install sip-tester)")
    rx = DtmfReceiver()
    digits = [d for _, _, p in read_pcap_udp(pcap) for d in rx.feed(RtpPacket.parse(p))]
    assert [d.digit for d in digits] == ["5"]


def test_dtmf_with_lost_end_packets() -> None:
    rx = DtmfReceiver()
    start = RtpPacket(101, 1, 1000, 9, TelephoneEvent(11, False, 10, 400).serialize())
    nxt = RtpPacket(101, 2, 2000, 9, TelephoneEvent(1, True, 10, 800).serialize())
    assert rx.feed(start) == []
    assert rx.feed(nxt) == [DtmfDigit("#", 50), DtmfDigit("1", 100)]
    assert rx.feed(nxt) == []


def _pkt(seq: int, payload: bytes = b"") -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, 1, payload or bytes([seq % 256]) * 160)


def test_events_that_are_no_key_are_not_reported() -> None:
    """RFC 4733 3.2 / RFC 4734: a hook flash (16) and a fax's CNG tone (36) are events, not key presses; they
    reached the agent as "DTMF flash" and "DTMF event-36" and drew replies. Only the key after them is reported,
    whether their end packets came or were lost."""
    rx = DtmfReceiver()

    def event(number: int, ts: int, end: bool) -> RtpPacket:
        return RtpPacket(101, ts // 100, ts, 9, TelephoneEvent(number, end, 10, 800).serialize())

    heard = [d for ts, number in ((1000, 16), (2000, 36)) for packet in (event(number, ts, False),
             *[event(number, ts, True)] * 3) for d in rx.feed(packet)]
    heard += rx.feed(event(16, 3000, False))  # its end packets lost: the next event ends it
    heard += rx.feed(event(5, 4000, True))
    assert heard == [DtmfDigit("5", 100)]

def test_jitter_buffer_reorders_conceals_and_drains() -> None:
    jb = JitterBuffer(0xFF, depth=3, max_wait_s=0.06)
    assert jb.push(_pkt(10), 0.0) == [_pkt(10).payload]
    assert jb.push(_pkt(12), 0.02) == []  # 11 is missing: wait
    assert jb.push(_pkt(11), 0.03) == [_pkt(11).payload, _pkt(12).payload]  # reordered
    assert jb.push(_pkt(11), 0.04) == [] and jb.stats.late == 1  # already played
    assert jb.push(_pkt(14), 0.05) == []
    assert jb.poll(0.08) == []
    assert jb.poll(0.12) == [b"\xff" * 160, _pkt(14).payload]  # waited max_wait_s: 13 is lost
    assert jb.push(_pkt(16), 0.13) == [] and jb.push(_pkt(17), 0.14) == []
    assert jb.push(_pkt(18), 0.15) == [b"\xff" * 160, _pkt(16).payload, _pkt(17).payload, _pkt(18).payload]
    assert jb.push(_pkt(20), 0.16) == []
    assert jb.drain() == [b"\xff" * 160, _pkt(20).payload]  # nothing is lost at hang-up
    assert (jb.stats.lost, jb.stats.late) == (3, 1)


def test_jitter_buffer_wraps_and_fills_silence_when_the_caller_stops() -> None:
    jb = JitterBuffer(0xFF)
    assert len(jb.push(_pkt(65535), 0.0)) == 1 and len(jb.push(_pkt(65536), 0.02)) == 1  # seq wraps to 0
    assert jb.stats.lost == 0
    assert jb.poll(0.1) == []
    assert jb.poll(0.22) == [b"\xff" * 160] * 10  # 0.02 .. 0.22 s of silence, in 20 ms frames
    assert jb.poll(0.25) == [b"\xff" * 160]


def test_hold_offers_session_level_direction_and_a_kept_codec() -> None:
    """RFC 4566 6: a session-level a=sendonly applies to a stream without its own; RFC 3264 8.4: c=0.0.0.0 is the
    old hold. Either way we must not send, and the answer says so (recvonly, or inactive). A re-offer is answered
    with the codec in use, or not at all."""
    base = b"v=0\r\no=x 1 2 IN IP4 h\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    held = negotiate(SessionDescription.parse(base + b"a=sendonly\r\nm=audio 6000 RTP/AVP 8 0\r\n"))
    assert (held.direction, held.sends) == ("recvonly", False)
    media_wins = negotiate(SessionDescription.parse(base + b"a=sendonly\r\nm=audio 6000 RTP/AVP 0\r\n"
                                                    b"a=sendrecv\r\n"))
    assert (media_wins.direction, media_wins.sends) == ("sendrecv", True)
    old_hold_sdp = base.replace(b"10.0.0.1", b"0.0.0.0") + b"m=audio 6000 RTP/AVP 0\r\n"
    old_hold = negotiate(SessionDescription.parse(old_hold_sdp))
    assert (old_hold.direction, old_hold.sends) == ("recvonly", False)  # what we do: it said sendrecv
    for offered, answered in (("inactive", "inactive"), ("recvonly", "inactive"), ("sendonly", "recvonly")):
        held_too = negotiate(SessionDescription.parse(old_hold_sdp + f"a={offered}\r\n".encode()))
        assert (held_too.direction, held_too.sends) == (answered, False), offered
    both = SessionDescription.parse(base + b"m=audio 6000 RTP/AVP 8 0\r\n")
    assert negotiate(both).codec == Codec(8, "PCMA")
    assert negotiate(both, keep=Codec(0, "PCMU")).codec == Codec(0, "PCMU")
    with pytest.raises(NoCommonCodec):
        negotiate(SessionDescription.parse(base + b"m=audio 6000 RTP/AVP 8\r\n"), keep=Codec(0, "PCMU"))


def test_jitter_buffer_counts_no_loss_for_dtmf_sharing_the_sequence() -> None:
    """RFC 4733 2.1: telephone-event packets of the audio's SSRC take sequence numbers of the audio stream; those
    numbers are no loss, and a pause is filled with silence as usual. Another source's events change nothing."""
    jb = JitterBuffer(0xFF)
    event = TelephoneEvent(5, False, 10, 160).serialize()
    assert jb.push(_pkt(10), 0.0) == [_pkt(10).payload]
    for seq in (11, 12, 13):
        assert jb.skip(RtpPacket(101, seq, 1600, 1, event), 0.02 * (seq - 10)) == []
    assert jb.skip(RtpPacket(101, 300, 0, 99, event), 0.07) == []  # another SSRC
    assert jb.push(_pkt(14), 0.08) == [_pkt(14).payload]  # at once: 11..13 were not lost
    assert (jb.stats.lost, jb.stats.released, jb.stats.resets) == (0, 2, 0)
    assert jb.poll(0.31) == [b"\xff" * 160] * 11  # the caller paused: silence after 0.08 s, as before


def test_jitter_buffer_restarts_on_a_new_ssrc() -> None:
    """RFC 3550 8: a new SSRC is a new source with its own sequence numbers, even near the old ones."""
    jb = JitterBuffer(0xFF)
    assert jb.push(_pkt(100), 0.0) == [_pkt(100).payload]
    assert jb.push(_pkt(102), 0.01) == []  # 101 missing: held
    new = RtpPacket(0, 90, 0, 2, b"\x07" * 160)  # a new source, numbered just below the old one
    assert jb.push(new, 0.02) == [b"\xff" * 160, _pkt(102).payload, new.payload]
    assert jb.push(RtpPacket(0, 91, 160, 2, b"\x08" * 160), 0.04) == [b"\x08" * 160]
    assert (jb.stats.late, jb.stats.resets) == (0, 1)


def _call_media(offer: bytes) -> tuple[CallMedia, CallRecord]:
    media = negotiate(SessionDescription.parse(offer))
    record = CallRecord("call1", "c1", "sip:a@10.0.0.2", media.codec.name)
    line = CallMedia(media, "10.0.0.2", BridgeConfig(server_url="ws://h/v1/realtime"), random.Random(0), record,
                     logging.LoggerAdapter(logging.getLogger()))
    line.expect((media.remote_host, media.remote_port))
    return line, record


def test_rtcp_on_the_rtp_port_is_no_audio_and_no_strangers_rtp() -> None:
    """RFC 5761 4: an RTCP packet (type 200-204: RTP payload types 72-76 with the marker) on a call's RTP port, the
    caller's or a neighbouring call's to its port + 1, is ignored: not the caller's audio, not counted as foreign
    or bad. A marked packet of a payload type the call does map in that range (telephone-event 77) is still RTP."""
    sdp = b"v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 77\r\n" \
        b"a=rtpmap:77 telephone-event/8000\r\n"
    line, record = _call_media(sdp)
    receiver_report = bytes([0x81, 201, 0, 7]) + bytes(28)  # baresip's: RR with one report block
    sender_report = bytes([0x80, 200, 0, 6]) + bytes(24)
    for n, report in enumerate((receiver_report, sender_report)):
        assert is_rtcp(report)
        assert line.receive(report, ("10.0.0.2", 6001), float(n)) == []  # the caller's RTCP port
        assert line.receive(report, ("10.0.0.2", 7001), float(n)) == []  # a neighbour's
    assert (record.rtp_in_packets, record.rtp_in_bad, line.latch.dropped) == (0, 0, 0)
    key = RtpPacket(77, 1, 160, 5, TelephoneEvent(5, end=True, volume=10, duration=800).serialize(), marker=True)
    assert is_rtcp(key.serialize()) and line.receive(key.serialize(), ("10.0.0.2", 6000), 2.0) == ["5"]
    audio = RtpPacket(0, 2, 320, 5, b"\xff" * 160, marker=True).serialize()
    assert not is_rtcp(audio)
    line.receive(audio, ("10.0.0.2", 6000), 2.02)
    assert record.rtp_in_packets == 1 and line.latch.dropped == 0
