"""The caller's non-INVITE requests to a call, where the bridge answers as a UAS (RFC 3261 17.2.2): CANCEL, BYE,
OPTIONS and INFO. Sans-I/O; the UA core (ua.py) finds the call a request belongs to (or none), refuses what is out
of order (500, 12.2.2) or requires an extension (420), and hands the rest here.

- CANCEL (matching the INVITE's transaction and headers, ua_transactions.cancels: its branch from another
  sent-by is no match) -> 200 OK, and while the INVITE is unanswered also 487 Request Terminated for it (9.2).
  So does one of the last re-INVITE, answered at once: after a non-2xx (488, 491, ...) its
  transaction lives on and the CANCEL gets 200 (and no effect); a 2xx ended it. So does one of an INVITE refused
  in a transaction of its own (ua_refusals.py: 491, 481, 400, ...) while that refusal is resent, with its To
  tag. Any other CANCEL -> 481.
- BYE in a dialog -> 200 OK and CallEnded; in an early dialog (the To tag of our 180, before the answer: the
  caller gave up, 15) the INVITE also gets 487 Request Terminated (15.1.2). A retransmitted BYE after the end
  gets 200 OK again (the ended call is remembered for 32 s); a BYE for no dialog -> 481.
- OPTIONS -> 200 OK with Allow, Supported (ua_messages.py), Accept (every body type we read: SDP, multipart, INFO's
  DTMF, body.py) and, unless its Accept leaves SDP out, our capabilities in SDP (RFC 3261 11.2, RFC 3264 9: the
  codecs we take), or while the core says we are busy (`max_calls` calls live, or the agent server down as the
  shell last saw it) the 503 + Retry-After an INVITE would get (11.2: a proxy that probes with OPTIONS then routes
  elsewhere); an in-dialog one (a To tag: a PBX's or proxy's dialog keep-alive) for a dialog that does not exist,
  or no longer does, -> 481 (12.2.2), so the peer tears down a call we have lost.
- INFO in a live dialog -> 200 OK, and a DtmfReceived event per key its application/dtmf-relay or
  application/dtmf body carries (body.py); in no live dialog -> 481. An INFO whose CSeq is not above the
  caller's last request's reports no key: of the same CSeq in another transaction (a peer that does not keep its
  branch when it sends again) it gets 200, below it 500. (A retransmission in its transaction never comes here:
  the core answers it from ua_transactions.py.)
  One whose body is of another type, which we cannot read (body.py), gets 415 with an Accept of the DTMF types
  (8.2.3: not OPTIONS' Accept, whose SDP and multipart an INFO is not read in); one whose
  DTMF body names no key (Signal=Z, a dtmf-relay body without Signal) 400 with a Warning saying why.
"""

from __future__ import annotations

from collections.abc import Callable

from clients.sip.body import ACCEPT, INFO_ACCEPT, accepts_sdp, dtmf_keys, unread_body
from clients.sip.errors import RemoteProtocolError
from clients.sip.message import Request
from clients.sip.sdp import capabilities
from clients.sip.ua_call import TIMEOUT, Call, Outbox, in_dialog, live_dialog, transition
from clients.sip.ua_events import Addr, CallEnded, CallState, DtmfReceived
from clients.sip.ua_invite import InviteServer
from clients.sip.ua_messages import ADVERTISED, Extra, Responses
from clients.sip.ua_transactions import ServerTransactions, cancels

__all__ = ["NonInviteServer"]

S = CallState


class NonInviteServer:
    """Answers CANCEL, BYE, OPTIONS and INFO for calls whose records the UA core keeps (see the module rules)."""

    def __init__(self, out: Outbox, responses: Responses, invites: InviteServer, token: Callable[[], str],
                 transactions: ServerTransactions) -> None:
        self._out = out
        self._responses = responses
        self._transactions = transactions  # every final response is kept there for the request's retransmissions
        self._invites = invites  # for the 487 that a CANCEL or an early BYE gets the INVITE
        self._token = token  # the UA core's: tags come from its rng, in the order of its calls

    def reply(self, call: Call | None, req: Request, addr: Addr, status: int, now: float, extra: Extra = (),
              body: bytes = b"", to_tag: str | None = None) -> bytes:
        """A final response to `req`, whose call (by Call-ID and From tag) is `call`, kept for its retransmissions
        (ua_transactions.py): with `to_tag`, else in its dialog with the dialog's tag, else with a tag of its own;
        `body`, when given, is SDP. Returns the response."""
        if to_tag is None:
            to_tag = call.local_tag if call is not None and req.to.tag == call.local_tag else self._token()
        response = self._responses.build(req, status, addr, to_tag=to_tag, body=body, extra=extra)
        self._transactions.record(req, response, now)
        self._out.send(response, addr)
        return response

    def cancel(self, call: Call | None, req: Request, addr: Addr, now: float, refused: str | None) -> None:
        """`refused`: the To tag of an INVITE refusal beside the call's transaction that `req` is for, if any."""
        if call is None or not _cancels(call, req):
            self.reply(call, req, addr, 481 if refused is None else 200, now, to_tag=refused)
            return
        self.reply(call, req, addr, 200, now, to_tag=call.local_tag)
        if call.state is S.PROCEEDING:
            transition(call, "cancel")
            self._invites.final(call, 487, now)
            self._out.events.append(CallEnded(call.handle, "cancelled"))

    def bye(self, call: Call | None, req: Request, addr: Addr, now: float) -> None:
        if not in_dialog(call, req) or call is None or (call.state is S.REJECTED and not call.early_bye):
            self.reply(call, req, addr, 481, now)
            return
        self.reply(call, req, addr, 200, now)
        if call.state in (S.ENDED, S.REJECTED):
            return  # retransmitted BYE, or BYEs crossed
        if call.state is S.PROCEEDING:  # an early dialog: the INVITE is still pending
            call.early_bye = True
            transition(call, "bye")
            self._invites.final(call, 487, now)
            self._out.events.append(CallEnded(call.handle, "remote hangup"))
            return
        self._out.cancel(call, "retx")
        self._out.cancel(call, "timeout")
        transition(call, "bye")
        self._out.events.append(CallEnded(call.handle, "remote hangup"))
        self._out.start(call, "forget", now + TIMEOUT)

    def options(self, call: Call | None, req: Request, addr: Addr, retry_after: int | None, now: float) -> None:
        """`retry_after`: None, we would take a call; else the Retry-After of the 503 an INVITE would get."""
        dialog = req.to.tag is not None  # a PBX's dialog keep-alive; without a To tag, a plain ping
        if dialog and (call is None or not live_dialog(call, req)):  # a probe for a dead dialog (12.2.2)
            self.reply(call, req, addr, 481, now)
            return
        allowed = (*ADVERTISED, ("Accept", ACCEPT))
        if not dialog and retry_after is not None:
            # 11.2: a ping gets what an INVITE would get, so a proxy that probes with OPTIONS (a dispatcher's
            # health check) sends its calls elsewhere while we are full or our agent server is down, not into 503s
            self.reply(call, req, addr, 503, now, extra=(("Retry-After", str(retry_after)), *allowed))
            return
        # 11.2: a UA that asks what we take (a PBX qualifying its trunk's codecs) learns it without placing a call
        sdp = capabilities(self._responses.config.host, int(self._token(), 16)).serialize() \
            if accepts_sdp(req.headers.lines("Accept")) else b""
        self.reply(call, req, addr, 200, now, extra=allowed, body=sdp)

    def info(self, call: Call | None, req: Request, addr: Addr, now: float) -> None:
        if call is None or not live_dialog(call, req):
            self.reply(call, req, addr, 481, now)
            return
        ctype = req.headers.get("Content-Type")
        if unread_body(ctype, req.headers.get("Content-Disposition"), req.body):
            # 8.2.3: a 200 would tell the sender its key presses (say) were taken, where they were dropped; the
            # Accept names the types an INFO is read in, for a sender that can send them otherwise
            self.reply(call, req, addr, 415, now, extra=(("Accept", INFO_ACCEPT),))
            return
        try:
            keys = dtmf_keys(ctype, req.body)
        except RemoteProtocolError as exc:  # 400 with why: a 200 would say the key press was taken
            self.reply(call, req, addr, exc.status, now, extra=(self._responses.warning(exc.warn_code, str(exc)),))
            return
        last = call.remote_cseq or call.invite.cseq
        if req.cseq.number <= last.number:  # 12.2.2: not a new request, so its keys are no new key presses
            retransmitted = req.cseq == last  # our 200 was lost and the caller sent it again: its keys were heard
            self.reply(call, req, addr, 200 if retransmitted else 500, now)
            return
        self.reply(call, req, addr, 200, now)
        self._out.events += [DtmfReceived(call.handle, key) for key in keys]


def _cancels(call: Call, cancel: Request) -> bool:
    """Whether `cancel` matches an INVITE server transaction of `call` (9.2, ua_transactions.cancels): its first
    INVITE's, or its last re-INVITE's unless that was answered 2xx, which ends the transaction (17.2.1)."""
    return any(cancels(cancel, invite) for invite in (call.invite, call.reinvite) if invite is not None)
