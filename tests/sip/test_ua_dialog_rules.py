"""Dialog rules a PBX relies on. In-dialog OPTIONS (the dialog keep-alive of Kamailio's dialog module, OpenSIPS,
SBCs) and INFO answer for the dialog as it is now: 200 while the call is up, 481 once it is gone (RFC 3261
12.2.2), so the peer drops a call the bridge no longer has (e.g. after a bridge restart) instead of keeping it up
forever. Our BYE never overtakes the ACK of our 2xx (15)."""

from __future__ import annotations

from clients.sip.message import Request, Response
from clients.sip.ua_events import CallState
from tests.sip.test_ua import SDP, Harness, req


def _answered(h: Harness, headers: str = "") -> str:
    out = h.feed(req("INVITE", body=SDP, headers=headers))
    tag = out[-1].headers.get("To").split("tag=")[1]  # type: ignore[union-attr]
    h.ua.answer(h.events[-1].call, 7000, h.now)  # type: ignore[attr-defined]
    h._drain()
    h.feed(req("ACK", to_tag=f";tag={tag}"))
    return f";tag={tag}"


def _status(out: list) -> list[int]:  # type: ignore[type-arg]
    return [m.status for m in out if isinstance(m, Response)]


def test_in_dialog_options_is_481_for_a_dialog_that_does_not_exist() -> None:
    h = Harness()
    assert _status(h.feed(req("OPTIONS", to_tag=";tag=nosuch", call_id="gone"))) == [481]
    assert _status(h.feed(req("OPTIONS", call_id="ping"))) == [200]  # out of dialog: a plain ping


def test_in_dialog_options_and_info_follow_the_call() -> None:
    h = Harness()
    tag = _answered(h)
    assert _status(h.feed(req("OPTIONS", to_tag=tag, cseq=2))) == [200]
    h.feed(req("BYE", to_tag=tag, cseq=3))
    assert _status(h.feed(req("OPTIONS", to_tag=tag, cseq=4))) == [481]
    info = req("INFO", to_tag=tag, cseq=5, body=b"Signal=5\r\nDuration=160\r\n", ctype="application/dtmf-relay")
    assert _status(h.feed(info)) == [481]


def test_hanging_up_before_the_ack_ends_the_call_at_once_and_sends_the_bye_after_the_ack() -> None:
    """RFC 3261 15: a callee must not send BYE before the ACK of its 2xx arrives (or the 2xx times out). The call
    ends for the agent at once; the 2xx goes on being retransmitted; the ACK releases the BYE."""
    from clients.sip.ua_events import CallEnded
    from tests.sip.test_ua import Harness

    def methods(out: list) -> list:  # type: ignore[type-arg]
        return [m.status if isinstance(m, Response) else m.method for m in out]

    for acked in (True, False):
        h = Harness()
        out = h.feed(req("INVITE", body=SDP))
        tag = f';tag={out[-1].headers.get("To").split("tag=")[1]}'  # type: ignore[union-attr]
        h.ua.answer(h.events[-1].call, 7000, h.now)  # type: ignore[attr-defined]
        h._drain()
        h.ua.hangup(h.events[-1].call, h.now)  # type: ignore[attr-defined]
        h._drain()
        assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["local hangup"]
        assert methods(h.advance(h.now + 1.6)) == [200, 200]  # the 2xx's retransmissions, no BYE
        later = h.feed(req("ACK", to_tag=tag)) if acked else h.advance(h.now + 40)
        sent = methods(later)  # (unacked: the 2xx retransmitted until its timeout, then the BYE and its own)
        assert "BYE" in sent and 200 not in sent[sent.index("BYE"):], sent
        assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["local hangup"]  # one end, not two


def _answer_to(request: Request, status: int) -> bytes:
    """The caller's response to a request of ours (8.2.6: Via, From, To, Call-ID and CSeq copied)."""
    copied = "".join(f"{name}: {request.headers.get(name)}\r\n" for name in ("Via", "From", "To", "Call-ID", "CSeq"))
    return f"SIP/2.0 {status} Whatever\r\n{copied}Content-Length: 0\r\n\r\n".encode()


def _keepalive(h: Harness, call: str) -> list:  # type: ignore[type-arg]
    sent = h.ua.keepalive(call, h.now)
    out = h._drain()
    assert sent == bool(out)
    return out


def test_a_held_caller_that_vanished_is_asked_with_options_and_hung_up() -> None:
    """12.2.1.2: a caller that holds the call may send no RTP for an hour, so silence proves nothing; our in-dialog
    OPTIONS does. Unanswered for 32 s (Timer F), the call ends with our BYE, and the agent session with it."""
    from clients.sip.ua_events import CallEnded

    h = Harness()
    call, tag = h.established()
    (options,) = _keepalive(h, call)
    assert isinstance(options, Request) and (options.method, options.uri) == ("OPTIONS", "sip:caller@127.0.0.1:5070")
    assert options.headers.get("To") == "<sip:caller@127.0.0.1>;tag=ft" and options.cseq.number == 1
    assert (options.headers.get("From") or "").endswith(tag)
    assert _keepalive(h, call) == []  # one question at a time
    later = h.advance(h.now + 31)
    assert {m.method for m in later} == {"OPTIONS"} and len(later) >= 6  # retransmitted: 0.5, 1, 2, 4, 4, ... s
    assert h.ua.state(call) is CallState.CONFIRMED
    bye = h.advance(h.now + 1.5)[-1]
    assert isinstance(bye, Request) and bye.method == "BYE" and bye.cseq.number == 2
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["caller gone: no answer to OPTIONS"]
    assert h.ua.state(call) is CallState.ENDED


def test_a_keepalive_answered_keeps_the_call_and_481_ends_it() -> None:
    """Any answer (200, or 405 from a phone that does not take OPTIONS) shows the caller is there; 481 says its
    side of the dialog is gone (12.2.1.2)."""
    from clients.sip.ua_events import CallEnded

    for status, ended in ((200, []), (405, []), (481, ["caller gone: 481 to OPTIONS"])):
        h = Harness()
        call, _ = h.established()
        (options,) = _keepalive(h, call)
        sent = h.feed(_answer_to(options, status))
        assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ended
        assert {m.method for m in sent + h.advance(h.now + 40)} == ({"BYE"} if ended else set()), status
        if not ended:
            (again,) = _keepalive(h, call)  # the next question may go
            assert again.cseq.number == 2


def test_a_keepalive_answered_only_with_100_still_times_out() -> None:
    """17.1.2.2: a provisional response moves our OPTIONS to Proceeding, where it is resent every T2 and Timer F
    still runs. A 100 stopped both, so a caller whose stack said 100 and then vanished kept its call (and agent
    session) up until the next keep-alive question, a minute later by default."""
    from clients.sip.ua_events import CallEnded

    h = Harness()
    call, _ = h.established()
    (options,) = _keepalive(h, call)
    assert h.feed(_answer_to(options, 100)) == []
    later = h.advance(h.now + 31)
    assert {m.method for m in later} == {"OPTIONS"} and len(later) >= 7  # every T2 = 4 s
    bye = h.advance(h.now + 1.5)[-1]
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["caller gone: no answer to OPTIONS"]


def test_any_in_dialog_request_below_the_callers_last_cseq_gets_500_and_changes_nothing() -> None:
    """RFC 3261 12.2.2: a request whose CSeq is lower than the caller's last one in the dialog is out of order and
    MUST get 500, whatever its method: a stale BYE must not hang up the call, a stale re-INVITE must not move the
    media. An in-dialog OPTIONS counts as a request of the dialog too; a retransmitted re-INVITE is still its own
    transaction's (17.2.3) and gets its 200 again."""
    from clients.sip.ua_events import CallEnded, MediaChanged

    h = Harness()
    call, tag = h.established()
    info = req("INFO", to_tag=tag, cseq=5, body=b"5\r\n", ctype="application/dtmf")
    assert _status(h.feed(info)) == [200]
    moved = SDP.replace(b"m=audio 6000", b"m=audio 6010")
    for stale in (req("OPTIONS", to_tag=tag, cseq=3), req("BYE", to_tag=tag, cseq=4),
                  req("INVITE", to_tag=tag, cseq=2, body=moved, branch="b2")):
        assert _status(h.feed(stale)) == [500], stale
    assert h.ua.state(call) is CallState.CONFIRMED
    assert not [e for e in h.events if isinstance(e, (CallEnded, MediaChanged))]

    assert _status(h.feed(req("OPTIONS", to_tag=tag, cseq=9))) == [200]
    assert _status(h.feed(req("INFO", to_tag=tag, cseq=7, body=b"7\r\n", ctype="application/dtmf"))) == [500]
    reinvite = req("INVITE", to_tag=tag, cseq=10, body=moved, branch="b3")
    assert _status(h.feed(reinvite)) == [200]
    h.feed(req("INFO", to_tag=tag, cseq=11, body=b"1\r\n", ctype="application/dtmf"))
    assert _status(h.feed(reinvite)) == [200]  # its retransmission, after a later INFO
    assert _status(h.feed(req("BYE", to_tag=tag, cseq=12))) == [200]
    assert [e.reason for e in h.events if isinstance(e, CallEnded)] == ["remote hangup"]


def test_a_stale_request_is_refused_for_its_method_or_extension_before_its_order() -> None:
    """RFC 3261 12.2.2: a UAS applies 8.2's rules to a request in a dialog first, then the dialog's: a stale request
    (CSeq below the caller's last) of a method we do not take gets 405 with Allow (8.2.1), or 501 for an unknown
    method, and one requiring an extension 420 (8.2.2.3), not the 500 of an out-of-order request; a stale BYE
    still gets 500, and none of them changes the call."""
    h = Harness()
    call, tag = h.established()
    assert _status(h.feed(req("OPTIONS", to_tag=tag, cseq=5))) == [200]
    refer = h.feed(req("REFER", to_tag=tag, cseq=3))
    assert _status(refer) == [405] and refer[0].headers.get("Allow") == "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"
    assert _status(h.feed(req("FROB", to_tag=tag, cseq=3))) == [501]
    assert _status(h.feed(req("OPTIONS", to_tag=tag, cseq=4, headers="Require: 100rel\r\n"))) == [420]
    assert _status(h.feed(req("BYE", to_tag=tag, cseq=4))) == [500]
    assert h.ua.state(call) is CallState.CONFIRMED and _status(h.feed(req("BYE", to_tag=tag, cseq=6))) == [200]


def test_our_bye_says_why_in_a_reason_header() -> None:
    """RFC 3326: the far end (a PBX's CDR, an SBC's log, the phone's display) learns why the bridge hung up: an RTP
    timeout, the agent gone, the caller not answering our keep-alive; also when the BYE had to wait for the ACK."""
    h = Harness()
    call, tag = h.established()
    h.ua.hangup(call, h.now, "RTP timeout")
    (bye,) = h._drain()
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.headers.get("Reason") == 'Q.850;cause=16;text="RTP timeout"'

    h = Harness()
    out = h.feed(req("INVITE", body=SDP))
    early = f';tag={out[-1].headers.get("To").split("tag=")[1]}'  # type: ignore[union-attr]
    h.ua.answer(h.events[-1].call, 7000, h.now)  # type: ignore[attr-defined]
    h._drain()
    h.ua.hangup(h.events[-1].call, h.now, 'agent "session" lost')  # type: ignore[attr-defined]
    h._drain()
    bye = [m for m in h.feed(req("ACK", to_tag=early)) if isinstance(m, Request)][0]
    assert bye.headers.get("Reason") == 'Q.850;cause=16;text="agent \\"session\\" lost"'

    h = Harness()
    call, _ = h.established()
    _keepalive(h, call)
    bye = [m for m in h.advance(h.now + 33) if isinstance(m, Request) and m.method == "BYE"][0]
    assert bye.headers.get("Reason") == 'Q.850;cause=16;text="caller gone: no answer to OPTIONS"'



def _no_bye_for(h: Harness, seconds: float) -> bool:
    return not [m for m in h.advance(h.now + seconds) if isinstance(m, Request)]


def test_a_session_timer_is_set_up_only_when_the_caller_refreshes_it() -> None:
    """RFC 4028 9: a caller that asks us to refresh (refresher=uas), or does not support timers (a proxy added
    Session-Expires), gets a 2xx without Session-Expires: the bridge sends no refreshes, so it sets up no timer
    and never hangs up for one. One that refreshes itself does get it (the sipp test sees it expire); a re-INVITE
    without Session-Expires then ends that timer."""
    for asked in ("Supported: timer\r\nSession-Expires: 90;refresher=uas\r\n", "Session-Expires: 90\r\n"):
        h = Harness()
        _answered(h, asked)
        ok = next(m for _, m in h.sent if isinstance(m, Response) and m.status == 200)
        assert (ok.headers.get("Session-Expires"), ok.headers.get("Require")) == (None, None), asked
        assert _no_bye_for(h, 600.0), asked
    h = Harness()
    tag = _answered(h, "Supported: timer\r\nSession-Expires: 120\r\n")
    ok = next(m for _, m in h.sent if isinstance(m, Response) and m.status == 200)
    assert (ok.headers.get("Session-Expires"), ok.headers.get("Require")) == ("120;refresher=uac", "timer")
    assert _no_bye_for(h, 50.0)
    assert _status(h.feed(req("INVITE", to_tag=tag, body=SDP, cseq=2, branch="b2"))) == [200]
    h.feed(req("ACK", to_tag=tag, cseq=2))
    assert _no_bye_for(h, 600.0)  # where the first interval's BYE was due at 120 - 32 = 88 s


def test_a_session_timer_due_after_the_caller_hung_up_changes_nothing() -> None:
    """The caller's BYE ends the call; its session timer, due 10 s later (the ended call is remembered for 32 s),
    sends no BYE of ours and raises nothing."""
    h = Harness()
    tag = _answered(h, "Supported: timer\r\nSession-Expires: 90\r\n")
    assert _no_bye_for(h, 50.0)
    assert _status(h.feed(req("BYE", to_tag=tag, cseq=2))) == [200]
    assert _no_bye_for(h, 600.0)
