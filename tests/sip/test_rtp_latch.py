"""The RTP source policy of a call (clients/sip/rtp_latch.py): symmetric RTP (RFC 4961) with latching (RFC 7362),
strict as Asterisk's strictrtp. Each test feeds packets (source, sequence number) and checks what is accepted and
where our RTP goes."""

from __future__ import annotations

import pytest

from clients.sip.rtp_latch import RtpLatch

SDP = ("192.0.2.10", 4000)  # the address in the caller's SDP
NAT = ("198.51.100.7", 31012)  # the caller's NAT: its INVITE came from 198.51.100.7


def feed(latch: RtpLatch, source: tuple[str, int], first_seq: int, n: int) -> list[bool]:
    return [latch.receive(source, (first_seq + i) & 0xFFFF) for i in range(n)]


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
        assert latch.receive(("198.51.100.66", 5000), 1) is False  # a stray packet does not start the latch
        assert feed(latch, public, 7, 6) == [False, False, False, True, True, True]
        assert latch.send_to == public
        assert feed(latch, ("198.51.100.66", 5000), 2, 10) == [False] * 10  # stray packets afterwards: dropped
        assert latch.send_to == public


def test_a_gap_in_the_sequence_or_another_source_restarts_the_probation() -> None:
    latch = RtpLatch("198.51.100.7", probation=3)
    latch.expect(SDP)
    assert [latch.receive(NAT, s) for s in (10, 11, 13, 14)] == [False] * 4  # 12 missing: counting from 13
    assert latch.receive(("198.51.100.7", 5555), 15) is False  # another port interleaved: it starts over
    assert [latch.receive(NAT, s) for s in (15, 16, 17)] == [False, False, True]
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
    assert latch.send_to == NAT and latch.receive(NAT, 2)
    moved = ("192.0.2.20", 6000)
    latch.expect(moved)
    assert latch.send_to == moved
    assert latch.receive(NAT, 3) is False  # learning again: a probation for the old source too
    assert feed(latch, moved, 40, 1) == [True]
    assert latch.receive(SDP, 1) is False  # the old SDP address is no longer expected, and moved is heard


def test_port_zero_and_the_hold_address_are_never_taken() -> None:
    latch = RtpLatch("198.51.100.7", probation=1)
    latch.expect(("0.0.0.0", 4000))  # RFC 2543 hold: 0.0.0.0 is not a caller host
    assert latch.receive(("0.0.0.0", 4001), 1) is False
    assert latch.receive(("198.51.100.7", 0), 1) is False
    assert latch.send_to == ("0.0.0.0", 4000)
    assert latch.receive(NAT, 1) is True  # the signalling host may still be latched


def test_probation_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        RtpLatch("198.51.100.7", probation=0)
