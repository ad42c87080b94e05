"""The UAS core (RFC 3261 over UDP) on a fake clock: exact responses, timers as actions. Pure, synchronous."""

from __future__ import annotations

import random

import pytest

from clients.sip.errors import LocalProtocolError
from clients.sip.message import CSeq, Request, Response, parse_message
from clients.sip.sdp import SessionDescription
from clients.sip.ua import UserAgent
from clients.sip.ua_events import CallConfirmed, CallEnded, CallState, CancelTimer, DtmfReceived, IncomingCall, \
    MediaChanged, Refused, StartTimer, UaConfig

ALLOW_HEADER = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"
PEER = ("127.0.0.1", 5070)
SDP = (b"v=0\r\no=u 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")


def req(method: str, *, to_tag: str = "", body: bytes = b"", cseq: int = 1, branch: str = "b1",
        ctype: str = "application/sdp", call_id: str = "c1", headers: str = "") -> bytes:
    extra = (f"Content-Type: {ctype}\r\n" if body else "") + headers
    return (f"{method} sip:agent@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch}\r\n"
            f"From: <sip:caller@127.0.0.1>;tag=ft\r\nTo: <sip:agent@127.0.0.1:5080>{to_tag}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:caller@127.0.0.1:5070>\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Harness:
    """The UA plus a fake clock that fires StartTimer actions in deadline order."""

    def __init__(self, **cfg: object) -> None:
        self.ua = UserAgent(UaConfig(host="127.0.0.1", port=5080, **cfg), random.Random(0))  # type: ignore[arg-type]
        self.now = 0.0
        self.timers: dict[str, float] = {}
        self.sent: list[tuple[float, Response | Request]] = []
        self.sent_to: list[tuple[str, int]] = []
        self.events: list[object] = []

    def _drain(self) -> list[Response | Request]:
        out = []
        for d in self.ua.data_to_send():
            msg = parse_message(d.data)
            out.append(msg)
            self.sent.append((self.now, msg))
            self.sent_to.append(d.addr)
        for t in self.ua.timer_actions():
            if isinstance(t, StartTimer):
                self.timers[t.key] = t.deadline
            else:
                assert isinstance(t, CancelTimer)
                self.timers.pop(t.key, None)
        self.events += self.ua.events_received()
        return out

    def feed(self, data: bytes, source: tuple[str, int] = PEER) -> list[Response | Request]:
        self.ua.receive_datagram(data, source, self.now)
        return self._drain()

    def advance(self, until: float) -> list[Response | Request]:
        out = []
        while self.timers and min(self.timers.values()) <= until:
            key = min(self.timers, key=self.timers.__getitem__)
            self.now = self.timers.pop(key)
            self.ua.timer_fired(key, self.now)
            out += self._drain()
        self.now = until
        return out

    def call(self) -> str:
        self.feed(req("INVITE", body=SDP))
        incoming = [e for e in self.events if isinstance(e, IncomingCall)]
        return incoming[-1].call

    def established(self) -> tuple[str, str]:
        """An incoming call answered and acknowledged: (call id, our To tag)."""
        call = self.call()
        self.ua.answer(call, 40000, 0.0)
        tag = to_tag(self._drain()[0])
        self.feed(req("ACK", to_tag=tag))
        return call, tag


def statuses(msgs: list) -> list[int]:
    return [m.status for m in msgs]


def to_tag(msg: Response) -> str:
    return ";tag=" + (msg.headers.get("To") or "").split(";tag=")[1]


def test_invite_gets_100_then_180_and_one_call_even_when_retransmitted() -> None:
    """17.2.1: a retransmitted INVITE gets the last provisional response again and no second dialog."""
    h = Harness()
    out = h.feed(req("INVITE", body=SDP))
    assert statuses(out) == [100, 180]
    assert "tag=" not in (out[0].headers.get("To") or "") and "tag=" in (out[1].headers.get("To") or "")
    assert out[0].headers.get("Via") == "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb1"
    again = h.feed(req("INVITE", body=SDP))
    assert statuses(again) == [180] and again[0].serialize() == out[1].serialize()
    assert len([e for e in h.events if isinstance(e, IncomingCall)]) == 1
    assert h.ua.live_calls == 1


def test_a_merged_invite_gets_482_on_its_own_branch_and_no_second_call() -> None:
    """8.2.2.2: the same INVITE (Call-ID, From tag, CSeq) in another transaction (17.2.3: another branch, or the
    same branch from another sent-by) is a merged request from a forking proxy: 482, before and after the answer;
    a retransmission of the first copy still gets the first copy's response."""
    h = Harness()
    first = h.feed(req("INVITE", body=SDP))
    merged = h.feed(req("INVITE", body=SDP, branch="b2"))
    assert statuses(merged) == [482] and merged[0].reason == "Loop Detected"
    assert merged[0].headers.get("Via") == "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb2"
    other_host = req("INVITE", body=SDP).replace(b"Via: SIP/2.0/UDP 127.0.0.1:5070", b"Via: SIP/2.0/UDP 10.0.0.9")
    assert statuses(h.feed(other_host)) == [482]
    assert [m.serialize() for m in h.feed(req("INVITE", body=SDP))] == [first[1].serialize()]  # retransmission
    (incoming,) = [e for e in h.events if isinstance(e, IncomingCall)]
    h.ua.answer(incoming.call, 40000, h.now)
    h._drain()
    assert statuses(h.feed(req("INVITE", body=SDP, branch="b3"))) == [482]
    assert h.ua.live_calls == 1


def test_200_ok_is_retransmitted_at_doubling_intervals_until_ack() -> None:
    """13.3.1.4: 2xx retransmitted after T1, 2T1, ... capped at T2 = 4 s; the ACK stops it."""
    h = Harness()
    call = h.call()
    h.ua.answer(call, 40000, h.now)
    first = h._drain()
    assert statuses(first) == [200] and b"m=audio 40000 RTP/AVP 0 101" in first[0].body
    assert first[0].headers.get("Contact") == "<sip:agent@127.0.0.1:5080>"
    resent = h.advance(12.0)
    assert [t for t, m in h.sent if isinstance(m, Response) and m.status == 200] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]
    assert all(m.serialize() == first[0].serialize() for m in resent)
    assert h.feed(req("ACK", to_tag=to_tag(first[0]), branch="ack")) == []
    assert h.events[-1] == CallConfirmed(call) and h.ua.state(call) is CallState.CONFIRMED
    assert h.timers == {} and h.advance(40.0) == []


def test_no_ack_ends_the_call_with_bye_after_64_t1() -> None:
    h = Harness()
    call = h.call()
    h.ua.answer(call, 40000, 0.0)
    h._drain()
    out = h.advance(32.0)
    assert isinstance(out[-1], Request) and out[-1].method == "BYE"
    assert CallEnded(call, "no ACK") in h.events


def test_bye_ends_the_call_and_a_retransmitted_bye_gets_200_again() -> None:
    h = Harness()
    call, tag = h.established()
    bye = req("BYE", to_tag=tag, cseq=2, branch="bye")
    out = h.feed(bye)
    assert statuses(out) == [200] and out[0].cseq.method == "BYE"
    assert h.events[-1] == CallEnded(call, "remote hangup") and h.ua.state(call) is CallState.ENDED
    assert statuses(h.feed(bye)) == [200] and h.events[-1] == CallEnded(call, "remote hangup")
    assert statuses(h.feed(req("BYE", to_tag=";tag=other", cseq=3))) == [481]
    h.advance(40.0)  # forgotten after 32 s: now the dialog is unknown
    assert statuses(h.feed(bye)) == [481] and h.timers == {}


def test_bye_in_the_early_dialog_gets_200_and_the_invite_487() -> None:
    """15, 15.1.2: a caller may end an early dialog (our 180's To tag) with BYE: 200 to it, 487 to the pending
    INVITE (retransmitted until ACK), the call ends; the BYE's retransmission gets 200 again."""
    h = Harness()
    call = h.call()
    tag = to_tag([m for _, m in h.sent if isinstance(m, Response) and m.status == 180][0])
    out = h.feed(req("BYE", to_tag=tag, cseq=2, branch="bye"))
    assert [(m.status, m.cseq.method) for m in out] == [(200, "BYE"), (487, "INVITE")]
    assert h.events[-1] == CallEnded(call, "remote hangup") and h.ua.live_calls == 0
    assert [(m.status, m.cseq.method) for m in h.feed(req("BYE", to_tag=tag, cseq=2, branch="bye"))] == \
        [(200, "BYE")]
    assert statuses(h.advance(0.5)) == [487]
    h.feed(req("ACK", to_tag=tag))
    assert h.advance(10.0) == []
    with pytest.raises(LocalProtocolError):
        h.ua.answer(call, 40000, h.now)  # the shell's late answer is refused


def test_a_reinvite_in_the_early_dialog_gets_500_with_retry_after_and_the_call_rings_on() -> None:
    """14.2: a second INVITE before the first is answered gets 500 with Retry-After (0-10 s), not 481 (which says
    the dialog is gone, 12.2.1.2); the call still rings and is answered as before."""
    h = Harness()
    call = h.call()
    tag = to_tag([m for _, m in h.sent if isinstance(m, Response) and m.status == 180][0])
    (out,) = h.feed(req("INVITE", to_tag=tag, cseq=2, branch="re", body=SDP))
    assert out.status == 500 and 1 <= int(out.headers.get("Retry-After") or 0) <= 10
    assert h.ua.state(call) is CallState.PROCEEDING and h.ua.live_calls == 1
    h.ua.answer(call, 40000, h.now)
    assert statuses(h._drain()) == [200]


def test_cancel_before_answer_gives_200_and_487_retransmitted_until_ack() -> None:
    """9.2: 200 to the CANCEL, 487 to the INVITE."""
    h = Harness()
    call = h.call()
    out = h.feed(req("CANCEL", cseq=1, branch="b1"))
    assert [(m.status, m.cseq.method) for m in out] == [(200, "CANCEL"), (487, "INVITE")]
    assert h.events[-1] == CallEnded(call, "cancelled")
    assert statuses(h.advance(0.6)) == [487]
    h.feed(req("ACK", to_tag=to_tag(out[1])))
    assert h.timers.keys() == {f"forget:{call}"}
    with pytest.raises(LocalProtocolError):
        h.ua.answer(call, 40000, h.now)  # too late: the state stays ENDED
    assert h.ua.state(call) is CallState.ENDED
    assert statuses(h.feed(req("CANCEL", branch="nope", call_id="zz"))) == [481]


def test_a_cancel_with_its_invites_branch_from_another_sent_by_cancels_nothing() -> None:
    """RFC 3261 9.2, 17.2.3: a CANCEL is for the INVITE whose transaction it matches (branch and sent-by), with
    the INVITE's Request-URI, Call-ID, From tag and CSeq number. One with the ringing call's branch but another
    sent-by (it cancelled the call), CSeq number or Request-URI gets 481 and the call still rings; the caller's
    own CANCEL then gets 200 and 487."""
    h = Harness()
    call = h.call()
    via = b"127.0.0.1:5070;branch=z9hG4bKb1"
    for other in (req("CANCEL").replace(via, b"198.51.100.9:5070;branch=z9hG4bKb1"),
                  req("CANCEL").replace(via, b"127.0.0.1:5071;branch=z9hG4bKb1"),
                  req("CANCEL", cseq=2)):
        assert statuses(h.feed(other)) == [481], other
    assert h.ua.state(call) is CallState.PROCEEDING and not any(isinstance(e, CallEnded) for e in h.events)
    out = h.feed(req("CANCEL"))
    assert [(m.status, m.cseq.method) for m in out] == [(200, "CANCEL"), (487, "INVITE")]
    assert h.events[-1] == CallEnded(call, "cancelled")
    h.feed(req("INVITE", body=SDP, call_id="c2"))
    second = [e for e in h.events if isinstance(e, IncomingCall)][-1].call
    other_uri = req("CANCEL", call_id="c2").replace(b"CANCEL sip:agent@", b"CANCEL sip:other@")
    assert statuses(h.feed(other_uri)) == [481] and h.ua.state(second) is CallState.PROCEEDING


def test_an_rfc_2543_callers_cancel_matches_by_its_top_via_and_headers() -> None:
    """RFC 3261 9.2, 17.2.3: an RFC 2543 caller's branch has no magic cookie, or it sends none: its CANCEL is for
    the INVITE with the same Request-URI, To tag, From tag, Call-ID, CSeq number and top Via. Without a branch it
    got 481 and the call it gave up on was answered; one with another top Via still gets 481."""
    h = Harness()
    old_via = b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb1"
    h.feed(req("INVITE", body=SDP).replace(old_via, b"Via: SIP/2.0/UDP 127.0.0.1:5070"))
    call = next(e.call for e in h.events if isinstance(e, IncomingCall))
    assert statuses(h.feed(req("CANCEL").replace(old_via, b"Via: SIP/2.0/UDP 127.0.0.1:5072"))) == [481]
    assert statuses(h.feed(req("CANCEL").replace(old_via, b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=1"))) == [481]
    assert h.ua.state(call) is CallState.PROCEEDING
    out = h.feed(req("CANCEL").replace(old_via, b"Via: SIP/2.0/UDP 127.0.0.1:5070"))
    assert [(m.status, m.cseq.method) for m in out] == [(200, "CANCEL"), (487, "INVITE")]
    assert h.events[-1] == CallEnded(call, "cancelled")


def test_options_488_400_405_501_and_busy() -> None:
    h = Harness(max_calls=1)
    ok = h.feed(req("OPTIONS"))[0]
    assert ok.status == 200 and ok.headers.get("Allow") == ALLOW_HEADER
    g729 = SDP.replace(b"RTP/AVP 0 101", b"RTP/AVP 18")
    refused = h.feed(req("INVITE", body=g729, call_id="g"))
    assert statuses(refused) == [100, 488]
    assert refused[1].headers.get("Warning") == '305 127.0.0.1 "no PCMU/PCMA audio stream in the offer"'
    assert h.events == [Refused("g", "sip:caller@127.0.0.1", 488, "no PCMU/PCMA audio stream in the offer")]
    no_ctype = req("INVITE", body=SDP, call_id="noctype").replace(b"Content-Type: application/sdp\r\n", b"")
    assert statuses(h.feed(no_ctype)) == [100, 415]
    assert statuses(h.feed(req("INVITE", body=b"not sdp", call_id="badsdp"))) == [100, 400]
    for method, status in (("REGISTER", 405), ("REFER", 405), ("FROBNICATE", 501)):  # SIP's own methods: 405
        refused = h.feed(req(method))
        assert statuses(refused) == [status] and refused[0].headers.get("Allow") == ALLOW_HEADER, method
    bad = h.feed(req("OPTIONS", branch="bad").replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 BYE"))  # a new transaction
    assert statuses(bad) == [400] and (bad[0].headers.get("Warning") or "").startswith("399 127.0.0.1")
    assert h.feed(b"\x00garbage") == [] and h.ua.stats.dropped == 1
    h.call()
    full = h.feed(req("INVITE", body=SDP, call_id="second"))  # a gateway over capacity (21.5.4): not 486 Busy Here
    assert statuses(full) == [100, 503] and full[1].headers.get("Retry-After") == "5"
    assert h.events[-1] == Refused("second", "sip:caller@127.0.0.1", 503, "max_calls (1) reached")
    assert len([e for e in h.events if isinstance(e, IncomingCall)]) == 1


def test_an_options_ping_of_a_full_bridge_gets_the_503_an_invite_would() -> None:
    """RFC 3261 11.2: OPTIONS is answered as an INVITE would be. A proxy that probes its gateways with OPTIONS
    (a dispatcher's health check) must see the full bridge as unavailable, not keep routing calls into 503s; a
    keep-alive in the live call's dialog still gets 200, and the ping gets 200 again once a slot is free."""
    h = Harness(max_calls=1)
    call, tag = h.established()
    full = h.feed(req("OPTIONS", call_id="ping"))
    assert statuses(full) == [503] and full[0].headers.get("Retry-After") == "5"
    assert full[0].headers.get("Allow") == ALLOW_HEADER
    assert statuses(h.feed(req("OPTIONS", to_tag=tag, cseq=2))) == [200]
    h.feed(req("BYE", to_tag=tag, cseq=3))
    assert statuses(h.feed(req("OPTIONS", call_id="ping2"))) == [200]

def test_an_options_ping_while_the_agent_server_is_down_gets_the_503_an_invite_would() -> None:
    """11.2 again: while the shell reports the agent server down (or full, with its Retry-After), a ping gets 503
    as an INVITE would, a keep-alive in a live call's dialog still 200; once it is back, pings get 200."""
    h = Harness()
    call, tag = h.established()
    h.ua.agent_server(30)
    down = h.feed(req("OPTIONS", call_id="ping"))
    assert statuses(down) == [503] and down[0].headers.get("Retry-After") == "30"
    assert statuses(h.feed(req("OPTIONS", to_tag=tag, cseq=2))) == [200]
    h.ua.agent_server(None)
    assert statuses(h.feed(req("OPTIONS", call_id="ping2"))) == [200]


def test_an_options_answer_accepts_every_body_type_the_bridge_reads() -> None:
    """RFC 3261 11.2: Accept in the answer to OPTIONS lists the body types we take: a peer that reads it learns
    that INFO's DTMF bodies and SIP-T/SIP-I multipart offers are taken, not application/sdp alone."""
    accept = Harness().feed(req("OPTIONS"))[0].headers.get("Accept") or ""
    assert [t.strip() for t in accept.split(",")] == [
        "application/sdp", "multipart/mixed", "multipart/alternative", "application/dtmf-relay", "application/dtmf"]


def test_a_message_over_the_size_limit_gets_513_not_silence() -> None:
    """RFC 3261 21.5.14: a request longer than the UA takes (8 KiB here) is answered 513 Message Too Large, naming
    the sizes in a Warning, instead of dropped (the caller would retransmit it until its transaction timed out)."""
    h = Harness()
    big = req("INVITE", body=SDP, call_id="big", headers=f"X-Padding: {'x' * 9000}\r\n")
    refused = h.feed(big)
    assert statuses(refused) == [513] and refused[0].reason == "Message Too Large"
    assert refused[0].headers.get("Warning") == f'399 127.0.0.1 "message of {len(big)} bytes exceeds 8192"'
    assert not [e for e in h.events if isinstance(e, IncomingCall)]
    assert statuses(h.feed(req("INVITE", body=SDP, call_id="small"))) == [100, 180]  # the UA goes on


def test_a_request_that_is_not_utf8_gets_400_saying_so_not_silence() -> None:
    """RFC 3261 7.3.1/25: header text is UTF-8. An INVITE from a PBX that writes the caller's name in Latin-1 is
    malformed, and is answered 400 with the reason in a Warning (its sender's log says why) instead of dropped
    (the caller retransmitted it into silence until its transaction timed out)."""
    h = Harness()
    latin1 = req("INVITE", body=SDP, call_id="latin1").replace(b"From: <sip:", b'From: "M\xfcller" <sip:')
    refused = h.feed(latin1)
    assert statuses(refused) == [400]
    assert refused[0].headers.get("Warning") == '399 127.0.0.1 "head is not UTF-8 (byte 0xfc)"'
    assert (refused[0].headers.get("Call-ID"), str(refused[0].cseq)) == ("latin1", "1 INVITE")
    assert h.ua.stats.bad_requests == 1 and not h.events
    assert statuses(h.feed(req("INVITE", body=SDP, call_id="utf8"))) == [100, 180]  # the UA goes on

def test_a_request_of_another_sip_version_gets_505() -> None:
    """RFC 3261 21.5.6: a request in a SIP version we do not speak is answered 505 Version Not Supported, not
    400 (nothing in it is malformed for its own version)."""
    refused = Harness().feed(req("OPTIONS").replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1))
    assert [(m.status, m.reason) for m in refused] == [(505, "Version Not Supported")]
    assert refused[0].headers.get("Warning") == "399 127.0.0.1 \"unsupported version 'SIP/3.0'\""

def test_local_hangup_sends_bye_until_answered_and_info_dtmf() -> None:
    h = Harness()
    call, tag = h.established()
    info = h.feed(req("INFO", to_tag=tag, cseq=2, body=b"Signal=7\r\nDuration=160\r\n", ctype="application/dtmf-relay"))
    assert statuses(info) == [200] and h.events[-1] == DtmfReceived(call, "7")
    bare = h.feed(req("INFO", to_tag=tag, cseq=3, body=b"8\r\n", ctype="application/dtmf"))
    assert statuses(bare) == [200] and h.events[-1] == DtmfReceived(call, "8")
    h.ua.hangup(call, h.now)
    (bye,) = h._drain()
    assert isinstance(bye, Request) and bye.method == "BYE" and bye.uri == "sip:caller@127.0.0.1:5070"
    assert bye.from_.tag == tag.split("=")[1] and bye.to.tag == "ft" and bye.cseq.method == "BYE"
    (again,) = h.advance(h.now + 0.5)  # Timer E: re-sent after T1
    assert again.serialize() == bye.serialize()
    h.feed(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(bye.serialize().split(b"\r\n")[1:]))
    assert not any(k.startswith("bye") for k in h.timers)
    with pytest.raises(LocalProtocolError):
        h.ua.hangup(call, h.now)


def test_an_invite_whose_body_is_not_sdp_gets_415_naming_what_we_accept() -> None:
    """RFC 3261 8.2.3/21.4.13, 20.1: a body type we do not read is 415 with Accept, so the caller knows to send its
    offer as application/sdp (it was 488, which says the offer's media were unacceptable); a re-INVITE's too, the
    call going on as it was. The Accept lists what an INVITE's body is read in: SDP, alone or in a multipart body
    (a SIP-T gateway's), not the DTMF types only an INFO is read in, which it named as an OPTIONS answer does."""
    h = Harness()
    out = h.feed(req("INVITE", body=SDP, ctype="text/plain", call_id="txt"))
    assert statuses(out) == [100, 415] and out[1].reason == "Unsupported Media Type"
    assert out[1].headers.get_all("Accept") == ["application/sdp", "multipart/mixed", "multipart/alternative"]
    assert h.events[-1].status == 415 and "text/plain" in h.events[-1].why
    _, tag = h.established()
    out = h.feed(req("INVITE", to_tag=tag, body=b"Signal=5\r\n", ctype="application/dtmf-relay", cseq=2,
                     branch="re"))
    assert statuses(out) == [415]
    assert out[0].headers.get_all("Accept") == ["application/sdp", "multipart/mixed", "multipart/alternative"]


def test_a_retry_with_a_higher_cseq_after_488_is_a_new_call() -> None:
    """8.1.3.5/17.2.3: same Call-ID and From tag, CSeq + 1, new branch: a new INVITE, not a retransmission.

    The first call's record is forgotten 32 s later without taking the retry's dialog with it."""
    h = Harness()
    g729 = SDP.replace(b"RTP/AVP 0 101", b"RTP/AVP 18")
    rejected = h.feed(req("INVITE", body=g729))
    assert statuses(rejected) == [100, 488]
    h.feed(req("ACK", to_tag=to_tag(rejected[1])))
    retry = h.feed(req("INVITE", body=SDP, cseq=2, branch="b2"))
    assert statuses(retry) == [100, 180] and retry[1].cseq.number == 2
    (incoming,) = [e for e in h.events if isinstance(e, IncomingCall)]
    assert statuses(h.feed(req("INVITE", body=SDP, cseq=2, branch="b2"))) == [180]  # its retransmission
    late = h.feed(req("INVITE", body=SDP, cseq=3, branch="b3"))  # while the retry is live
    assert statuses(late) == [500] and late[0].headers.get("Retry-After")
    h.ua.answer(incoming.call, 40000, h.now)
    tag = to_tag(h._drain()[0])
    h.feed(req("ACK", to_tag=tag, cseq=2))
    h.advance(40.0)  # the rejected call is forgotten
    assert statuses(h.feed(req("BYE", to_tag=tag, cseq=3, branch="bye"))) == [200]
    assert h.events[-1] == CallEnded(incoming.call, "remote hangup")


def test_an_invite_requiring_an_unknown_extension_gets_420_and_a_retry_without_it_is_a_call() -> None:
    """8.2.2.3: Require names option tags the UAS must support; we support only timer, so 420 Bad Extension lists them
    in Unsupported. Like any final response to an INVITE it is retransmitted until ACK; no call is started."""
    h = Harness()
    out = h.feed(req("INVITE", body=SDP, headers="Require: 100rel\r\nRequire: precondition\r\n"))
    assert statuses(out) == [100, 420] and out[1].reason == "Bad Extension"
    assert out[1].headers.get("Unsupported") == "100rel, precondition"
    assert statuses(h.feed(req("INVITE", body=SDP, headers="Require: 100rel, precondition\r\n"))) == [420]  # resent
    assert statuses(h.advance(0.5)) == [420]
    h.feed(req("ACK", to_tag=to_tag(out[1])))
    assert h.advance(10.0) == []
    assert h.events == [Refused("c1", "sip:caller@127.0.0.1", 420, "requires 100rel, precondition")]
    retry = h.feed(req("INVITE", body=SDP, cseq=2, branch="b2", headers="Supported: 100rel\r\n"))
    assert statuses(retry) == [100, 180] and isinstance(h.events[-1], IncomingCall)


def test_in_dialog_and_other_requests_requiring_an_extension_get_420_and_ack_cancel_ignore_require() -> None:
    """8.2.2.3: a BYE or OPTIONS with an unknown Require gets 420 (the call goes on); Require in ACK and CANCEL
    is ignored."""
    ringing = Harness()
    cancelled = ringing.call()
    cancel = ringing.feed(req("CANCEL", branch="b1", headers="Require: foo\r\n"))
    assert statuses(cancel) == [200, 487] and ringing.events[-1] == CallEnded(cancelled, "cancelled")
    h = Harness()
    call, tag = h.established()
    h.feed(req("ACK", to_tag=tag, headers="Require: foo\r\n"))
    assert h.ua.state(call) is CallState.CONFIRMED
    opt = h.feed(req("OPTIONS", cseq=2, branch="o", call_id="other", headers="Require: foo\r\n"))
    assert statuses(opt) == [420] and opt[0].headers.get("Unsupported") == "foo"
    bye = h.feed(req("BYE", to_tag=tag, cseq=2, branch="bye", headers="Require: foo, bar\r\n"))
    assert statuses(bye) == [420] and bye[0].headers.get("Unsupported") == "foo, bar"
    assert h.ua.state(call) is CallState.CONFIRMED and not any(isinstance(e, CallEnded) for e in h.events)
    assert statuses(h.feed(req("BYE", to_tag=tag, cseq=3, branch="bye2"))) == [200]


def test_an_ipv6_offer_gets_488_with_warning_and_the_shell_is_told_why() -> None:
    """RFC 3261 21.4.26/20.43: a new call's IPv6-only offer is refused with 488 and Warning 301; a re-INVITE
    moving the media to IPv6 gets the same and the call goes on where it was (14.2)."""
    h = Harness()
    v6 = SDP.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP6 ::1")
    out = h.feed(req("INVITE", body=v6, call_id="v6"))
    assert statuses(out) == [100, 488]
    assert out[1].headers.get("Warning") == '301 127.0.0.1 "media address IN IP6 ::1: this bridge speaks IPv4 only"'
    assert h.events == [Refused("v6", "sip:caller@127.0.0.1", 488, "media address IN IP6 ::1: this bridge speaks "
                                                                   "IPv4 only")]
    call, tag = h.established()
    moved = h.feed(req("INVITE", to_tag=tag, cseq=2, branch="re2", body=v6))
    assert statuses(moved) == [488] and (moved[0].headers.get("Warning") or "").startswith("301 ")
    assert isinstance(h.events[-1], Refused) and h.ua.state(call) is CallState.CONFIRMED


def test_reinvite_hold_resume_and_move_media() -> None:
    """RFC 3261 14.2, RFC 3264 8: a re-INVITE is answered 200 + SDP (o= kept, version + 1 only when the SDP
    changed), retransmitted until its ACK; hold (sendonly) is answered recvonly; the media may move."""
    h = Harness()
    call, tag = h.established()
    first_sdp = SessionDescription.parse(h.sent[-1][1].body)
    hold = req("INVITE", to_tag=tag, cseq=2, branch="re1", body=SDP + b"a=sendonly\r\n")
    (ok,) = h.feed(hold)
    assert ok.status == 200 and ok.cseq == CSeq(2, "INVITE") and h.ua.state(call) is CallState.REANSWERED
    held = SessionDescription.parse(ok.body)
    assert held.origin.split()[:2] == first_sdp.origin.split()[:2]
    assert int(held.origin.split()[2]) == int(first_sdp.origin.split()[2]) + 1
    assert held.media[0].attr("recvonly") == [None] and held.media[0].port == 40000
    changed = h.events[-1]
    assert isinstance(changed, MediaChanged) and changed.call == call and not changed.media.sends
    assert [m.serialize() for m in h.feed(hold)] == [ok.serialize()]  # a retransmission: the same 200, no event
    (glare,) = h.feed(req("INVITE", to_tag=tag, cseq=3, branch="re2", body=SDP))
    assert glare.status == 491
    assert [m.serialize() for m in h.advance(h.now + 0.5)] == [ok.serialize(), glare.serialize()]  # each until its ACK
    assert h.feed(req("ACK", to_tag=tag, cseq=1)) == [] and h.ua.state(call) is CallState.REANSWERED  # a stale ACK
    h.feed(req("ACK", to_tag=tag, cseq=3, branch="re2"))  # the 491's (17.2.1: of its INVITE's branch)
    h.feed(req("ACK", to_tag=tag, cseq=2))
    assert h.ua.state(call) is CallState.CONFIRMED and h.timers == {}

    moved = SDP.replace(b"m=audio 6000", b"m=audio 6002").replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 127.0.0.2")
    (ok,) = h.feed(req("INVITE", to_tag=tag, cseq=3, branch="re3", body=moved))
    resumed = SessionDescription.parse(ok.body)
    assert resumed.media[0].attr("sendrecv") == [None] and resumed.origin.split()[2] == str(int(
        held.origin.split()[2]) + 1)
    media = h.events[-1].media
    assert (media.remote_host, media.remote_port, media.sends) == ("127.0.0.2", 6002, True)
    h.feed(req("ACK", to_tag=tag, cseq=3))
    (ok,) = h.feed(req("INVITE", to_tag=tag, cseq=4, branch="re4", body=moved))  # a session refresh
    assert ok.body == resumed.serialize()  # unchanged SDP, unchanged version

    pcma_only = SDP.replace(b"RTP/AVP 0 101", b"RTP/AVP 8 101")
    h.feed(req("ACK", to_tag=tag, cseq=4))
    assert statuses(h.feed(req("INVITE", to_tag=tag, cseq=5, branch="re5", body=pcma_only))) == [488]
    assert h.ua.state(call) is CallState.CONFIRMED  # the call goes on as it was
    assert statuses(h.feed(req("INVITE", to_tag=";tag=nope", cseq=7, branch="re7", body=SDP))) == [481]


def test_an_invite_refused_beside_the_calls_transaction_is_answered_again_until_timer_h() -> None:
    """RFC 3261 17.2.1: a 481 to an INVITE for no dialog, in a transaction of its own, is resent on Timer G (0.5 s
    doubling to 4 s) until its ACK or Timer H (32 s), then forgotten: no timer left."""
    h = Harness()
    (refused,) = h.feed(req("INVITE", to_tag=";tag=nope", body=SDP))
    assert refused.status == 481
    resent = h.advance(40.0)
    assert [t for t, m in h.sent[1:]] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert {m.serialize() for m in resent} == {refused.serialize()} and h.timers == {}


def test_a_reinvite_refused_488_is_answered_again_until_its_ack_and_the_call_goes_on() -> None:
    """RFC 3261 17.2.1: an INVITE server transaction resends its non-2xx final on Timer G (T1 doubling to T2) until
    the ACK or Timer H (64*T1), a re-INVITE's as a first INVITE's; its retransmission gets the same response, and a
    CANCEL of it 200 (9.2). The call goes on as it was throughout (14.2)."""
    h = Harness()
    call, tag = h.established()
    pcma = SDP.replace(b"RTP/AVP 0 101", b"RTP/AVP 8 101")  # the call's codec is PCMU
    pcma_only = req("INVITE", to_tag=tag, cseq=2, branch="re2", body=pcma)
    (refused,) = h.feed(pcma_only)
    assert refused.status == 488 and refused.cseq == CSeq(2, "INVITE")
    assert [m.serialize() for m in h.advance(h.now + 0.5)] == [refused.serialize()]  # Timer G
    assert [m.serialize() for m in h.feed(pcma_only)] == [refused.serialize()]  # a retransmission: no new event
    assert [e for e in h.events if isinstance(e, Refused)] == [
        Refused("c1", "sip:caller@127.0.0.1", 488, "re-INVITE: no PCMU audio stream in the offer")]
    assert h.feed(req("ACK", to_tag=tag, cseq=2, branch="re2")) == [] and h.timers == {}
    assert h.advance(h.now + 40.0) == [] and h.ua.state(call) is CallState.CONFIRMED
    assert statuses(h.feed(req("CANCEL", to_tag=tag, cseq=2, branch="re2"))) == [200]

    start = h.now
    h.feed(req("INVITE", to_tag=tag, cseq=3, branch="re3", body=pcma))  # never acknowledged
    h.advance(start + 40.0)
    again = [(t - start, m.status, m.cseq.number) for t, m in h.sent if t > start]
    assert again == [(t, 488, 3) for t in (0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5)]  # then Timer H
    assert h.ua.state(call) is CallState.CONFIRMED and h.timers == {}
    assert statuses(h.feed(req("BYE", to_tag=tag, cseq=4))) == [200]


def test_a_reinvite_refused_by_the_request_checks_is_answered_again_until_its_ack() -> None:
    """RFC 3261 17.2.1 for the other non-2xx finals to a re-INVITE of a confirmed call: 420 to one requiring an
    extension (8.2.2.3) and 500 to one below the dialog's CSeq (12.2.2) are resent until their ACK too, with the
    same headers; the call goes on as it was."""
    h = Harness()
    call, tag = h.established()
    (bad_ext,) = h.feed(req("INVITE", to_tag=tag, cseq=5, branch="re5", body=SDP, headers="Require: 100rel\r\n"))
    assert bad_ext.status == 420 and bad_ext.headers.get("Unsupported") == "100rel"
    assert [m.serialize() for m in h.advance(h.now + 0.5)] == [bad_ext.serialize()]
    h.feed(req("ACK", to_tag=tag, cseq=5, branch="re5"))
    (stale,) = h.feed(req("INVITE", to_tag=tag, cseq=4, branch="re4", body=SDP))
    assert stale.status == 500 and [m.serialize() for m in h.advance(h.now + 0.5)] == [stale.serialize()]
    h.feed(req("ACK", to_tag=tag, cseq=4, branch="re4"))
    assert h.timers == {} and h.ua.state(call) is CallState.CONFIRMED
    assert not [e for e in h.events if isinstance(e, MediaChanged)]


def test_reinvite_never_acknowledged_ends_the_call_with_bye() -> None:
    """13.3.1.4: a 2xx to a re-INVITE without ACK for 64*T1 ends the dialog with BYE."""
    h = Harness()
    call, tag = h.established()
    h.feed(req("INVITE", to_tag=tag, cseq=2, branch="re1", body=SDP))
    out = h.advance(h.now + 32.0)
    assert isinstance(out[-1], Request) and out[-1].method == "BYE"
    assert h.events[-1] == CallEnded(call, "no ACK") and h.ua.state(call) is CallState.ENDED


def test_record_route_is_copied_into_responses_that_set_up_the_dialog() -> None:
    """12.1.1: a UAS copies every Record-Route value, in order, into 18x/2xx to the INVITE; our BYE routes by them."""
    h = Harness()
    rr = b"Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\nRecord-Route: <sip:p3.example;lr>\r\n"
    trying, ringing = h.feed(req("INVITE", body=SDP).replace(b"Contact:", rr + b"Contact:"))
    routes = ["<sip:p1.example;lr>, <sip:p2.example;lr>", "<sip:p3.example;lr>"]
    assert trying.headers.lines("Record-Route") == [] and ringing.headers.lines("Record-Route") == routes
    call = h.events[-1].call
    h.ua.answer(call, 40000, h.now)
    (ok,) = h._drain()
    assert ok.headers.lines("Record-Route") == routes
    h.feed(req("ACK", to_tag=to_tag(ok)))
    h.ua.hangup(call, h.now)
    (bye,) = h._drain()
    assert bye.headers.get_all("Route") == ["<sip:p1.example;lr>", "<sip:p2.example;lr>", "<sip:p3.example;lr>"]


def test_delayed_offer_gets_our_offer_and_the_ack_brings_the_answer() -> None:
    """RFC 3261 13.2.1/13.3.1: an INVITE without SDP gets our offer in the 200 OK, the ACK carries the answer; the
    same for a re-INVITE without SDP (with the codec in use). An ACK without an answer ends the call with BYE."""
    h = Harness()
    h.feed(req("INVITE"))
    (incoming,) = [e for e in h.events if isinstance(e, IncomingCall)]
    assert (incoming.media.codec.name, incoming.media.sends) == ("PCMU", False)  # no address to send to yet
    h.ua.answer(incoming.call, 40000, h.now)
    (ok,) = h._drain()
    offer = SessionDescription.parse(ok.body)
    assert (offer.connection, offer.media[0].port, offer.media[0].formats) == ("127.0.0.1", 40000, ("0", "101"))
    assert offer.media[0].attr("sendrecv") == [None]
    answer = SDP.replace(b"RTP/AVP 0 101", b"RTP/AVP 0").replace(b"m=audio 6000", b"m=audio 6004")
    assert h.feed(req("ACK", to_tag=to_tag(ok), body=answer)) == []
    assert h.events[-2] == CallConfirmed(incoming.call)
    media = h.events[-1].media
    assert (media.remote_port, media.sends, media.dtmf_payload_type) == (6004, True, None)

    tag = to_tag(ok)
    before = len(h.events)
    (re_ok,) = h.feed(req("INVITE", to_tag=tag, cseq=2, branch="re1"))
    assert SessionDescription.parse(re_ok.body).media[0].formats == ("0",)
    assert len(h.events) == before  # RFC 3264 8: our offer changes nothing until its answer (RTP goes on to 6004)
    h.feed(req("ACK", to_tag=tag, cseq=2, body=answer.replace(b"6004", b"6006")))
    assert h.events[-1].media.remote_port == 6006 and h.ua.state(incoming.call) is CallState.CONFIRMED

    h.feed(req("INVITE", to_tag=tag, cseq=3, branch="re2"))
    assert h.feed(req("ACK", to_tag=tag, cseq=3))[0].method == "BYE"  # no answer: the call cannot go on
    assert isinstance(h.events[-1], CallEnded) and h.events[-1].reason.startswith("no usable SDP answer")
    assert h.ua.state(incoming.call) is CallState.ENDED


def test_reinvite_from_a_new_address_is_answered_there() -> None:
    """RFC 3581/18.2.2: responses go to the request's source; a re-INVITE from a new port (the caller's NAT binding
    changed) gets its 200, the 200's retransmissions and our later BYE at that port."""
    h = Harness()
    call, tag = h.established()
    moved = ("127.0.0.1", 5099)
    h.feed(req("INVITE", to_tag=tag, cseq=2, branch="re1", body=SDP), source=moved)
    h.advance(h.now + 0.6)
    h.ua.hangup(call, h.now)
    h._drain()
    assert [(m.status if isinstance(m, Response) else m.method) for _, m in h.sent[-2:]] == [200, 200]  # no BYE yet:
    h.feed(req("ACK", to_tag=tag, cseq=2, branch="re1ack"), source=moved)  # a callee's BYE waits for the ACK (15)
    assert [(m.status if isinstance(m, Response) else m.method) for _, m in h.sent[-3:]] == [200, 200, "BYE"]
    assert h.sent_to[-3:] == [moved, moved, moved]


def test_our_bye_goes_to_the_contact_a_reinvite_refreshed() -> None:
    """RFC 3261 12.2.2: a re-INVITE's Contact is the caller's new remote target (a phone whose address changed, a
    PBX that re-anchored the call): our BYE's Request-URI is that, not the first INVITE's Contact, or a proxy on
    the route sends our hang-up to where the caller no longer is and its phone stays off-hook."""
    h = Harness()
    call, tag = h.established()
    moved = "Contact: <sip:caller@192.0.2.7:5072;transport=udp>\r\n"
    h.feed(req("INVITE", to_tag=tag, cseq=2, branch="re1", body=SDP).replace(
        b"Contact: <sip:caller@127.0.0.1:5070>\r\n", moved.encode()))
    h.feed(req("ACK", to_tag=tag, cseq=2, branch="re1ack"))
    h.feed(req("INVITE", to_tag=tag, cseq=3, branch="re2", body=SDP).replace(  # a refresh without Contact keeps it
        b"Contact: <sip:caller@127.0.0.1:5070>\r\n", b""))
    h.feed(req("ACK", to_tag=tag, cseq=3, branch="re2ack"))
    h.ua.hangup(call, h.now)
    [bye] = h._drain()
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.uri == "sip:caller@192.0.2.7:5072;transport=udp"


def test_a_retransmitted_info_is_one_key_press_and_an_older_one_none() -> None:
    """Over UDP a lost 200 makes the caller send its INFO again (same CSeq): that is the same key press, not a
    second one for the agent. An INFO older than one already taken (out of order, RFC 3261 12.2.2) gets 500."""
    h = Harness()
    call, tag = h.established()
    seven = req("INFO", to_tag=tag, cseq=3, body=b"Signal=7\r\nDuration=160\r\n", ctype="application/dtmf-relay")
    assert statuses(h.feed(seven)) == [200]
    assert statuses(h.feed(seven)) == [200]
    assert [e for e in h.events if isinstance(e, DtmfReceived)] == [DtmfReceived(call, "7")]
    older = h.feed(req("INFO", to_tag=tag, cseq=2, body=b"8\r\n", ctype="application/dtmf"))
    assert statuses(older) == [500]
    assert statuses(h.feed(req("INFO", to_tag=tag, cseq=4, body=b"9\r\n", ctype="application/dtmf"))) == [200]
    assert [e for e in h.events if isinstance(e, DtmfReceived)] == [DtmfReceived(call, "7"), DtmfReceived(call, "9")]
