"""The server transactions' final responses (RFC 3261 17.2.3), kept for retransmissions: keyed, bounded, expired."""

from __future__ import annotations

from clients.sip.message import Request, parse_message
from clients.sip.ua_transactions import ServerTransactions


def _info(cseq: int, branch: str = "z9hG4bKa", via: str = "127.0.0.1:5070") -> Request:
    msg = parse_message((f"INFO sip:agent@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch={branch}\r\n"
                         f"From: <sip:c@127.0.0.1>;tag=f\r\nTo: <sip:agent@127.0.0.1>;tag=t\r\nCall-ID: c1\r\n"
                         f"CSeq: {cseq} INFO\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def test_a_retransmission_finds_its_answer_for_32_s_and_no_other_request_does() -> None:
    """17.2.3: same branch, sent-by, method (and CSeq) is the same transaction; 64*T1 later it is forgotten."""
    table = ServerTransactions(limit=8)
    table.record(_info(2), b"200 to INFO 2", now=10.0)
    assert table.answered(_info(2), now=41.9) == b"200 to INFO 2"
    assert table.answered(_info(3), now=11.0) is None  # a branch reused for another request: not a retransmission
    assert table.answered(_info(2, branch="z9hG4bKb"), now=11.0) is None
    assert table.answered(_info(2, via="127.0.0.1:5071"), now=11.0) is None
    assert table.answered(_info(2), now=42.0) is None


def test_an_rfc_2543_branch_is_matched_by_from_tag_and_cseq() -> None:
    table = ServerTransactions(limit=8)
    table.record(_info(2, branch="0"), b"200", now=0.0)
    assert table.answered(_info(2, branch="0"), now=1.0) == b"200"
    assert table.answered(_info(4, branch="0"), now=1.0) is None


def test_at_most_limit_answers_are_kept_the_oldest_forgotten_first() -> None:
    table = ServerTransactions(limit=2)
    for cseq in (1, 2, 3):
        table.record(_info(cseq), f"answer {cseq}".encode(), now=float(cseq))
    assert [table.answered(_info(c), now=4.0) for c in (1, 2, 3)] == [None, b"answer 2", b"answer 3"]
