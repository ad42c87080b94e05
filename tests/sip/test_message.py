"""SIP message parse/serialize (RFC 3261 7, 18.3, 20). Pure, synchronous."""

from __future__ import annotations

import pytest

from clients.sip.message import CSeq, Headers, NameAddr, Request, Response, SipParseError, Via, parse_message

INVITE = (b"INVITE sip:agent@127.0.0.1:5080 SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n"
          b"From: \"Caller\" <sip:caller@127.0.0.1>;tag=abc\r\n"
          b"To: <sip:agent@127.0.0.1:5080>\r\n"
          b"Call-ID: c1@host\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
          b"Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n")


def test_request_round_trip_is_byte_exact() -> None:
    """7.1: a well-formed request serializes back to the same bytes."""
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    assert (req.method, req.uri, req.body) == ("INVITE", "sip:agent@127.0.0.1:5080", b"v=0\n")
    assert req.serialize() == INVITE
    assert req.cseq == CSeq(1, "INVITE") and req.call_id == "c1@host"
    assert req.from_ == NameAddr('"Caller"', "sip:caller@127.0.0.1", {"tag": "abc"})
    assert req.top_via == Via("UDP", "127.0.0.1", 5070, {"branch": "z9hG4bK-1", "rport": None})


def test_compact_forms_folding_and_bare_lf() -> None:
    """7.3.3 compact names, 7.3.1 folded lines, 7.5 tolerance of LF line ends."""
    raw = (b"OPTIONS sip:a@b SIP/2.0\nv: SIP/2.0/UDP h:1;branch=z9hG4bKx\nf: <sip:x@y>;tag=1\nt: <sip:a@b>\n"
           b"i: id\nCSeq: 2\n  OPTIONS\nl: 0\n\n")
    req = parse_message(raw)
    assert isinstance(req, Request)
    assert req.headers.get("call-id") == req.headers.get("i") == "id"
    assert req.cseq == CSeq(2, "OPTIONS")
    assert req.serialize().startswith(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h:1;branch=z9hG4bKx\r\n")


def test_content_length_rules() -> None:
    """18.3: extra bytes after Content-Length are dropped; absent Content-Length over UDP means the rest."""
    extra = parse_message(INVITE + b"junk")
    assert extra.body == b"v=0\n"
    no_len = parse_message(INVITE.replace(b"Content-Length: 4\r\n", b""))
    assert no_len.body == b"v=0\n"
    out = Request("BYE", "sip:x@y", Headers.of([("Content-Length", "99")]), b"").serialize()
    assert out.endswith(b"Content-Length: 0\r\n\r\n")  # recomputed, never stale


def test_combined_via_lines_split_into_elements() -> None:
    raw = INVITE.replace(b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport",
                         b"Via: SIP/2.0/UDP a:1;branch=z9hG4bKa, SIP/2.0/UDP b:2;branch=z9hG4bKb")
    req = parse_message(raw)
    assert req.headers.get_all("Via") == ["SIP/2.0/UDP a:1;branch=z9hG4bKa", "SIP/2.0/UDP b:2;branch=z9hG4bKb"]


def test_response_parse() -> None:
    raw = (b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
           b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    resp = parse_message(raw)
    assert isinstance(resp, Response) and (resp.status, resp.reason) == (180, "Ringing")
    assert resp.serialize() == raw


@pytest.mark.parametrize("raw, partial", [
    (b"", False),
    (b"\x00\xff\xfe", False),
    (b"hello world\r\n\r\n", False),
    (b"INVITE sip:x SIP/3.0\r\nVia: SIP/2.0/UDP h\r\n\r\n", True),  # 505 Version Not Supported (21.5.6)
    (b"INVITE sip:x SIP/2.0\r\nbad header\r\n\r\n", False),
    (b"SIP/2.0 99 Nope\r\n\r\n", False),
    (INVITE.replace(b"Call-ID: c1@host\r\n", b""), True),
    (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), True),
    (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE"), True),
    (INVITE.replace(b"Content-Length: 4", b"Content-Length: 40"), True),
    (INVITE.replace(b"Content-Length: 4", b"Content-Length: -1"), True),
    (INVITE.replace(b"SIP/2.0/UDP 127.0.0.1:5070", b"SIP/2.0/UDP 127.0.0.1:99999"), True),
    (INVITE.replace(b"<sip:agent@127.0.0.1:5080>", b"<sip:agent@127.0.0.1:5080"), True),
    (INVITE.split(b"\r\n\r\n")[0], True),  # no empty line
    (INVITE.replace(b'"Caller"', b'"M\xfcller"'), True),  # a caller's name in Latin-1, not UTF-8
    (INVITE + b"x" * 70000, False),  # past the size bound
])
def test_malformed_messages_raise_with_what_was_read(raw: bytes, partial: bool) -> None:
    """Every malformed input raises SipParseError (status 400; 513 past the size bound, 505 for another SIP
    version); `partial` holds the request when readable."""
    with pytest.raises(SipParseError) as info:
        parse_message(raw)
    assert info.value.status == (513 if len(raw) > 65535 else 505 if b" SIP/3.0\r\n" in raw else 400)
    assert (info.value.partial is not None) == partial
