"""Valid requests in unusual spellings (RFC 4475 3.1.1, "valid messages") from sipp to the bridge CLI, with a real
agent server behind it: each must be answered as its plain spelling is, never dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sip.peers import BridgeProcess, need, sipp_call
from tests.sip.sipp_scenario import expect, request, scenario, sdp

pytestmark = pytest.mark.slow

# RFC 4475 3.1.1.1's "short tortuous INVITE", as far as sipp sends it (it strips a line's leading whitespace, so
# there is no line folding): whitespace around the Via's slashes and the headers' colons, names in any case and in
# their compact forms (7.3.3: i, f, t, v, m, c, l), a CSeq number with leading zeros, unknown headers.
TORTUOUS_INVITE = """<send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port];unknownparam SIP/2.0
v  : SIP  /   2.0  /UDP    [local_ip]:[local_port]   ;  branch  =   [branch]
f   : "J Rosenberg \\\\\\"" <sip:sipp@[local_ip]:[local_port]>  ;  tag = [pid]SIPpTag00[call_number]
t :  <sip:[service]@[remote_ip]:[remote_port]>
i: [call_id]
MaX-fOrWaRdS: 0068
cseq: 0001 INVITE
m:"Quoted string \\"\\"" <sip:sipp@[local_ip]:[local_port]> ; newparam = newvalue ; secondparam ; q = 0.33
NewFangledHeader:   newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
c: application/sdp
l   : [len]

{sdp}]]></send>
""".format(sdp=sdp("0"))


def test_a_tortuous_but_valid_invite_is_answered(embedded_server, tmp_path: Path) -> None:
    """RFC 3261 25.1: SLASH and HCOLON may have whitespace around them ("SIP  /   2.0  /UDP"). Such a Via could
    not be read, so the INVITE was dropped without a response (not even 400: a response needs the Via) and the
    caller heard nothing until its own timeout."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    calls = sipp_call(bridge, tmp_path, scenario(
        TORTUOUS_INVITE, expect(200), request("ACK", 1, in_dialog=True),
        request("BYE", 2, in_dialog=True), expect(200, optional=())))
    assert [c["end_reason"] for c in calls] == ["remote hangup"], bridge.log()


def test_a_request_line_with_extra_spaces_is_answered_and_a_broken_one_gets_400(embedded_server,
                                                                                tmp_path: Path) -> None:
    """RFC 4475's lwsstart and trws: more than one SP between the request line's elements, or SP after them, may
    be read liberally, and an OPTIONS so spelt now gets its 200; a request line of four elements (lwsruri: "sip:x;
    lr" with a space in the URI) gets 400 with the reason. Both had been dropped without a response, leaving the
    sender to retransmit until its transaction timed out. A Request-URI in angle brackets (ltgtruri) gets 400 too:
    it was taken for a URI of the unknown scheme "<sip" (416)."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    uri = "sip:[service]@[remote_ip]:[remote_port]"
    sipp_call(bridge, tmp_path, records=False, scenario=scenario(
        request("OPTIONS", 1, in_dialog=False, uri=f"  {uri}  "), expect(200, optional=()),
        request("OPTIONS", 2, in_dialog=False, uri=f"{uri}; lr"),
        expect(400, optional=(), match="bad request line", header="Warning"),
        request("OPTIONS", 3, in_dialog=False, uri=f"<{uri}>"),
        expect(400, optional=(), match="bad Request-URI", header="Warning")))
