"""Which sources may feed one call's audio, and where our RTP goes: symmetric RTP with latching. Pure.

A call's RTP port is open to anyone who learns it. Without a policy any datagram with the right payload type
reaches the agent as the caller's voice, and a latching bridge can be drawn to send the agent's audio elsewhere.
The policy follows what PBXs do (Asterisk's strictrtp: learn the source, then drop packets from any other; RFC
7362 latching, hosted NAT traversal, with its advice to latch only to plausible sources and only after a few
packets), with the caller's signalled address (its SDP) always preferred:

Rules:
- `expect(address)` names the caller's media address from its SDP (at the answer, and after a re-INVITE or a
  delayed offer's ACK). A new address starts learning again; the same one again (a session refresh, hold,
  resume) keeps what was latched, so a NAT caller's audio does not go astray after each refresh. An unspecified
  address (the RFC 2543 hold, c=0.0.0.0, or audio removed) after a real one changes nothing either: nothing is
  sent meanwhile, and a resume to where the caller was finds the NAT source still latched. The first real
  address after an unspecified one (a delayed offer's answer in the ACK: the caller may talk from our offer on)
  keeps what was latched before it too: a NAT caller's source is not learnt twice, losing its audio and ours.
- The caller's hosts: the host its INVITE came from (a NAT's public address) and every SDP address this call
  has named (except the hold address 0.0.0.0). Packets from any other host are dropped, unless the expected
  address is a private one (RFC 1918, or RFC 6598 carrier-grade NAT space): then the caller is behind a NAT
  that no proxy on the path anchored (the INVITE came from the proxy, the audio comes from the NAT's public
  address, and neither is in the SDP), and like Asterisk's strictrtp and FreeSWITCH's auto-adjust we may learn
  a source on any host, ranked last (below). So we may too while no address was named yet (a delayed offer
  before its answer, whose media may come from a host other than its INVITE's: a proxy in front of a PBX). A
  routable expected address is reached directly, so a stranger there is only ever a hijacker (RFC 7362 5).
- A packet from the expected address is accepted and latches at once.
- Any other source of those hosts is a candidate (behind a NAT, RFC 4961 symmetric RTP: the caller sends from
  where it wants to receive): it is dropped until `probation` packets in a row came from it with one SSRC and
  consecutive sequence numbers (RFC 3550 A.1's probation: a stray packet or a short burst does not take the
  call). Each source is counted on its own, so a stranger's packets interleaved with the caller's do not keep
  the caller from ever passing; at most MAX_CANDIDATES are counted, the stalest of the lowest rank (below) going
  first, so a stranger spraying from many ports cannot push the caller's count out.
- Sources rank: the expected address, then the caller's hosts, then any other host. A candidate that passed is
  latched when none is, or when it ranks above the latched source: a stranger who sprays a NAT caller's port
  first is latched only until the caller's own host (its INVITE's, a NAT's public address) has passed the
  probation; from then on the stranger is dropped. (Old Asterisk's strictrtp let whoever came first keep the
  call's audio for good.) The expected address, once heard, takes over at once, until the latch has followed a
  move (below): from then on the caller's media is elsewhere, and the old SDP address is one of the caller's
  hosts like any other, on probation, so that one stray or spoofed packet from there cannot take our audio back
  (it did, for quiet_s). A new expected address (a re-INVITE) is trusted again.
- A candidate that ranks no higher takes over only once the latched source has sent nothing for `quiet_s`, and
  only as one of two moves of the caller's own media:
  - its NAT moved it to a new port: the candidate goes on with its stream (the same SSRC, sequence numbers at
    most MAX_DROPOUT past the last one heard, RFC 3550 A.1);
  - its PBX re-anchored it without a re-INVITE (a transfer, the call moved to another media port): a new stream
    (another SSRC) from the latched source's host or one of the caller's hosts, that began as the latched one
    ended (at most `quiet_s` before its last packet: a stream that ran beside the caller's is someone else's).
    Asterisk's strictrtp and FreeSWITCH's auto-adjust learn such a source after a few packets; without it the
    agent heard nothing for the rest of the call and its audio went to the old port.
  A stranger on another host cannot take the call; one who cannot see the caller's packets cannot guess its
  stream; and none can while the caller talks, nor with a stray packet or a short burst (the probation).
- Port 0 and the address 0.0.0.0 are never a source (no one can be sent to them).
- Our RTP goes to the latched source, else to the expected address; `send_to` says where.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from clients.sip.addresses import Addr, parse_ip

__all__ = ["MAX_CANDIDATES", "MAX_DROPOUT", "RtpLatch"]

MAX_CANDIDATES = 8  # sources on probation at a time
MAX_DROPOUT = 3000  # RFC 3550 A.1: a sequence number this far past the last one still continues the stream
# Ranks, best first; _NEVER: a source that may not feed the call at all.
_EXPECTED, _CALLER_HOST, _ANY_HOST, _NEVER = range(4)


@dataclass(slots=True)
class _Stream:
    """The last packet heard from one source, and how many came before it in a row (one SSRC, no gap) since
    `began`."""

    ssrc: int
    sequence: int
    heard: float
    began: float
    in_a_row: int = 1

    def continued_by(self, ssrc: int, sequence: int) -> bool:
        return ssrc == self.ssrc and sequence == (self.sequence + 1) & 0xFFFF


class RtpLatch:
    """The source policy of one call's RTP (see the module rules)."""

    def __init__(self, signalling_host: str, *, probation: int = 4, quiet_s: float = 0.5) -> None:
        """`signalling_host`: where the caller's INVITE came from; `probation`: packets in a row a source other
        than the expected address must send before it is latched (Asterisk's default is 4); `quiet_s`: how long
        the latched source must have been silent before a source that does not rank above it may take over."""
        if probation < 1:
            raise ValueError("probation must be at least 1")
        if not quiet_s > 0:
            raise ValueError("quiet_s must be positive")
        self.probation = probation
        self.quiet_s = quiet_s
        self.dropped = 0  # packets refused for their source
        self._hosts = {signalling_host}
        self._expected: Addr | None = None
        self._latched: Addr | None = None
        self._stream: _Stream | None = None  # the latched source's
        self._candidates: dict[Addr, _Stream] = {}  # in the order they were last heard, stalest first
        self._moved = False  # a move was followed since the expected address was named: it is trusted no more

    @property
    def send_to(self) -> Addr | None:
        """Where our RTP goes: the latched source, else the expected address (None before the first)."""
        return self._latched or self._expected

    def expect(self, remote: Addr) -> None:
        """The caller's SDP names `remote` (an IP literal) as its media address."""
        if not _unspecified(remote[0]):
            self._hosts.add(remote[0])
        elif self._expected is not None:
            return  # a hold: where the caller resumes to is compared with where it was before it
        if remote == self._expected:
            return
        if self._expected is not None and _unspecified(self._expected[0]):
            # The first address after none (a delayed offer's answer, or a call offered on hold): what was latched
            # meanwhile is the caller's, its NAT's public source, and is kept as a refresh keeps it.
            self._expected = remote
            return
        self._expected, self._moved = remote, False
        self._latched, self._stream = None, None
        self._candidates.clear()

    def receive(self, source: Addr, sequence: int, ssrc: int, now: float) -> bool:
        """A well-formed RTP packet (`sequence`, `ssrc`) came from `source` at `now` (monotonic seconds): whether
        its payload is the caller's."""
        rank = self._rank(source)
        if source == self._latched or rank == _EXPECTED:
            self._latch(source, _Stream(ssrc, sequence, now, now))
            return True
        if rank != _NEVER:
            candidate = self._probe(source, sequence, ssrc, now)
            if self._takes_over(source, rank, candidate, now):
                self._latch(source, candidate)
                return True
        self.dropped += 1
        return False

    def _rank(self, source: Addr) -> int:
        if source == self._expected and not self._moved:
            return _EXPECTED
        if source[1] == 0 or _unspecified(source[0]):
            return _NEVER
        if source[0] in self._hosts:
            return _CALLER_HOST
        if self._expected is None or not (_behind_nat(self._expected[0]) or _unspecified(self._expected[0])):
            return _NEVER
        return _ANY_HOST

    def _probe(self, source: Addr, sequence: int, ssrc: int, now: float) -> _Stream:
        last = self._candidates.pop(source, None)  # put back last: the dict stays in the order sources were heard
        continued = last is not None and last.continued_by(ssrc, sequence)
        in_a_row, began = (last.in_a_row + 1, last.began) if last is not None and continued else (1, now)
        if len(self._candidates) >= MAX_CANDIDATES:  # max() picks the first of the lowest rank: its stalest
            del self._candidates[max(self._candidates, key=self._rank)]
        self._candidates[source] = _Stream(ssrc, sequence, now, began, in_a_row)
        return self._candidates[source]

    def _takes_over(self, source: Addr, rank: int, candidate: _Stream, now: float) -> bool:
        if candidate.in_a_row < self.probation:
            return False
        if self._latched is None or rank < self._rank(self._latched):
            return True
        if not self._moved_to(source, candidate, now):
            return False
        self._moved = True
        return True

    def _moved_to(self, source: Addr, candidate: _Stream, now: float) -> bool:
        """Whether `candidate`, of a source that ranks no higher than the latched one, is the caller's media moved."""
        latched = self._stream
        assert latched is not None and self._latched is not None  # set together
        if now - latched.heard < self.quiet_s:
            return False
        if candidate.ssrc != latched.ssrc:  # a new stream: re-anchored where the caller's media may come from
            known_host = source[0] in self._hosts or source[0] == self._latched[0]
            return known_host and candidate.began >= latched.heard - self.quiet_s
        return 0 < (candidate.sequence - latched.sequence) & 0xFFFF <= MAX_DROPOUT

    def _latch(self, source: Addr, stream: _Stream) -> None:
        self._latched, self._stream = source, stream
        self._candidates.pop(source, None)


# Kamailio nathelper's nat_uac_test flag 8: an SDP address in these is behind a NAT. (Python's is_private also
# counts loopback and the documentation ranges, which a caller can be reached at directly.)
_NAT_SPACES = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                      "100.64.0.0/10"))


def _behind_nat(host: str) -> bool:
    address = parse_ip(host)
    return address is not None and any(address in net for net in _NAT_SPACES)


def _unspecified(host: str) -> bool:
    address = parse_ip(host)
    return address is not None and address.is_unspecified
