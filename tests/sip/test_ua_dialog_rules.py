"""Dialog rules a PBX relies on. In-dialog OPTIONS (the dialog keep-alive of Kamailio's dialog module, OpenSIPS,
SBCs) and INFO answer for the dialog as it is now: 200 while the call is up, 481 once it is gone (RFC 3261
12.2.2), so the peer drops a call the bridge no longer has (e.g. after a bridge restart) instead of keeping it up
forever. Our BYE never overtakes the ACK of our 2xx (15)."""

from __future__ import annotations

from clients.sip.message import Response
from tests.sip.test_ua import SDP, Harness, req


def _answered(h: Harness) -> str:
    out = h.feed(req("INVITE", body=SDP))
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
