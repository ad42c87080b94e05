"""The SIP user agent server core of the bridge (RFC 3261 over UDP): dialogs and transactions. Sans-I/O.

Inputs: `receive_datagram(data, addr, now)`, `timer_fired(key, now)`, and the shell's decisions `answer()`,
`reject()`, `hangup()`. After each call drain `data_to_send()` (datagrams), `events_received()` (call events) and
`timer_actions()` (StartTimer/CancelTimer the shell schedules, feeding back `timer_fired`). Time (`now`, monotonic
seconds) and randomness (tags, branches: the `rng` given) are inputs; nothing here reads a clock or a socket.

Rules:
- INVITE without a To tag starts a call: 100 Trying at once, then (SDP offer accepted) 180 Ringing with our To tag
  and an IncomingCall event; the shell answers with `answer(call, rtp_port)` (200 OK + SDP) or `reject(call, status)`.
  No usable codec -> 488; unparseable SDP -> 400; a body that is not SDP -> 415 with Accept (SDP, multipart);
  more than `max_calls` live calls -> 503 with Retry-After (a gateway over capacity, 21.5.4: a proxy tries another
  bridge, where 486 Busy Here tells it the callee is busy and the call ends there). An INVITE without SDP (a
  delayed offer, 13.2.1) gets our offer (PCMU, telephone-event) in the 200 OK; the caller's answer comes in the
  ACK and its address in a MediaChanged event. An ACK without a usable answer ends the call with BYE.
- A retransmitted INVITE (same Call-ID, From tag and CSeq, and the same transaction: top Via branch and
  sent-by, 17.2.3) never creates a second call: the last response is re-sent. The same INVITE in another
  transaction is a merged request (a proxy forked it and both copies reached us, 8.2.2.2): 482 Loop Detected,
  so the second path gets an answer to its own branch and the call stays one. A new INVITE with the same
  Call-ID and From tag and a higher CSeq after a failed one (a retry, e.g. with other codecs after 488,
  8.1.3.5) is a new call; while the first call is live it gets 500 + Retry-After (14.2).
- Final responses to an INVITE (2xx and non-2xx) are retransmitted until the ACK (T1 doubling to T2, 32 s at
  most), a re-INVITE's on a confirmed call too (416, 420, 500 below); those of an INVITE that comes while
  another INVITE of the call is in progress (500 + Retry-After, 491) or for no dialog (481) are too, each in a
  transaction of its own beside the call's (ua_refusals.py). The answers to INVITE and re-INVITE, their SDP
  offer/answer and the ACK are ua_invite.py's.
- Every request but ACK is a server transaction of its own (17.2.3: branch, sent-by, method; ua_transactions.py):
  a retransmission of one answered with a final response gets that response again and changes nothing, whatever
  the call did since (an INFO resent after a later OPTIONS is not out of order; a re-INVITE refused 491 is not
  answered 200 when resent after the ACK that ended the glare).
- CANCEL, BYE, OPTIONS and INFO are answered by ua_non_invite.py (an OPTIONS ping gets 503 + Retry-After while
  `max_calls` calls are live, or the agent server is down as the shell last saw it: `agent_server()`).
- A request whose Request-URI has a scheme other than sip, sips or tel gets 416 Unsupported URI Scheme (8.2.2.1;
  RFC 4475's unksm), as one requiring an extension gets 420, below: we are no endpoint for such an address.
- A request whose Require names an option tag we do not support (all but timer: no 100rel, say) gets 420 Bad
  Extension with those tags in Unsupported (8.2.2.3): an INVITE that would start a call is refused
  like a 488 (retransmitted until ACK; a retry without the tag is a new call), a re-INVITE too, any other
  request statelessly, and an in-dialog one leaves the call as it was. Require in ACK and CANCEL is ignored
  (8.2.2.3).
- Any request in a live dialog (re-INVITE, BYE, OPTIONS, INFO) whose CSeq is below the caller's last in-dialog
  request's gets 500 and changes nothing (12.2.2): a BYE overtaken by a later request does not end the call.
  Every other request in the dialog (but ACK and CANCEL) raises that number, whatever its answer: one refused
  405, 415, 420 or 488 counts as well.
- Other methods -> 405 (REGISTER, REFER, ... : SIP's own) or 501 (unknown), with Allow (8.2.1).
- The checks go in RFC 3261's order (ua_inspection.py): 405/501, 416, 420, and only then the dialog's CSeq order
  (500), so a stale request of a method we do not take, or requiring an extension, gets 405/501/420.
- Our own requests in a dialog, `hangup()`'s BYE and `keepalive()`'s OPTIONS (the shell asks when a held caller
  has been silent long enough), and their retransmissions are ua_requests.py's; a call's record, the timers and
  the outbox are ua_call.py's.
- A re-INVITE on a confirmed call (hold, resume, a new media address, a session refresh) is answered by
  ua_invite.py (200 OK with SDP and MediaChanged, or 488 and the call unchanged). One for no live dialog -> 481;
  one in the early dialog of a ringing call (its INVITE still unanswered) -> 500 + Retry-After (14.2: 481 would
  tell the caller the dialog is gone); one while the last is unacknowledged -> 491; its retransmission (same
  CSeq) gets the same response again.
- 18x and 2xx responses to an INVITE carry its Record-Route lines, in order (12.1.1): the caller's ACK and BYE
  follow the proxies that asked to stay in the path. Our BYE carries them as Route (12.1.1, 12.2.1.1).
- Malformed requests whose start line and Via could be read get 400 Bad Request (505 in another SIP version,
  21.5.6), in a server transaction like any other: a retransmission gets the same response, To tag and all
  (8.2.6.2), and an INVITE's is resent until its ACK; anything else malformed is dropped and counted. ACK never
  gets a response. Responses go to the source address of the request (as with rport, RFC 3581); the top Via gets
  received/rport filled in.
- Per call: `{state: {event: next state}}` in TRANSITIONS (ua_events.py); an event missing from it raises
  LocalProtocolError and changes nothing (ua_call.transition).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from clients.sip.errors import LocalProtocolError, RemoteProtocolError
from clients.sip.message import NameAddr, Request, Response, SipParseError, Via, parse_message
from clients.sip.ua_call import Call, Outbox, in_dialog, live_dialog, transition
from clients.sip.ua_events import (
    Addr, CallEnded, CallEvent, CallState, Datagram, IncomingCall, Refused, TimerAction, UaConfig,
)
from clients.sip.ua_invite import InviteServer
from clients.sip.ua_inspection import method_refusal, out_of_order, same_transaction, unknown_scheme, unsupported
from clients.sip.ua_messages import ALLOW, Extra, Responses
from clients.sip.ua_non_invite import NonInviteServer
from clients.sip.ua_refusals import InviteRefusals
from clients.sip.ua_requests import OwnRequests
from clients.sip.ua_transactions import ServerTransactions

__all__ = ["UserAgent"]

# Every 503 of ours carries Retry-After: without one it counts as a 500 (21.5.4) and a proxy tries no other bridge.
# A call slot frees whenever any call ends, so a proxy may come back this soon; the other causes (an agent server
# that cannot be reached, no RTP port free, the bridge shutting down) use it too, having no better estimate.
RETRY_AFTER_S = 5
S = CallState


@dataclass(slots=True)
class UaStats:
    malformed: int = 0
    dropped: int = 0
    bad_requests: int = 0


class UserAgent:
    def __init__(self, config: UaConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.stats = UaStats()
        self._calls: dict[tuple[str, str], Call] = {}  # (Call-ID, From tag) -> call
        self._by_handle: dict[str, Call] = {}
        self._counter = 0
        self._out = Outbox()
        self._responses = Responses(config)
        self._ours = OwnRequests(config, self._out, self._token)  # our BYE and OPTIONS in the calls' dialogs
        self._transactions = ServerTransactions(config.max_transactions)  # their final responses, for retransmissions
        self._invites = InviteServer(config, self._out, rng, self._ours, self._responses,  # INVITE, re-INVITE, ACK
                                     self._transactions)
        self._others = NonInviteServer(self._out, self._responses, self._invites, self._token,  # CANCEL, BYE, ...
                                       self._transactions)
        self._refusals = InviteRefusals(self._out, config.max_transactions)  # INVITEs refused beside a call's own
        self._agent_retry_after: int | None = None  # the agent server is down: our 503s' Retry-After

    # ----- drains -----

    def data_to_send(self) -> list[Datagram]:
        out, self._out.datagrams = self._out.datagrams, []
        return out

    def events_received(self) -> list[CallEvent]:
        out, self._out.events = self._out.events, []
        return out

    def timer_actions(self) -> list[TimerAction]:
        out, self._out.timers = self._out.timers, []
        return out

    def state(self, call: str) -> CallState:
        return self._get(call).state

    @property
    def live_calls(self) -> int:
        live = (S.PROCEEDING, S.ANSWERED, S.CONFIRMED, S.REANSWERED)
        return sum(c.state in live for c in self._by_handle.values())

    # ----- inputs -----

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> None:
        """One UDP datagram from `addr`. Never raises for bad input."""
        if not data.strip(b"\r\n \t"):
            return  # keep-alive (RFC 5626 4.4.1)
        try:
            msg = parse_message(data, max_size=self.config.max_message_bytes)
        except SipParseError as exc:
            self.stats.malformed += 1
            self._bad_request(exc.partial, addr, exc, now)
            return
        try:
            if isinstance(msg, Response):
                self._on_response(msg, now)
            else:
                self._on_request(msg, addr, now)
        except SipParseError as exc:  # a header only looked at here was malformed
            self.stats.malformed += 1
            self._bad_request(msg if isinstance(msg, Request) else None, addr, exc, now)

    def timer_fired(self, key: str, now: float) -> None:
        kind, _, handle = key.partition(":")
        if kind == "refusal":
            self._refusals.timer_fired(key, now)
            return
        call = self._by_handle.get(handle)
        if call is None or key not in call.timers:
            return  # a timer that was cancelled while its callback was already queued
        call.timers.discard(key)
        if kind in ("retx", "timeout"):
            self._invites.timer_fired(call, kind, now)
        elif kind == "session":  # RFC 4028 10: no refresh came
            if call.state in (S.CONFIRMED, S.REANSWERED) and not call.hung_up:  # not ended meanwhile
                self._ours.hang_up(call, "session expired", now)
        elif kind == "forget":
            for k in list(call.timers):
                self._out.cancel(call, k.partition(":")[0])
            del self._by_handle[handle]
            if self._calls.get(self._key(call.invite)) is call:  # a retry may have taken the key over
                del self._calls[self._key(call.invite)]
        else:
            self._ours.timer_fired(call, kind, now)

    def answer(self, call: str, rtp_port: int, now: float) -> None:
        """Accept a ringing call: 200 OK with our SDP answer (media on `rtp_port` at config.host)."""
        self._invites.answer(self._get(call), rtp_port, now)

    def reject(self, call: str, status: int, now: float, *, retry_after: int | None = None) -> None:
        """Refuse a ringing call with a final 3xx-6xx status (e.g. 503 when the agent is unreachable); `retry_after`
        seconds go in Retry-After, and a 503 without them gets RETRY_AFTER_S (one without Retry-After counts as a
        500 to the caller, 21.5.4: no retry elsewhere later, no back-off)."""
        if not 300 <= status <= 699:
            raise LocalProtocolError(f"reject needs a 3xx-6xx status, got {status}")
        if status == 503 and retry_after is None:
            retry_after = RETRY_AFTER_S
        c = self._get(call)
        transition(c, "reject")
        self._invites.final(c, status, now, extra=() if retry_after is None else (("Retry-After", str(retry_after)),))
        self._out.events.append(CallEnded(c.handle, "rejected"))

    def agent_server(self, retry_after: int | None) -> None:
        """What the shell last learned of the agent server: None, it would take a session; else it is down (or
        full) and an out-of-dialog OPTIONS gets 503 with Retry-After `retry_after` meanwhile, as an INVITE would."""
        self._agent_retry_after = retry_after

    def hangup(self, call: str, now: float, reason: str = "local hangup") -> None:
        """End an answered call from our side: BYE (retransmitted until answered) saying `reason` in its Reason
        header (RFC 3326). The call ends at once; while our 2xx still awaits its ACK the BYE waits for it, or for
        the 2xx's timeout (a callee must not send BYE before the ACK, 15), and the 2xx goes on being retransmitted
        meanwhile."""
        self._ours.hang_up(self._get(call), reason, now)

    def keepalive(self, call: str, now: float) -> bool:
        """Ask a confirmed call's caller whether the dialog still exists: an in-dialog OPTIONS (what a PBX's dialog
        keep-alive sends), retransmitted until answered. Any response but 408 or 481 leaves the call up; those,
        or none within 32 s, end it with BYE (12.2.1.2) and CallEnded "caller gone: ...". False: nothing sent,
        as a keep-alive is pending or the call is not confirmed."""
        return self._ours.keepalive(self._get(call), now)

    # ----- requests -----

    def _on_request(self, req: Request, addr: Addr, now: float) -> None:
        answered = None if req.method == "ACK" else self._transactions.answered(req, now)
        if answered is not None:  # a retransmission (17.2.3): its transaction's answer again, and nothing else
            self._out.send(answered, addr)
            return
        call = self._calls.get(self._key(req))
        method = req.method
        starts_call = method == "INVITE" and req.to.tag is None
        unsupported_tags = unsupported(req)
        refuse_now = method not in ("ACK", "CANCEL") and not starts_call  # a new call's: see _on_invite
        in_order = refuse_now and live_dialog(call, req) and not out_of_order(call, req)
        if method == "INVITE" and live_dialog(call, req) and call is not None and req.cseq != call.transaction.cseq:
            call.reinvite = req  # a new one, whatever it is answered: a CANCEL may match it
        refusal = method_refusal(method)  # the checks in RFC 3261's order (ua_inspection.py)
        if refusal is not None:
            self._reply(req, addr, refusal, now, extra=(("Allow", ALLOW),))  # both say what we take (8.2.1)
        elif refuse_now and unknown_scheme(req):
            self._refuse_request(call, req, addr, 416, now)
        elif unsupported_tags and refuse_now:
            self._refuse_request(call, req, addr, 420, now, extra=(("Unsupported", ", ".join(unsupported_tags)),))
        elif method == "ACK":
            if not self._refusals.acknowledged(req):
                self._invites.on_ack(call, req, now)
        elif starts_call:
            if call is None or (call.state in (S.REJECTED, S.ENDED) and req.cseq.number > call.invite.cseq.number):
                self._on_invite(req, addr, now)  # a new call, or a retry after a failed one (CSeq + 1, 8.1.3.5)
            elif req.cseq.number == call.invite.cseq.number and same_transaction(req, call.invite):
                self._out.send(call.last_response, addr)  # retransmission: same response, no second dialog
            elif req.cseq.number == call.invite.cseq.number:  # merged (8.2.2.2)
                self._reply(req, addr, 482, now)
            else:  # a second INVITE while the first is live (14.2)
                self._retry_later(req, addr, now)
        elif out_of_order(call, req):  # 12.2.2: below the caller's last request in the dialog
            self._refuse_request(call, req, addr, 500, now)
        elif method == "INVITE":
            self._on_reinvite(call, req, addr, now)
        elif method == "CANCEL":
            self._others.cancel(call, req, addr, now, self._refusals.cancelled(req))
        elif method == "BYE":
            self._others.bye(call, req, addr, now)
        elif method == "OPTIONS":
            busy = RETRY_AFTER_S if self.live_calls >= self.config.max_calls else self._agent_retry_after
            self._others.options(call, req, addr, busy, now)
        else:  # INFO
            self._others.info(call, req, addr, now)
        if in_order and call is not None and req.cseq.number > (call.remote_cseq or call.invite.cseq).number:
            # 12.2.2: every request in order raises the remote CSeq, whatever we answered it (405, 415, 420, 488
            # too), so a later one below it is out of order; the handlers above saw the number before it
            call.remote_cseq = req.cseq

    def _on_invite(self, req: Request, addr: Addr, now: float) -> None:
        self._counter += 1
        call = Call(f"call{self._counter}", req, addr, self._token(), req, awaiting_answer=not req.body)
        self._calls[self._key(req)] = call
        self._by_handle[call.handle] = call
        self._out.send(self._responses.build(req, 100, addr, to_tag=None), addr)
        if self.live_calls > self.config.max_calls:
            self._refuse(call, 503, now, f"max_calls ({self.config.max_calls}) reached",
                         extra=(("Retry-After", str(RETRY_AFTER_S)),))
            return
        scheme = unknown_scheme(req)
        if scheme:
            self._refuse(call, 416, now, f"Request-URI scheme {scheme} unsupported")
            return
        tags = ", ".join(unsupported(req))
        if tags:
            self._refuse(call, 420, now, f"requires {tags}", extra=(("Unsupported", tags),))
            return
        try:
            media = self._invites.accept_offer(call, req)  # with the session timer its 2xx sets up, if any
        except RemoteProtocolError as exc:
            self._refuse(call, exc.status, now, str(exc),
                         extra=(self._responses.warning(exc.warn_code, str(exc)), *exc.headers))
            return
        call.last_response = self._responses.build(req, 180, addr, to_tag=call.local_tag,
                                                   extra=self._responses.contact())
        self._out.send(call.last_response, addr)
        self._out.events.append(IncomingCall(call.handle, req.call_id, req.from_.uri, addr, media))

    def _refuse(self, call: Call, status: int, now: float, why: str, extra: Extra = ()) -> None:
        """A new call's INVITE refused with a final response (retransmitted until ACK); the shell is told why."""
        transition(call, "reject")
        self._invites.final(call, status, now, extra=extra)
        self._out.events.append(Refused(call.invite.call_id, call.invite.from_.uri, status, why))

    def _on_reinvite(self, call: Call | None, req: Request, addr: Addr, now: float) -> None:
        if call is None or not in_dialog(call, req) or call.state in (S.REJECTED, S.ENDED):
            self._reply(req, addr, 481, now)
        elif call.state is S.PROCEEDING:  # the first INVITE is not answered yet (14.2)
            self._retry_later(req, addr, now)
        elif req.cseq.number == call.transaction.cseq.number:  # retransmission
            self._out.send(call.last_response, addr)
        elif call.state is not S.CONFIRMED:  # the last INVITE's ACK is still due (14.2)
            self._reply(req, addr, 491, now)
        else:
            self._invites.reinvite(call, req, addr, now)

    def _on_response(self, resp: Response, now: float) -> None:
        to_tag = NameAddr.parse(resp.headers.get("To") or "").tag if resp.headers.get("To") else None
        call = self._calls.get((resp.call_id, to_tag or ""))
        if call is not None:  # in a dialog of ours: an answer to our BYE or OPTIONS
            self._ours.on_response(call, resp, now)

    # ----- helpers -----

    def _bad_request(self, partial: Request | Response | None, addr: Addr, error: SipParseError, now: float) -> None:
        if not isinstance(partial, Request) or not partial.headers.get_all("Via"):
            self.stats.dropped += 1
            return
        try:
            Via.parse(partial.headers.get_all("Via")[0])
        except SipParseError:
            self.stats.dropped += 1
            return
        if partial.method == "ACK":  # never answered; one that copies its malformed INVITE still stops our 400
            self._refusals.acknowledged(partial)
            self.stats.dropped += 1
            return
        self.stats.bad_requests += 1
        kept = self._transactions.answered(partial, now)
        if kept is not None:  # a retransmission, malformed alike: the same 400, its To tag too (8.2.6.2, 17.2)
            self._out.send(kept, addr)
            return
        to_tag = self._token()
        response = self._responses.build(partial, error.status, addr, to_tag=to_tag,
                                         extra=(self._responses.warning(error.warn_code, str(error)),))
        self._transactions.record(partial, response, now)
        self._out.send(response, addr)
        if partial.method == "INVITE":  # a final response to an INVITE is resent until its ACK (17.2.1)
            self._refusals.resend_until_ack(partial, response, to_tag, addr, now)

    def _retry_later(self, req: Request, addr: Addr, now: float) -> None:
        """500 to an INVITE that came while an earlier one of its dialog is unanswered, with Retry-After 1-10 s
        (14.2)."""
        self._reply(req, addr, 500, now, extra=(("Retry-After", str(self.rng.randint(1, 10))),))

    def _refuse_request(self, call: Call | None, req: Request, addr: Addr, status: int, now: float,
                        extra: Extra = ()) -> None:
        """A final non-2xx to a request the checks refused: a re-INVITE's on a confirmed call through its
        transaction (resent until the ACK, 17.2.1), any other's statelessly."""
        if req.method == "INVITE" and call is not None and live_dialog(call, req) and call.state is S.CONFIRMED:
            self._invites.refuse(call, req, addr, status, now, extra)
        else:
            self._reply(req, addr, status, now, extra)

    def _reply(self, req: Request, addr: Addr, status: int, now: float, extra: Extra = ()) -> None:
        """A final response in a transaction of its own (not the call's INVITE's); an INVITE's is resent until its
        ACK (ua_refusals.py)."""
        if req.method != "INVITE":
            self._others.reply(self._calls.get(self._key(req)), req, addr, status, now, extra)
            return
        to_tag = req.to.tag or self._token()  # the ACK to a refusal carries its To tag (17.1.1.3)
        response = self._others.reply(self._calls.get(self._key(req)), req, addr, status, now, extra, to_tag=to_tag)
        self._refusals.resend_until_ack(req, response, to_tag, addr, now)

    def _get(self, handle: str) -> Call:
        call = self._by_handle.get(handle)
        if call is None:
            raise LocalProtocolError(f"unknown call {handle!r}")
        return call

    def _token(self) -> str:
        return f"{self.rng.getrandbits(48):012x}"

    @staticmethod
    def _key(req: Request) -> tuple[str, str]:
        return req.call_id, req.from_.tag or ""

