"""In-dialog OPTIONS (the dialog keep-alive of Kamailio's dialog module, OpenSIPS, SBCs) and INFO answer for the
dialog as it is now: 200 while the call is up, 481 once it is gone (RFC 3261 12.2.2), so the peer drops a call
the bridge no longer has (e.g. after a bridge restart) instead of keeping it up forever."""

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
