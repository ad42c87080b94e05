"""Our own requests in a SIP dialog (RFC 3261), where the bridge acts as a UAC: the BYE that ends a call and the
in-dialog OPTIONS that asks a held caller whether it is still there. Sans-I/O; the UA core (ua.py) drives it.

- Both go to the caller's remote target (ua_messages.py) in a new transaction, and are retransmitted (T1 doubling
  to T2; every T2 after a provisional response) until a final response, for at most 64*T1 = 32 s (17.1.2.2): a
  caller that answers 100 and then nothing is as gone as one that never answers. Only a response to our latest
  request of that method in the dialog (its CSeq) counts.
- Our BYE ends the call (CallEnded with our reason, RFC 3326 Reason in the BYE). Called while our 2xx awaits its
  ACK, `hang_up` ends the call at once but the BYE waits for that ACK or the 2xx's timeout (15). A BYE makes a
  pending keep-alive moot.
- `keepalive`: one OPTIONS at a time, on a confirmed call. No response within 32 s, or 408 / 481, means the
  caller's side of the dialog is gone, and the call ends with our BYE (12.2.1.2); any other response leaves it up.
"""

from __future__ import annotations

from collections.abc import Callable

from clients.sip.message import Response
from clients.sip.ua_call import T1, T2, TIMEOUT, Call, Outbox, Sent, transition
from clients.sip.ua_events import CallEnded, CallState, UaConfig
from clients.sip.ua_messages import build_request

__all__ = ["OwnRequests"]

S = CallState


class OwnRequests:
    """The BYE and OPTIONS we send in calls whose records the UA core keeps (see the module docstring)."""

    def __init__(self, config: UaConfig, out: Outbox, token: Callable[[], str]) -> None:
        self.config = config
        self._out = out
        self._token = token  # the UA core's: branches come from its rng, in the order of its calls

    def hang_up(self, call: Call, reason: str, now: float) -> None:
        """End an answered call from our side with BYE, saying `reason` (CallEnded and the BYE's Reason)."""
        if call.state in (S.ANSWERED, S.REANSWERED) and not call.hung_up:
            call.hung_up = reason
            self._out.events.append(CallEnded(call.handle, reason))
            return
        self.end_with_bye(call, "hangup", reason, now)

    def keepalive(self, call: Call, now: float) -> bool:
        """An in-dialog OPTIONS to a confirmed call's caller; False: nothing sent (one is pending, or the call is
        not confirmed)."""
        if call.state is not S.CONFIRMED or f"optionstimeout:{call.handle}" in call.timers:
            return False
        self._send(call, "OPTIONS", now)
        return True

    def end_with_bye(self, call: Call, event: str, reason: str | None, now: float) -> None:
        """BYE and, unless `reason` is None (the call was ended already, for `call.hung_up`), CallEnded."""
        transition(call, event)  # first: an illegal end changes nothing
        self._out.cancel(call, "retx")
        self._out.cancel(call, "timeout")
        if reason is not None:
            call.hung_up = reason
            self._out.events.append(CallEnded(call.handle, reason))
        self._send(call, "BYE", now)
        self._out.start(call, "forget", now + TIMEOUT)

    def on_response(self, call: Call, resp: Response, now: float) -> None:
        kind = resp.cseq.method.lower()
        sent = call.sent.get(kind)
        if sent is None or resp.cseq.number != sent.cseq:
            return
        if resp.status < 200:  # 17.1.2.2 Proceeding: resent every T2, and Timer F still ends a caller that stops
            sent.interval = T2
            return
        self._out.cancel(call, f"{kind}retx")
        self._out.cancel(call, f"{kind}timeout")
        if kind == "options" and resp.status in (408, 481):  # the caller has no such dialog (any more)
            self._caller_gone(call, f"{resp.status} to OPTIONS", now)

    def timer_fired(self, call: Call, kind: str, now: float) -> None:
        """One of our requests' timers: "byeretx", "optionsretx", "byetimeout" or "optionstimeout"."""
        if kind in ("byeretx", "optionsretx"):
            sent = call.sent[kind.removesuffix("retx")]
            self._out.send(sent.data, call.remote)
            sent.interval = min(sent.interval * 2, T2)
            self._out.start(call, kind, now + sent.interval)
        elif kind == "byetimeout":
            self._out.cancel(call, "byeretx")
        elif kind == "optionstimeout":  # our keep-alive went unanswered for 32 s: the caller is gone (12.2.1.2)
            self._out.cancel(call, "optionsretx")
            self._caller_gone(call, "no answer to OPTIONS", now)

    def _caller_gone(self, call: Call, why: str, now: float) -> None:
        if call.state in (S.CONFIRMED, S.REANSWERED) and not call.hung_up:  # not ended meanwhile
            self.hang_up(call, f"caller gone: {why}", now)

    def _send(self, call: Call, method: str, now: float) -> None:
        call.local_cseq += 1
        data = build_request(method, call.invite, target=call.target, local_tag=call.local_tag,
                             cseq=call.local_cseq, hostport=self.config.hostport, branch=self._token(),
                             user_agent=self.config.user_agent, reason=call.hung_up if method == "BYE" else None)
        kind = method.lower()
        if kind == "bye":  # a keep-alive still pending is moot
            self._out.cancel(call, "optionsretx")
            self._out.cancel(call, "optionstimeout")
        call.sent[kind] = Sent(data, call.local_cseq)
        self._out.send(data, call.remote)
        self._out.start(call, f"{kind}retx", now + T1)
        self._out.start(call, f"{kind}timeout", now + TIMEOUT)
