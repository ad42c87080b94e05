"""The final responses the UA core sends to an INVITE outside its call's own INVITE transaction (ua_invite.py keeps
one per call): 500 + Retry-After to one that comes while an earlier INVITE of the call is unanswered, 491 to one
while our 2xx to the last awaits its ACK (14.2), 481 to one for no dialog, 482 to a merged one (8.2.2.2), and a
refusal of the request checks (420, 416, 500 out of order) while the call is not confirmed. Sans-I/O.

- Each is an INVITE server transaction of its own (17.2.3) in Completed (17.2.1): resent on Timer G, T1 = 0.5 s
  doubling to T2 = 4 s, until its ACK (matched as the call's own, ua_transactions.acknowledges: by the INVITE's
  branch, or an RFC 2543 peer's by Call-ID, From tag, CSeq and our To tag) or Timer H, 64*T1 = 32 s. So a lost
  491 reaches the caller without its stack sending the INVITE again, and the call's own transaction goes on.
- A CANCEL that matches one while it is resent (it crossed our response, 9.1) is for a transaction that exists:
  `cancelled` gives the response's To tag for its 200 (9.2), and the refusal goes on until its ACK.
- Timer keys are "refusal:<n>"; one that fires after its ACK (cancelled, its callback already queued) is ignored.
  At most `limit` are resent at a time, the oldest given up first (a flood of INVITEs cannot grow them unbounded).
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.sip.message import Request
from clients.sip.ua_call import T1, T2, TIMEOUT, Outbox
from clients.sip.ua_events import Addr, CancelTimer, StartTimer
from clients.sip.ua_transactions import acknowledges, cancels, tag

__all__ = ["InviteRefusals"]


@dataclass(slots=True)
class _Refusal:
    invite: Request
    to_tag: str  # the response's
    response: bytes
    addr: Addr
    give_up: float  # Timer H
    interval: float = T1


class InviteRefusals:
    """The INVITE refusals being resent until their ACK (see the module rules), through the UA core's outbox."""

    def __init__(self, out: Outbox, limit: int) -> None:
        self._out = out
        self._limit = limit
        self._live: dict[str, _Refusal] = {}  # by timer key, oldest first
        self._count = 0

    def resend_until_ack(self, invite: Request, response: bytes, to_tag: str, addr: Addr, now: float) -> None:
        """`response`, just sent to `invite` with `to_tag` added unless its To had one, is to be resent until its
        ACK."""
        self._count += 1
        timer = f"refusal:{self._count}"
        self._live[timer] = _Refusal(invite, tag(invite, "To") or to_tag, response, addr, now + TIMEOUT)
        self._out.timers.append(StartTimer(timer, now + T1))
        if len(self._live) > self._limit:
            self._stop(next(iter(self._live)))

    def acknowledged(self, ack: Request) -> bool:
        """Whether `ack` acknowledges one of these refusals (then no longer resent)."""
        timer = next((timer for timer, refusal in self._live.items()
                      if acknowledges(ack, refusal.invite, refusal.to_tag)), None)
        if timer is not None:
            self._stop(timer)
        return timer is not None

    def cancelled(self, cancel: Request) -> str | None:
        """The To tag of the refusal whose INVITE `cancel` is for (its 200 carries it, 9.2), or None for none."""
        return next((refusal.to_tag for refusal in self._live.values() if cancels(cancel, refusal.invite)), None)

    def timer_fired(self, timer: str, now: float) -> None:
        refusal = self._live.get(timer)
        if refusal is None:
            return
        if now >= refusal.give_up:  # Timer H: no ACK came
            del self._live[timer]
            return
        self._out.send(refusal.response, refusal.addr)
        refusal.interval = min(refusal.interval * 2, T2)
        self._out.timers.append(StartTimer(timer, min(now + refusal.interval, refusal.give_up)))

    def _stop(self, timer: str) -> None:
        del self._live[timer]
        self._out.timers.append(CancelTimer(timer))
