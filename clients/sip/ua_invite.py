"""The INVITE side of a call, where the bridge answers as a UAS (RFC 3261 13.3, 17.2.1), and its SDP offer/answer
(RFC 3264). Sans-I/O; the UA core (ua.py) matches the caller's INVITE, re-INVITE and ACK to a call, refuses what
is out of place (481, 491, a retransmission's repeat) and hands the rest here.

- A new call's offer is its INVITE's SDP (the body, or the SDP part of a SIP-T/SIP-I multipart, body.py); without
  a body (a delayed offer, 13.2.1) a stand-in whose answer is our offer (PCMU, telephone-event), answered in the
  ACK. An offer that cannot be used raises RemoteProtocolError with the status the core refuses the call with.
- Final responses to an INVITE (`final`: 2xx and non-2xx) are retransmitted until the ACK: intervals T1 = 0.5 s
  doubling to T2 = 4 s (13.3.1.4, 17.2.1), given up after 64*T1 = 32 s; an answered call that never got its ACK
  is then ended with our BYE (ua_requests.py), a refused one is forgotten 32 s later.
- Our SDP keeps its o= line, and its version goes up by one only when the answer changed (RFC 3264 8).
- A re-INVITE on a confirmed call (hold, resume, a new media address, a session refresh) is answered 200 OK with
  SDP and a MediaChanged event. The codec in use must still be offered: otherwise the error's status (488; 422,
  415, 400 alike), resent until its ACK or for 32 s as a first INVITE's (17.2.1), and the call goes on unchanged
  (14.2). A re-INVITE without SDP gets our offer with the codec in use, answered in the ACK; until then the media
  stays as it was (RFC 3264 8: an offer changes nothing before its answer), so a session refresh without SDP
  neither pauses our RTP nor loses a NAT caller's latched source. Its Contact is the caller's new remote target
  (12.2.2), and its source where the caller now is.
- The ACK of the INVITE transaction (ua_transactions.acknowledges, the rule for every final response to an INVITE)
  stops the retransmissions: it confirms a first answer (CallConfirmed), lets a refused call be forgotten after
  32 s, and sends a BYE that waited for it (we hung up meanwhile, 15). An ACK that
  brings the answer to our offer gives MediaChanged, or ends the call with BYE when the answer is unusable; if it
  takes telephone-event, key presses come with our offer's payload type for it, whatever number the answer gives.
  Any other ACK is absorbed, never answered (17.2.1).
"""

from __future__ import annotations

import random
from dataclasses import replace

from clients.sip.body import INVITE_ACCEPT, sdp_body
from clients.sip.errors import NotSdp, RemoteProtocolError
from clients.sip.message import Request
from clients.sip.sdp import (
    PCMU, TELEPHONE_EVENT, Codec, Negotiated, SessionDescription, build_answer, negotiate, stand_in,
)
from clients.sip.session_timer import session_timer
from clients.sip.ua_call import T1, T2, TIMEOUT, Call, Outbox, transition
from clients.sip.ua_events import Addr, CallConfirmed, CallState, MediaChanged, Refused, UaConfig
from clients.sip.ua_messages import ADVERTISED, Extra, Responses, remote_target
from clients.sip.ua_requests import OwnRequests
from clients.sip.ua_transactions import ServerTransactions, acknowledges

__all__ = ["InviteServer"]

S = CallState


class InviteServer:
    """Answers the INVITEs of calls whose records the UA core keeps, and takes their ACKs (see the module rules)."""

    def __init__(self, config: UaConfig, out: Outbox, rng: random.Random, ours: OwnRequests,
                 responses: Responses, transactions: ServerTransactions) -> None:
        self.config = config
        self._out = out
        self._rng = rng  # the UA core's: draws stay in the order of its calls
        self._ours = ours  # for the BYE that ends a call without an ACK or a usable answer
        self._responses = responses
        self._transactions = transactions  # where a retransmitted INVITE finds its final response (ua.py)

    def accept_offer(self, call: Call, invite: Request) -> Negotiated:
        """A new call's offer and the media negotiated from it (kept in `call`, and returned); raises
        RemoteProtocolError when the offer cannot be used."""
        call.offer, call.media = _offer(invite, Codec(PCMU, "PCMU"), TELEPHONE_EVENT, keep=None)
        call.session_timer = session_timer(invite)
        return call.media

    def answer(self, call: Call, rtp_port: int, now: float) -> None:
        """Accept a ringing call: 200 OK with our SDP answer (media on `rtp_port` at config.host)."""
        transition(call, "answer")
        call.rtp_port, call.sdp_session = rtp_port, self._rng.getrandbits(31)
        assert call.offer is not None  # invariant: PROCEEDING calls have an accepted offer
        self._ok(call, call.offer, now)

    def final(self, call: Call, status: int, now: float, body: bytes = b"", extra: Extra = ()) -> None:
        """A final response to the call's INVITE, retransmitted until ACK (T1 doubling to T2, 32 s at most)."""
        extra = self._responses.contact() + (ADVERTISED if status == 200 else ()) + extra
        call.last_response = self._responses.build(call.transaction, status, call.remote, to_tag=call.local_tag,
                                                   body=body, extra=extra)
        self._transactions.record(call.transaction, call.last_response, now)
        call.interval = T1
        self._out.send(call.last_response, call.remote)
        self._out.start(call, "retx", now + T1)
        self._out.start(call, "timeout", now + TIMEOUT)

    def _ok(self, call: Call, offer: SessionDescription, now: float) -> None:
        """The 2xx to the call's INVITE or re-INVITE: our answer to `offer`, and the session timer it (re)starts or
        ends (session_timer.py)."""
        timer = call.session_timer
        self.final(call, 200, now, body=self._answer_sdp(call, offer), extra=timer.headers if timer else ())
        self._out.cancel(call, "session")
        if timer is not None:
            self._out.start(call, "session", now + timer.bye_after)

    def timer_fired(self, call: Call, kind: str, now: float) -> None:
        """The final response's timers: "retx" (send it again) or "timeout" (no ACK within 32 s)."""
        if kind == "retx":
            self._out.send(call.last_response, call.remote)
            call.interval = min(call.interval * 2, T2)
            self._out.start(call, "retx", now + call.interval)
        elif call.state is S.CONFIRMED:  # a re-INVITE's refusal: its transaction ends, the call goes on
            self._out.cancel(call, "retx")
        elif call.state in (S.ANSWERED, S.REANSWERED):
            self._ours.end_with_bye(call, "no_ack", None if call.hung_up else "no ACK", now)
        else:
            self._out.cancel(call, "retx")
            transition(call, "no_ack")
            self._out.start(call, "forget", now + TIMEOUT)

    def reinvite(self, call: Call, req: Request, addr: Addr, now: float) -> None:
        """A new re-INVITE in a confirmed call's dialog."""
        assert call.media is not None  # invariant: answered calls have negotiated media
        try:
            offer, media = _offer(req, call.media.codec, call.media.dtmf_payload_type, keep=call.media.codec)
            timer = session_timer(req)
        except RemoteProtocolError as exc:
            self.refuse(call, req, addr, exc.status, now,
                        extra=(self._responses.warning(exc.warn_code, str(exc)), *exc.headers))
            self._out.events.append(Refused(req.call_id, req.from_.uri, exc.status, f"re-INVITE: {exc}"))
            return
        call.reinvite = None  # its 2xx ends its transaction (17.2.1): a CANCEL of it gets 481
        call.transaction, call.media, call.awaiting_answer, call.session_timer = req, media, not req.body, timer
        call.remote = addr  # its 200 (and our BYE) go where the caller now is, e.g. after a NAT rebinding
        call.target = remote_target(req) or call.target  # a target refresh: our BYE's Request-URI (12.2.2)
        transition(call, "reinvite")
        self._ok(call, offer, now)
        if req.body:  # else our offer: the ACK's answer changes the media (_on_answer)
            self._out.events.append(MediaChanged(call.handle, media))

    def refuse(self, call: Call, req: Request, addr: Addr, status: int, now: float, extra: Extra = ()) -> None:
        """A non-2xx final to a re-INVITE of a confirmed call, which goes on as it was (14.2). Its transaction is the
        call's now: the refusal is resent until the ACK (17.2.1), a retransmitted re-INVITE gets it again, and a
        CANCEL of it gets 200 (9.2)."""
        call.transaction, call.remote = req, addr
        self.final(call, status, now, extra=extra)

    def on_ack(self, call: Call | None, req: Request, now: float) -> None:
        if (call is None or call.state in (S.PROCEEDING, S.ENDED)
                or not acknowledges(req, call.transaction, call.local_tag)):
            return  # a stray or repeated ACK: absorbed (17.2.1), never answered
        self._out.cancel(call, "retx")
        self._out.cancel(call, "timeout")
        state = call.state
        if state is S.CONFIRMED:  # of a re-INVITE's refusal (or a repeated one): the call goes on as it was
            return
        transition(call, "ack")
        if call.hung_up:  # we hung up meanwhile: the BYE can go now
            self._ours.end_with_bye(call, "hangup", None, now)
            return
        if state is S.ANSWERED:
            self._out.events.append(CallConfirmed(call.handle))
        elif state is S.REJECTED:
            self._out.start(call, "forget", now + TIMEOUT)
        if call.awaiting_answer:
            self._on_answer(call, req, now)

    def _on_answer(self, call: Call, ack: Request, now: float) -> None:
        """The caller's SDP answer in the ACK to our offer (RFC 3264 5: it must keep our one codec)."""
        assert call.media is not None  # invariant: answered calls have negotiated media
        call.awaiting_answer = False
        try:
            media = negotiate(_sdp(ack), keep=call.media.codec)
        except RemoteProtocolError as exc:
            self._ours.end_with_bye(call, "hangup", f"no usable SDP answer: {exc}", now)
            return
        if media.dtmf_payload_type is not None:
            # The caller sends its key presses with the number our offer gave telephone-event (5.1: an SDP names
            # the numbers its side receives), even in an answer that gives it another number (6.1 only says SHOULD)
            media = replace(media, dtmf_payload_type=call.media.dtmf_payload_type)
        call.media = media
        self._out.events.append(MediaChanged(call.handle, call.media))

    def _answer_sdp(self, call: Call, offer: SessionDescription) -> bytes:
        """Our answer to `offer`: the same o= line every time, its version one up when the SDP changed (RFC 3264 8)."""
        media = call.media
        assert media is not None  # invariant: set before any answer

        def build(version: int) -> bytes:
            return build_answer(offer, media, local_host=self.config.host, rtp_port=call.rtp_port,
                                session_id=call.sdp_session, session_version=version).serialize()

        sdp = build(call.sdp_version)
        if call.local_sdp and sdp != call.local_sdp:
            call.sdp_version += 1
            sdp = build(call.sdp_version)
        call.local_sdp = sdp
        return sdp


def _offer(invite: Request, codec: Codec, dtmf_payload_type: int | None,
           keep: Codec | None) -> tuple[SessionDescription, Negotiated]:
    """The INVITE's SDP offer and the media negotiated from it (only `keep` when given), or without one the
    stand-in whose answer is our offer of `codec`."""
    if not invite.body:
        return stand_in(codec, dtmf_payload_type)
    offer = _sdp(invite)
    return offer, negotiate(offer, keep=keep)


def _sdp(msg: Request) -> SessionDescription:
    sdp = sdp_body(msg.headers.get("Content-Type"), msg.body)  # the body, or its SDP part (SIP-T/SIP-I)
    if sdp is None:
        raise NotSdp(f"{msg.method} body of type {msg.headers.get('Content-Type') or 'none'} carries no SDP",
                     INVITE_ACCEPT)
    return SessionDescription.parse(sdp)
