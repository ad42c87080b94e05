"""Which sources may feed one call's audio, and where our RTP goes: symmetric RTP with latching. Pure.

A call's RTP port is open to anyone who learns it. Without a policy any datagram with the right payload type
reaches the agent as the caller's voice, and a latching bridge can be drawn to send the agent's audio elsewhere.
The policy follows what PBXs do (Asterisk's strictrtp: learn the source, then drop packets from any other; RFC
7362 latching, hosted NAT traversal, with its advice to latch only to plausible sources and only after a few
packets), with the caller's signalled address (its SDP) always preferred:

Rules:
- `expect(address)` names the caller's media address from its SDP (at the answer, and after a re-INVITE or a
  delayed offer's ACK). A new address starts learning again; the same one again (a session refresh, hold,
  resume) keeps what was latched, so a NAT caller's audio does not go astray after each refresh.
- The caller's hosts: the host its INVITE came from (a NAT's public address) and every SDP address this call
  has named (except the hold address 0.0.0.0). Packets from any other host are dropped, unless the expected
  address is a private one (RFC 1918, or RFC 6598 carrier-grade NAT space): then the caller is behind a NAT
  that no proxy on the path anchored (the INVITE came from the proxy, the audio comes from the NAT's public
  address, and neither is in the SDP), and like Asterisk's strictrtp and FreeSWITCH's auto-adjust we learn the
  first source from any host that passes the probation below. A routable expected address is reached directly,
  so a stranger there is only ever a hijacker (RFC 7362 5).
- A packet from the expected address is accepted and latches at once; from then on (until the next new
  address) packets from every other source are dropped.
- Until then, a packet from another port of one of the caller's hosts, or from any host as above (behind a
  NAT, RFC 4961 symmetric RTP: the caller sends from where it wants to receive) is a candidate: it is dropped
  until `probation` packets in a row came from that source with consecutive sequence numbers (a stray packet
  or a short burst does not take the call); the packet that completes the probation is accepted and that source
  latched. Its audio is accepted and ours goes there until the expected address is heard, which then takes
  over.
- Port 0 is never a source (no one can be sent to it).
- Our RTP goes to the latched source, else to the expected address; `send_to` says where.
"""

from __future__ import annotations

import ipaddress

__all__ = ["RtpLatch"]

Addr = tuple[str, int]


class RtpLatch:
    """The source policy of one call's RTP (see the module rules)."""

    def __init__(self, signalling_host: str, *, probation: int = 4) -> None:
        """`signalling_host`: where the caller's INVITE came from; `probation`: packets in a row a source other
        than the expected address must send before it is latched (Asterisk's default is 4)."""
        if probation < 1:
            raise ValueError("probation must be at least 1")
        self.probation = probation
        self.dropped = 0  # packets refused for their source
        self._hosts = {signalling_host}
        self._expected: Addr | None = None
        self._latched: Addr | None = None
        self._candidate: tuple[Addr, int, int] | None = None  # source, its last sequence number, packets in a row

    @property
    def send_to(self) -> Addr | None:
        """Where our RTP goes: the latched source, else the expected address (None before the first)."""
        return self._latched or self._expected

    def expect(self, remote: Addr) -> None:
        """The caller's SDP names `remote` (an IP literal) as its media address."""
        if not _unspecified(remote[0]):
            self._hosts.add(remote[0])
        if remote == self._expected:
            return
        self._expected = remote
        self._latched = None
        self._candidate = None

    def receive(self, source: Addr, sequence: int) -> bool:
        """A well-formed RTP packet with `sequence` came from `source`: whether its payload is the caller's."""
        if source == self._latched:
            return True
        if source == self._expected:
            self._latched = source
            self._candidate = None
            return True
        if self._latched is not None or source[1] == 0 or not self._may_latch(source[0]):  # one latch per address
            self.dropped += 1
            return False
        return self._probe(source, sequence)

    def _may_latch(self, host: str) -> bool:
        return host in self._hosts or (self._expected is not None and _behind_nat(self._expected[0]))

    def _probe(self, source: Addr, sequence: int) -> bool:
        if self._candidate is not None and self._candidate[0] == source \
                and sequence == (self._candidate[1] + 1) & 0xFFFF:
            in_a_row = self._candidate[2] + 1
        else:  # a new candidate, or a gap in its sequence: start counting again
            in_a_row = 1
        if in_a_row < self.probation:
            self._candidate = (source, sequence, in_a_row)
            self.dropped += 1
            return False
        self._latched, self._candidate = source, None
        return True


# Kamailio nathelper's nat_uac_test flag 8: an SDP address in these is behind a NAT. (Python's is_private also
# counts loopback and the documentation ranges, which a caller can be reached at directly.)
_NAT_SPACES = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                      "100.64.0.0/10"))


def _behind_nat(host: str) -> bool:
    address = _ip(host)
    return address is not None and any(address in net for net in _NAT_SPACES)


def _unspecified(host: str) -> bool:
    address = _ip(host)
    return address is not None and address.is_unspecified


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
