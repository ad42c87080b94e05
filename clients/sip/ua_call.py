"""What the parts of the SIP user agent core share: a call's record, the SIP timers, and the outbox the shell
drains (datagrams, call events, timer actions), and whether a request is in a call's dialog. ua.py answers the
caller's requests, its INVITEs and ACKs through ua_invite.py and the others through ua_non_invite.py; ua_requests.py
sends ours.
Sans-I/O: plain data and bookkeeping, no clock, no socket.

- Timers: T1 = 0.5 s doubling to T2 = 4 s between retransmissions, and 64*T1 = 32 s for giving up (17.1.2,
  17.2.1). A timer's key is "<kind>:<call handle>"; the call remembers its live keys, so a timer cancelled while
  its callback was already queued is ignored when it fires.
- Per call: `{state: {event: next state}}` in TRANSITIONS (ua_events.py); `transition` raises LocalProtocolError
  for an event missing from it and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clients.sip.errors import LocalProtocolError
from clients.sip.message import CSeq, Request
from clients.sip.sdp import Negotiated, SessionDescription
from clients.sip.session_timer import SessionTimer
from clients.sip.ua_events import (
    TRANSITIONS, Addr, CallEvent, CallState, CancelTimer, Datagram, StartTimer, TimerAction,
)

__all__ = ["T1", "T2", "TIMEOUT", "Call", "Outbox", "Sent", "in_dialog", "live_dialog", "transition"]

T1 = 0.5
T2 = 4.0
TIMEOUT = 64 * T1


@dataclass
class Sent:
    """A request of ours in the dialog, retransmitted (T1 doubling to T2) until any response, for 32 s (17.1.2)."""

    data: bytes
    cseq: int
    interval: float = T1


@dataclass
class Call:
    handle: str
    invite: Request  # the INVITE that created the dialog
    remote: Addr
    local_tag: str
    transaction: Request  # the INVITE (first or re-INVITE) that `last_response` answers
    state: CallState = CallState.PROCEEDING
    offer: SessionDescription | None = None  # the INVITE's offer (or its stand-in), answered by answer()
    media: Negotiated | None = None
    rtp_port: int = 0
    sdp_session: int = 0
    sdp_version: int = 1
    local_sdp: bytes = b""  # our last SDP answer
    awaiting_answer: bool = False  # our 2xx carried an offer (a delayed-offer INVITE): the ACK brings the answer
    early_bye: bool = False  # a BYE ended the call before the answer (its retransmissions get 200 again)
    hung_up: str | None = None  # why we ended the call (our BYE's Reason); set while our 2xx awaits its ACK, the
    # BYE waits for that ACK (15)
    last_response: bytes = b""
    interval: float = T1
    local_cseq: int = 0
    sent: dict[str, Sent] = field(default_factory=dict)  # our BYE and OPTIONS by timer prefix ("bye", "options")
    target: str | None = None  # the Contact of the last re-INVITE that had one: where our BYE goes (12.2.2)
    session_timer: SessionTimer | None = None  # of the last INVITE or re-INVITE answered 2xx (RFC 4028)
    reinvite: Request | None = None  # the last re-INVITE unless answered 2xx: a CANCEL of it gets 200 (9.2)
    remote_cseq: CSeq | None = None  # the caller's highest in-dialog request but ACK/CANCEL (12.2.2's remote CSeq)
    timers: set[str] = field(default_factory=set)


class Outbox:
    """What the core has for the shell since it was last drained."""

    def __init__(self) -> None:
        self.datagrams: list[Datagram] = []
        self.events: list[CallEvent] = []
        self.timers: list[TimerAction] = []

    def send(self, data: bytes, addr: Addr) -> None:
        self.datagrams.append(Datagram(data, addr))

    def start(self, call: Call, kind: str, deadline: float) -> None:
        key = f"{kind}:{call.handle}"
        call.timers.add(key)
        self.timers.append(StartTimer(key, deadline))

    def cancel(self, call: Call, kind: str) -> None:
        key = f"{kind}:{call.handle}"
        if key in call.timers:
            call.timers.discard(key)
            self.timers.append(CancelTimer(key))


def in_dialog(call: Call | None, req: Request) -> bool:
    """`req` carries the To tag of `call`'s dialog (of any state)."""
    return call is not None and req.to.tag == call.local_tag


def live_dialog(call: Call | None, req: Request) -> bool:
    """`req` is in a dialog that exists now (early or confirmed; not ended, nor refused before it began)."""
    return call is not None and in_dialog(call, req) and call.state not in (CallState.REJECTED, CallState.ENDED)


def transition(call: Call, event: str) -> None:
    nxt = TRANSITIONS[call.state].get(event)
    if nxt is None:
        raise LocalProtocolError(f"{event!r} is not allowed in state {call.state.value} ({call.handle})")
    call.state = nxt
