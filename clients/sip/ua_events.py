"""The SIP user agent core's vocabulary: per-call states and their transitions, the events and timer actions it
hands to the shell, and its configuration. Plain data, no behaviour (ua.py is the state machine)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from clients.sip.addresses import Addr
from clients.sip.sdp import Negotiated

__all__ = ["CallConfirmed", "CallEnded", "CallEvent", "CallState", "CancelTimer", "Datagram", "DtmfReceived",
           "IncomingCall", "MediaChanged", "Refused", "StartTimer", "TimerAction", "TRANSITIONS", "UaConfig"]


class CallState(enum.Enum):
    PROCEEDING = "proceeding"  # INVITE in, 100/180 out: waiting for answer() or reject()
    ANSWERED = "answered"      # 200 OK sent and retransmitted: waiting for ACK
    CONFIRMED = "confirmed"    # ACK in: the call is up
    REANSWERED = "reanswered"  # a re-INVITE's 200 OK sent and retransmitted: waiting for its ACK; the call is up
    REJECTED = "rejected"      # a final non-2xx (487/488/503) retransmitted until ACK
    ENDED = "ended"            # over; remembered for 64*T1 to answer retransmissions


S = CallState
TRANSITIONS: dict[CallState, dict[str, CallState]] = {
    S.PROCEEDING: {"answer": S.ANSWERED, "reject": S.REJECTED, "cancel": S.REJECTED, "bye": S.REJECTED},
    S.ANSWERED: {"ack": S.CONFIRMED, "bye": S.ENDED, "hangup": S.ENDED, "no_ack": S.ENDED},
    S.CONFIRMED: {"bye": S.ENDED, "hangup": S.ENDED, "reinvite": S.REANSWERED},
    S.REANSWERED: {"ack": S.CONFIRMED, "bye": S.ENDED, "hangup": S.ENDED, "no_ack": S.ENDED},
    S.REJECTED: {"ack": S.ENDED, "no_ack": S.ENDED},
    S.ENDED: {},
}


@dataclass(frozen=True, slots=True)
class Datagram:
    data: bytes
    addr: Addr


@dataclass(frozen=True, slots=True)
class StartTimer:
    key: str
    deadline: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    key: str


@dataclass(frozen=True, slots=True)
class IncomingCall:
    call: str  # our handle, used in answer()/reject()/hangup()
    sip_call_id: str
    caller: str  # the From URI
    remote: Addr  # where the INVITE came from
    media: Negotiated


@dataclass(frozen=True, slots=True)
class CallConfirmed:
    call: str


@dataclass(frozen=True, slots=True)
class MediaChanged:
    """A re-INVITE was accepted: send to the new address, in the new direction, from now on."""

    call: str
    media: Negotiated


@dataclass(frozen=True, slots=True)
class CallEnded:
    call: str
    reason: str  # "remote hangup", "cancelled", "rejected", "no ACK", "caller gone: ...", or hangup()'s reason


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    call: str
    digit: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The core refused a new call's INVITE (full, no usable offer, a required extension) or a re-INVITE's offer
    (the call goes on as it was): for the operator's log, since no call event tells of it otherwise."""

    sip_call_id: str
    caller: str  # the From URI
    status: int
    why: str


CallEvent = IncomingCall | CallConfirmed | MediaChanged | CallEnded | DtmfReceived | Refused
TimerAction = StartTimer | CancelTimer


@dataclass(frozen=True, slots=True, kw_only=True)
class UaConfig:
    host: str = "127.0.0.1"  # our address in Via/Contact/SDP
    port: int = 5060
    user: str = "agent"
    user_agent: str = "stepaudio-rt sip-bridge"
    max_calls: int = 16
    max_message_bytes: int = 8192
    max_transactions: int = 4096  # final responses kept for retransmitted requests (ua_transactions.py)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536 or self.max_calls < 1 or self.max_message_bytes < 512 or \
                self.max_transactions < 1:
            raise ValueError("invalid UaConfig")

    @property
    def hostport(self) -> str:
        """Where we are, for Via and Contact."""
        return f"{self.host}:{self.port}"
