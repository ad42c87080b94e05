"""INVITEs refused outside a call's own transaction, and malformed requests, as transactions of their own: the same
response each time (RFC 3261 8.2.6.2, 17.2.1), one rule for the ACK that stops it (17.2.3, 17.1.1.3), and a
CANCEL that crosses it (9.2). On the UA core and a fake clock."""

from __future__ import annotations

from clients.sip.ua_events import CancelTimer
from tests.sip.test_ua import PEER, SDP, Harness, req, statuses, to_tag

# A Content-Length longer than the body: what a UDP datagram cut short by an MTU looks like
MALFORMED_INVITE = req("INVITE", body=SDP, call_id="cut").replace(
    f"Content-Length: {len(SDP)}".encode(), f"Content-Length: {len(SDP) + 40}".encode())


def test_a_malformed_invite_gets_one_400_resent_until_its_ack_with_one_to_tag() -> None:
    """8.2.6.2: the same To tag for the same request; 17.2.1: a retransmitted INVITE gets the same final response,
    which is resent on Timer G until the ACK (no ACK: the caller's stack would retransmit it until Timer B)."""
    h = Harness()
    (first,) = h.feed(MALFORMED_INVITE)
    assert first.status == 400 and "Content-Length" in (first.headers.get("Warning") or "")
    h.now = 0.2
    (again,) = h.feed(MALFORMED_INVITE)  # a retransmission: the caller did not get the first
    assert again.serialize() == first.serialize()
    resent = h.advance(1.0)
    assert [m.serialize() for m in resent] == [first.serialize()]  # Timer G, 0.5 s
    ack = req("ACK", to_tag=to_tag(first), call_id="cut")
    assert h.feed(ack) == [] and h.advance(40.0) == [] and h.timers == {}
    assert h.ua.stats.bad_requests == 2 and not h.events


def test_a_malformed_options_retransmitted_gets_the_same_400() -> None:
    """17.2.2: a non-INVITE's retransmission gets the final response again: byte for byte, the To tag too."""
    h = Harness()
    bad = req("OPTIONS", call_id="o").replace(b"Content-Length: 0", b"Content-Length: 80")
    (first,) = h.feed(bad)
    (again,) = h.feed(bad)
    assert first.status == 400 and "tag=" in (first.headers.get("To") or "")
    assert again.serialize() == first.serialize()


def test_the_ack_of_an_invite_without_call_id_copies_its_flaw_and_still_stops_the_400() -> None:
    """17.1.1.3: the ACK copies the INVITE's Call-ID, so lacks it too; it matches the 400's transaction by branch
    (17.2.3) and is never answered."""
    ua = Harness().ua
    no_call_id = req("INVITE", body=SDP).replace(b"Call-ID: c1\r\n", b"")
    ua.receive_datagram(no_call_id, PEER, 0.0)
    (refused,) = ua.data_to_send()  # a 400 without Call-ID, as its request: no message our parser takes
    assert refused.data.startswith(b"SIP/2.0 400 Bad Request\r\n")
    tag = refused.data.split(b";tag=")[1].split(b"\r\n")[0].decode()
    ua.receive_datagram(req("ACK", to_tag=f";tag={tag}").replace(b"Call-ID: c1\r\n", b""), PEER, 0.1)
    assert ua.data_to_send() == [] and CancelTimer("refusal:1") in ua.timer_actions()


def test_an_ack_to_a_refusal_with_another_branch_stops_its_retransmissions() -> None:
    """17.2.3: an ACK matches its INVITE's transaction by branch; an RFC 2543 peer (a new branch for the ACK)
    by Call-ID, From tag, CSeq and the To tag of the response: either stops a 491 being resent, as it stops the
    call's own refusals, and an ACK for the 2xx (a new transaction) leaves the 491 alone."""
    h = Harness()
    call, tag = h.established()
    h.feed(req("INVITE", to_tag=tag, cseq=2, branch="re2", body=SDP))  # a re-INVITE, answered 200
    (glare,) = h.feed(req("INVITE", to_tag=tag, cseq=3, branch="re3", body=SDP))  # before the 200's ACK
    assert glare.status == 491
    h.feed(req("ACK", to_tag=tag, cseq=2, branch="ack2"))  # the 200's: a new transaction
    assert statuses(h.advance(0.6)) == [491]  # still resent
    h.feed(req("ACK", to_tag=tag, cseq=3, branch="other"))  # the 491's, on a branch of its own
    assert h.advance(40.0) == [] and h.timers == {}


def test_an_ack_with_another_branch_and_another_to_tag_stops_nothing() -> None:
    """The ACK to a merged INVITE's 482 carries the 482's To tag: the call's ACK (same Call-ID, From tag, CSeq,
    another To tag) is not it."""
    h = Harness()
    ringing = h.feed(req("INVITE", body=SDP))[-1]
    (merged,) = h.feed(req("INVITE", body=SDP, branch="b2"))
    assert merged.status == 482 and to_tag(merged) != to_tag(ringing)
    h.feed(req("ACK", to_tag=to_tag(ringing), branch="b9"))
    assert statuses(h.advance(0.6)) == [482]
    h.feed(req("ACK", to_tag=to_tag(merged), branch="b9"))
    assert statuses(h.advance(10.0)) == []


def test_a_cancel_crossing_a_refusal_gets_200_with_its_to_tag_and_changes_nothing() -> None:
    """9.2: a CANCEL that matches a transaction whose final response was sent gets 200 (the To tag of that
    response) and has no effect; 481 is for a CANCEL that matches none."""
    h = Harness()
    call, tag = h.established()
    h.feed(req("INVITE", to_tag=tag, cseq=2, branch="re2", body=SDP))
    (glare,) = h.feed(req("INVITE", to_tag=tag, cseq=3, branch="re3", body=SDP))
    (cancelled,) = h.feed(req("CANCEL", to_tag=tag, cseq=3, branch="re3"))
    assert (cancelled.status, to_tag(cancelled)) == (200, to_tag(glare))
    assert statuses(h.advance(0.6)) == [200, 491]  # the call's 200 (no ACK yet) and the 491 go on
    (refused,) = h.feed(MALFORMED_INVITE)
    cancel_cut = req("CANCEL", call_id="cut")
    assert [(m.status, to_tag(m)) for m in h.feed(cancel_cut)] == [(200, to_tag(refused))]
    assert statuses(h.feed(req("CANCEL", call_id="cut", branch="b7"))) == [481]  # no such transaction
    (gone,) = h.feed(req("INVITE", to_tag=";tag=old", call_id="gone", body=SDP))  # a dialog we do not have
    assert gone.status == 481
    assert [(m.status, to_tag(m)) for m in h.feed(req("CANCEL", to_tag=";tag=old", call_id="gone"))] == [
        (200, ";tag=old")]
    assert sorted(set(statuses(h.advance(2.0)))) == [200, 400, 481, 491]  # each goes on until its own ACK
    assert h.ua.state(call).value == "reanswered"
