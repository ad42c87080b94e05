"""The RTP source policy of a call (clients/sip/rtp_latch.py): symmetric RTP (RFC 4961) with latching (RFC 7362),
strict as Asterisk's strictrtp. Each test feeds packets (source, sequence number, SSRC, arrival time) and checks
what is accepted and where our RTP goes."""

from __future__ import annotations

import pytest

from clients.sip.rtp_latch import MAX_CANDIDATES, RtpLatch

SDP = ("192.0.2.10", 4000)  # the address in the caller's SDP
NAT = ("198.51.100.7", 31012)  # the caller's NAT: its INVITE came from 198.51.100.7


SSRC = 0x1234


def feed(latch: RtpLatch, source: tuple[str, int], first_seq: int, n: int, *, ssrc: int = SSRC,
         at: float = 0.0) -> list[bool]:
    """`n` packets in a row from `source`, one per 20 ms from time `at`."""
    return [latch.receive(source, (first_seq + i) & 0xFFFF, ssrc, at + i * 0.02) for i in range(n)]


def one(latch: RtpLatch, source: tuple[str, int], seq: int, ssrc: int = SSRC, at: float = 0.0) -> bool:
    return latch.receive(source, seq, ssrc, at)


def test_the_sdp_address_is_accepted_at_once_and_others_then_dropped() -> None:
    latch = RtpLatch("198.51.100.7")
    latch.expect(SDP)
    assert latch.send_to == SDP
    assert feed(latch, SDP, 100, 3) == [True] * 3
    # Once the signalled address is heard, even the caller's own hosts on other ports cannot take the call.
    assert feed(latch, NAT, 7, 10) == [False] * 10
    assert feed(latch, ("192.0.2.10", 4002), 7, 10) == [False] * 10
    assert latch.send_to == SDP and latch.dropped == 20


def test_another_host_is_never_taken_however_long_it_sends() -> None:
    """RFC 7362 5 (hijacking): latch only to the caller's hosts."""
    latch = RtpLatch("198.51.100.7")
    latch.expect(SDP)
    assert feed(latch, ("203.0.113.66", 4000), 0, 50) == [False] * 50
    assert latch.send_to == SDP and latch.dropped == 50
    assert feed(latch, SDP, 9, 1) == [True]


def test_a_nat_source_is_latched_after_probation() -> None:
    """A caller behind a NAT sends from its public address, not its SDP's: after `probation` packets in a row
    from there our RTP goes back to it, and its audio is accepted from the packet that completed the probation."""
    latch = RtpLatch("198.51.100.7", probation=4)
    latch.expect(SDP)
    assert feed(latch, NAT, 65534, 6) == [False, False, False, True, True, True]  # sequence wraps: still in a row
    assert latch.send_to == NAT and latch.dropped == 3
    assert feed(latch, ("198.51.100.7", 31013), 0, 10) == [False] * 10  # one latch per address


def test_a_caller_behind_a_nat_no_proxy_anchored_is_latched_from_any_host() -> None:
    """A phone behind a home NAT calls through a proxy that relays only signalling: the INVITE comes from the
    proxy, the SDP names the phone's private address, and its audio comes from the NAT's public address, none of
    which we knew. The caller must be heard and hear us (RFC 7362 latching, as Asterisk's strictrtp and
    FreeSWITCH's auto-adjust do); a stray source is still kept out before and after."""
    latch = RtpLatch("203.0.113.5", probation=4)  # the proxy
    for private in (("192.168.1.20", 4000), ("10.1.2.3", 4000), ("172.20.0.9", 4000), ("100.64.7.7", 4000)):
        latch.expect(private)
        public = ("198.51.100.99", 40000)
        assert one(latch, ("198.51.100.66", 5000), 1) is False  # a stray packet does not start the latch
        assert feed(latch, public, 7, 6) == [False, False, False, True, True, True]
        assert latch.send_to == public
        assert feed(latch, ("198.51.100.66", 5000), 2, 10) == [False] * 10  # stray packets afterwards: dropped
        assert latch.send_to == public


def test_a_gap_in_the_sequence_or_a_new_ssrc_restarts_the_probation() -> None:
    latch = RtpLatch("198.51.100.7", probation=3)
    latch.expect(SDP)
    assert [one(latch, NAT, s) for s in (10, 11, 13, 14)] == [False] * 4  # 12 missing: counting from 13
    assert one(latch, NAT, 15, ssrc=0x999) is False  # another stream from the same source: it starts over
    assert [one(latch, NAT, s, ssrc=0x999) for s in (16, 17)] == [False, True]
    assert latch.send_to == NAT


def test_a_stranger_interleaving_its_packets_does_not_hold_the_caller_back() -> None:
    """Each source's probation is its own: a stranger's packets between the caller's neither restart nor count
    towards the caller's, so a stranger spraying the port cannot keep the caller from being latched."""
    latch = RtpLatch("198.51.100.7", probation=3)
    latch.expect(SDP)
    stranger = ("198.51.100.7", 5555)
    got = [(one(latch, NAT, 10 + i, at=i * 0.02), one(latch, stranger, 900 + 7 * i, ssrc=0x5EED, at=i * 0.02))
           for i in range(4)]
    assert got == [(False, False), (False, False), (True, False), (True, False)]
    assert latch.send_to == NAT


def test_the_sdp_address_takes_over_from_a_latched_nat_source() -> None:
    latch = RtpLatch("198.51.100.7", probation=2)
    latch.expect(SDP)
    assert feed(latch, NAT, 0, 2) == [False, True]
    assert feed(latch, SDP, 500, 1) == [True]
    assert latch.send_to == SDP
    assert feed(latch, NAT, 2, 5) == [False] * 5


def test_a_new_address_starts_learning_again_and_the_same_one_keeps_the_latch() -> None:
    """A re-INVITE that moves the media learns again; a session refresh or hold/resume naming the same address
    keeps the NAT source latched (our audio must not go to the private SDP address after every refresh)."""
    latch = RtpLatch("198.51.100.7", probation=2)
    latch.expect(SDP)
    feed(latch, NAT, 0, 2)
    latch.expect(SDP)
    assert latch.send_to == NAT and one(latch, NAT, 2)
    moved = ("192.0.2.20", 6000)
    latch.expect(moved)
    assert latch.send_to == moved
    assert one(latch, NAT, 3) is False  # learning again: a probation for the old source too
    assert feed(latch, moved, 40, 1) == [True]
    assert one(latch, SDP, 1) is False  # the old SDP address is no longer expected, and moved is heard


def test_port_zero_and_the_hold_address_are_never_taken() -> None:
    latch = RtpLatch("198.51.100.7", probation=1)
    latch.expect(("0.0.0.0", 4000))  # RFC 2543 hold: 0.0.0.0 is not a caller host
    assert one(latch, ("0.0.0.0", 4001), 1) is False
    assert one(latch, ("198.51.100.7", 0), 1) is False
    assert latch.send_to == ("0.0.0.0", 4000)
    assert one(latch, NAT, 1) is True  # the signalling host may still be latched


@pytest.mark.parametrize("bad", [{"probation": 0}, {"quiet_s": 0.0}, {"quiet_s": float("nan")}])
def test_probation_below_one_or_no_quiet_time_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RtpLatch("198.51.100.7", **bad)  # type: ignore[arg-type]


def test_the_callers_own_host_takes_a_nat_call_back_from_a_stranger_who_came_first() -> None:
    """A caller behind a NAT calls directly (its INVITE comes from the NAT, 198.51.100.7; its SDP names its private
    address). A stranger spraying the port before the caller's first packet passes the probation and is latched,
    as any source of such a caller may be; once the caller's own host has passed it too, the caller has the call
    and the stranger is dropped however long it goes on (old Asterisk's strictrtp kept the first source)."""
    latch = RtpLatch("198.51.100.7", probation=4)
    latch.expect(("192.168.1.20", 4000))
    stranger = ("203.0.113.66", 7000)
    assert feed(latch, stranger, 0, 5, ssrc=0x5EED) == [False, False, False, True, True]
    assert latch.send_to == stranger
    got = [(one(latch, stranger, 5 + i, 0x5EED, at=0.1 + i * 0.02), one(latch, NAT, 300 + i, at=0.1 + i * 0.02))
           for i in range(6)]
    assert got == [(True, False)] * 3 + [(True, True)] + [(False, True)] * 2  # the caller's 4th packet latches
    assert latch.send_to == NAT
    assert feed(latch, stranger, 11, 50, ssrc=0x5EED, at=5.0) == [False] * 50  # even once the caller is silent


def test_a_source_that_ranks_no_higher_takes_over_only_as_a_moved_caller() -> None:
    """RFC 3550 A.1: a NAT that gives the caller a new port mid-call carries on the caller's stream (its SSRC,
    the next sequence numbers) after the old port fell silent. A source that does not carry the stream on, or
    that sends while the latched source still talks, never takes the call."""
    latch = RtpLatch("203.0.113.5", probation=4, quiet_s=0.5)  # through a proxy: any host may be the caller's
    latch.expect(("10.1.2.3", 4000))
    caller, moved, stranger = ("198.51.100.99", 40000), ("198.51.100.99", 40002), ("198.51.100.66", 5000)
    assert feed(latch, caller, 100, 4) == [False, False, False, True]  # heard until 0.06 s
    assert feed(latch, stranger, 0, 10, ssrc=0x5EED, at=1.0) == [False] * 10  # silent caller, another stream
    assert feed(latch, moved, 104, 10, at=0.08) == [False] * 10  # the caller's stream on, while it still talks
    assert feed(latch, caller, 114, 1, at=0.3) == [True]
    assert feed(latch, moved, 5000, 10, at=2.0) == [False] * 10  # the same SSRC, but not its sequence
    assert feed(latch, moved, 120, 10, at=3.0) == [False] * 3 + [True] * 7  # moved, after the probation
    assert latch.send_to == moved
    assert feed(latch, caller, 115, 5, at=3.1) == [False] * 5  # the old port, late: dropped


def test_strangers_spraying_from_many_ports_do_not_push_the_callers_count_out() -> None:
    """At most MAX_CANDIDATES sources are counted; a new one pushes out the stalest of the lowest rank, so the
    caller's own host keeps its count while strangers' ports come and go."""
    latch = RtpLatch("198.51.100.7", probation=4)
    latch.expect(("192.168.1.20", 4000))
    for i in range(4):
        for port in range(MAX_CANDIDATES * 2):
            assert one(latch, ("203.0.113.66", 10000 + port + 100 * i), 7, ssrc=port) is False
        assert one(latch, NAT, 50 + i) is (i == 3)
    assert latch.send_to == NAT


def test_a_pbx_that_reanchors_the_media_with_a_new_ssrc_is_followed_after_the_probation() -> None:
    """A PBX transfers the call (or moves it to another media port) without a re-INVITE: its media now comes from
    another port of its host, with a new SSRC and sequence numbers of their own. After the old source has been
    quiet for quiet_s and the new stream passed the probation, it is the caller's audio and ours goes there (as
    Asterisk's strictrtp and FreeSWITCH's auto-adjust re-learn); it was dropped for the rest of the call. A stray
    packet or a short burst of another stream does not move the call, nor does one while the old source talks,
    nor one that ran beside the caller's stream before it ended (someone else's), nor one from a host the call
    does not know."""
    latch = RtpLatch("192.0.2.10", probation=4, quiet_s=0.5)
    latch.expect(SDP)
    assert feed(latch, SDP, 100, 50) == [True] * 50  # heard until 0.98 s
    moved = ("192.0.2.10", 4100)
    beside = ("192.0.2.10", 4200)  # a stream that ran beside the caller's, and goes on once it is quiet
    assert feed(latch, beside, 500, 100, ssrc=0x5EED, at=0.2) == [False] * 100
    assert feed(latch, moved, 9000, 10, ssrc=0xB0B, at=0.5) == [False] * 10  # while the old source talks
    assert feed(latch, ("203.0.113.66", 4000), 0, 20, ssrc=0x5EED, at=1.5) == [False] * 20  # another host
    assert one(latch, moved, 7, ssrc=0xBAD, at=1.6) is False  # a stray packet
    assert feed(latch, moved, 20, 3, ssrc=0xBAD, at=1.7) == [False] * 3  # a burst shorter than the probation
    assert latch.send_to == SDP
    assert feed(latch, moved, 30000, 10, ssrc=0xB0B, at=2.0) == [False] * 3 + [True] * 7
    assert latch.send_to == moved
    assert feed(latch, ("198.51.100.66", 5000), 0, 10, ssrc=0x5EED, at=3.0) == [False] * 10  # still strict


def test_once_the_media_moved_the_old_sdp_address_needs_the_probation_too() -> None:
    """After the latch followed the PBX's media to a new port and SSRC, one stray or spoofed packet from the old
    SDP address took our audio back there (it was still accepted at once, as the expected address) until the new
    stream had been quiet-timed back in, 0.5 s later. The old address is now one of the caller's hosts like any
    other: dropped while the new stream talks, and followed only as a move of its own (RFC 3550 A.1 probation).
    A re-INVITE naming an address trusts it again."""
    latch = RtpLatch("192.0.2.10", probation=4, quiet_s=0.5)
    latch.expect(SDP)
    assert feed(latch, SDP, 100, 50) == [True] * 50  # heard until 0.98 s
    moved = ("192.0.2.10", 4100)
    assert feed(latch, moved, 30000, 10, ssrc=0xB0B, at=2.0) == [False] * 3 + [True] * 7
    assert one(latch, SDP, 7, ssrc=0xBAD, at=2.2) is False  # the stray packet from the old address
    assert latch.send_to == moved
    assert feed(latch, moved, 30010, 10, ssrc=0xB0B, at=2.22) == [True] * 10
    assert feed(latch, SDP, 150, 10, at=2.3) == [False] * 10  # a burst from there while the new stream talks
    assert feed(latch, SDP, 900, 10, ssrc=0xD0D, at=4.0) == [False] * 3 + [True] * 7  # moved back: followed
    assert latch.send_to == SDP
    latch.expect(("192.0.2.20", 6000))
    assert one(latch, ("192.0.2.20", 6000), 1, at=5.0) is True  # a new SDP address is taken at once again


def test_a_delayed_offers_answer_keeps_the_source_latched_before_it() -> None:
    """A delayed offer: no address until the caller's answer in its ACK (the stand-in 0.0.0.0), while the caller
    talks from our offer on. Its NAT source, latched meanwhile, is kept when the answer names its private address:
    it had to pass the probation again (3 more packets dropped) and our first packets went to the private one."""
    latch = RtpLatch("198.51.100.7", probation=4)
    latch.expect(("0.0.0.0", 9))
    assert feed(latch, NAT, 100, 10) == [False] * 3 + [True] * 7
    latch.expect(("192.168.1.20", 4000))  # the ACK's answer
    assert latch.send_to == NAT
    assert feed(latch, NAT, 110, 5, at=0.2) == [True] * 5
    latch.expect(("192.0.2.20", 6000))  # a re-INVITE that moves the media still learns again
    assert latch.send_to == ("192.0.2.20", 6000)


def test_before_a_delayed_offers_answer_a_source_on_any_host_may_be_learnt() -> None:
    """No address named yet (the stand-in 0.0.0.0 of a delayed offer): a PBX's media from a host other than its
    INVITE's was dropped until the ACK. It is learnt after the probation, ranked last as a NAT caller's sources."""
    latch = RtpLatch("203.0.113.5", probation=4)  # the proxy
    latch.expect(("0.0.0.0", 9))
    media_server = ("198.51.100.99", 40000)
    assert feed(latch, media_server, 100, 6) == [False] * 3 + [True] * 3
    assert latch.send_to == media_server
    latch.expect(media_server)  # the ACK's answer names it
    assert feed(latch, ("198.51.100.66", 5000), 0, 10, ssrc=0x5EED, at=1.0) == [False] * 10  # strict from then on
