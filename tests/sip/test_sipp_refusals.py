"""Requests the bridge must refuse, and how: sipp callers against the bridge CLI, a real agent server behind it.

Each refusal is one the caller can act on (RFC 3261 8.2, 21.4) and the operator can read in the bridge's log.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.sip.media import free_udp_port, wait_for
from tests.sip.peers import BridgeProcess, need, run_sipp, sipp_call
from tests.sip.sipp_scenario import expect, request, scenario, sdp

pytestmark = pytest.mark.slow


def test_an_invite_requiring_100rel_gets_420_and_the_retry_without_it_is_answered(embedded_server,
                                                                                   tmp_path: Path) -> None:
    """RFC 3261 8.2.2.3: a PBX that requires reliable provisional responses (Require: 100rel, RFC 3262) is told
    420 Bad Extension with Unsupported: 100rel instead of a call it believes has that extension; it retries
    without the Require (CSeq + 1) and that call is answered."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    calls = sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0"), headers="Require: 100rel\nSupported: 100rel\n"),
            expect(420, optional=(100,), match="^ *100rel *$", header="Unsupported"),
            request("ACK", 1, in_dialog=True),
            request("INVITE", 2, in_dialog=False, body=sdp("0"), headers="Supported: 100rel\n"), expect(200),
            request("ACK", 2, in_dialog=True),
            request("BYE", 3, in_dialog=True), expect(200, optional=())))
    assert [c["end_reason"] for c in calls] == ["refused 420: requires 100rel", "remote hangup"]


def test_ipv6_media_gets_488_with_a_reason_and_an_ipv6_listen_address_is_refused(embedded_server,
                                                                                  tmp_path: Path) -> None:
    """The bridge's sockets are IPv4. An offer whose audio is on an IPv6 address (c=IN IP6) gets 488 with Warning
    301 (RFC 3261 20.43, incompatible network address formats) and a log line saying why, not a 200 OK whose
    answer the agent's audio can never follow; an IPv6 --host is refused at start, with the reason."""
    need("sipp")
    refused = subprocess.run([sys.executable, "-m", "clients.sip.cli", "--host", "::1", "--port",
                              str(free_udp_port()), "--server-url", embedded_server.ws],
                             capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert refused.returncode == 2 and "IPv4 only" in refused.stderr, refused
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    sipp_call(bridge, tmp_path, records=False, scenario=scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0", host="IP6 ::1")),
            expect(488, optional=(100,), match="^ *301 .*IN IP6 ::1: this bridge speaks IPv4 only", header="Warning"),
            request("ACK", 1, in_dialog=True)))
    assert "refused with 488: media address IN IP6 ::1: this bridge speaks IPv4 only" in bridge.log()
    assert [c["end_reason"] for c in bridge.calls()] == [
        "refused 488: media address IN IP6 ::1: this bridge speaks IPv4 only"]  # never a call: its log line only


def test_a_merged_invite_from_a_forking_proxy_gets_482_and_the_call_stays_one(embedded_server,
                                                                              tmp_path: Path) -> None:
    """RFC 3261 8.2.2.2: a proxy that forks an INVITE can deliver two copies (same Call-ID, From tag and CSeq) in
    different transactions (Via branches). The second gets 482 Loop Detected on its own branch, rather than the
    first copy's responses, which the second path cannot match; the first is answered and the call is one."""
    need("sipp")
    # The 482 carries a To tag of its own, which sipp would put in the BYE: the dialog's tag is kept from the 200.
    keep_dialog_tag = ('<recv response="100" optional="true"/>\n<recv response="180" optional="true"/>\n'
                       '<recv response="200"><action><ereg regexp="tag=([^;]+)" search_in="hdr" header="To:" '
                       'assign_to="to,tag"/></action></recv>\n<Reference variables="to"/>\n')
    other_branch = "^ *SIP/2.0/UDP [^;]+;branch=z9hG4bK-[0-9]+-1-[1-9][0-9]*(;|$)"  # not the first copy's, -1-0
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    try:
        code, errors = run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")), keep_dialog_tag,
            request("ACK", 1, in_dialog=True),
            request("INVITE", 1, in_dialog=False, body=sdp("0")),  # the other copy: sipp gives it its own branch
            expect(482, optional=(100,), match=other_branch, header="Via"),
            request("BYE", 2, in_dialog=True).replace("[peer_tag_param]", ";tag=[$tag]"), expect(200, optional=())),
            bridge.port, tmp_path)
        calls = wait_for(bridge.calls, 10)
    finally:
        bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in calls] == ["remote hangup"]


def test_an_invite_whose_body_is_not_sdp_gets_415_with_the_accept_of_an_offer(tmp_path: Path) -> None:
    """RFC 3261 8.2.3, 21.4.13, 20.1: a caller whose offer comes in a body type we do not read gets 415 whose
    Accept lists what an INVITE's body is read in: application/sdp, and the multipart/mixed of a SIP-T gateway
    that carries it, but not the DTMF types only an INFO is read in (it named them: the caller was told it could
    send its offer as application/dtmf-relay). Refused before any agent session: no agent server needed."""
    need("sipp")
    bridge = BridgeProcess(f"ws://127.0.0.1:{free_udp_port()}/v1/realtime", tmp_path)
    sipp_call(bridge, tmp_path, records=False, scenario=scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0"), content_type="text/plain"),
            expect(415, optional=(100,), match="^ *application/sdp, multipart/mixed, multipart/alternative *$",
                   header="Accept"),
            request("ACK", 1, in_dialog=True)))
    assert [c["end_reason"] for c in bridge.calls()] == ["refused 415: INVITE body of type text/plain carries no SDP"]


@pytest.mark.parametrize("method", ["options", "!interesting-Method0123456789_*+`.%indeed'~"])
def test_an_unknown_method_spelt_in_any_case_gets_501_with_allow(method: str, tmp_path: Path) -> None:
    """RFC 3261 7.1: method names are case-sensitive, so "options" is an extension method we do not know, and gets
    501 Not Implemented with Allow (8.2.1), as RFC 4475 3.1.1.2's method of unusual characters does. Both got 400
    Bad Request saying "CSeq method OPTIONS differs from options": the CSeq's copy was upper-cased, the request's
    was not. Refused before any agent session: no agent server needed."""
    need("sipp")
    bridge = BridgeProcess(f"ws://127.0.0.1:{free_udp_port()}/v1/realtime", tmp_path)
    sipp_call(bridge, tmp_path, records=False, scenario=scenario(
            request(method, 1, in_dialog=False),
            expect(501, optional=(), match="^ *INVITE, ACK, CANCEL, BYE, OPTIONS, INFO *$", header="Allow")))
    assert bridge.calls() == []


def test_a_request_uri_of_an_unknown_scheme_gets_416(tmp_path: Path) -> None:
    """RFC 3261 8.2.2.1 (RFC 4475's unksm): a request to an address we cannot be, of a scheme other than sip, sips
    or tel, gets 416 Unsupported URI Scheme. Such an INVITE was answered as a call and an OPTIONS with 200; now
    the INVITE is refused before any agent session (no agent server needed), in the call log too."""
    need("sipp")
    unknown = "nobodyKnowsThisScheme:totallyopaquecontent"
    bridge = BridgeProcess(f"ws://127.0.0.1:{free_udp_port()}/v1/realtime", tmp_path)
    sipp_call(bridge, tmp_path, records=False, scenario=scenario(
            request("OPTIONS", 1, in_dialog=False, uri=unknown), expect(416, optional=()),
            request("INVITE", 2, in_dialog=False, body=sdp("0"), uri=unknown), expect(416, optional=(100,)),
            request("ACK", 2, in_dialog=True)))
    assert [c["end_reason"] for c in bridge.calls()] == [
        "refused 416: Request-URI scheme nobodyKnowsThisScheme unsupported"]


def test_a_request_with_two_call_ids_gets_400(tmp_path: Path) -> None:
    """RFC 3261 7.3.1 (RFC 4475's multi01: "a UAS must respond with 400"): Call-ID, From, To, CSeq and Max-Forwards
    hold one value each. An INVITE with a second Call-ID was answered under the first, leaving the dialog it
    belonged to ambiguous between us and the proxies on the path; now it gets 400 saying which header, and no
    call (no agent server needed)."""
    need("sipp")
    bridge = BridgeProcess(f"ws://127.0.0.1:{free_udp_port()}/v1/realtime", tmp_path)
    sipp_call(bridge, tmp_path, records=False, scenario=scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0"), headers="Call-ID: another-[call_id]\n"),
            expect(400, optional=(100,), match='more than one Call-ID header', header="Warning")))
    assert bridge.calls() == []


def test_a_request_below_one_refused_in_the_dialog_is_out_of_order(embedded_server, tmp_path: Path) -> None:
    """RFC 3261 12.2.2: the UAS records the CSeq of every request in the dialog, whatever it answers, and a later
    request below it is out of order (500). A REFER refused 405, an INFO refused 415 and an OPTIONS refused 420
    left the number as it was, so a stale key press sent below them got 200 and reached the agent."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)

    def key(cseq: int, digit: str, status: int) -> str:
        return request("INFO", cseq, in_dialog=True, body=digit, content_type="application/dtmf") + \
            expect(status, optional=())

    calls = sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0 101", "a=rtpmap:101 telephone-event/8000")),
            expect(200), request("ACK", 1, in_dialog=True),
            request("REFER", 3, in_dialog=True, headers="Refer-To: <sip:x@127.0.0.1>\n"), expect(405, optional=()),
            key(2, "7", 500),
            request("INFO", 5, in_dialog=True, body="d=5\n", content_type="application/vnd.nortelnetworks.digits"),
            expect(415, optional=()), key(4, "8", 500),
            request("OPTIONS", 7, in_dialog=True, headers="Require: foo\n"), expect(420, optional=()),
            key(6, "9", 500), key(8, "1", 200),
            request("BYE", 9, in_dialog=True), expect(200, optional=())))
    assert [(c["end_reason"], c["dtmf"]) for c in calls] == [("remote hangup", ["1"])], bridge.log()


def test_a_cancel_of_a_reinvite_refused_488_gets_200_and_of_one_answered_200_481(embedded_server,
                                                                                 tmp_path: Path) -> None:
    """RFC 3261 9.2: a CANCEL that matches a transaction gets 200, whatever came of its request; a re-INVITE's
    transaction ends with its 2xx (17.2.1) but lives on after a non-2xx. The CANCEL of a re-INVITE refused 488
    got 481, as if there had been no such re-INVITE: only the first INVITE's branch was matched."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    # A CANCEL carries its INVITE's top Via (branch) and CSeq number: here, of the re-INVITE the last response answered.
    cancel = ("<send><![CDATA[\nCANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n[last_Via:]\n"
              "From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n"
              "To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\nCall-ID: [call_id]\n"
              "CSeq: {cseq} CANCEL\nMax-Forwards: 70\nContent-Length: 0\n\n]]></send>\n")
    calls = sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200), request("ACK", 1, in_dialog=True),
            request("INVITE", 2, in_dialog=True, body=sdp("0", version=2)), expect(200, optional=(100,)),
            request("ACK", 2, in_dialog=True), cancel.format(cseq=2), expect(481, optional=()),
            request("INVITE", 3, in_dialog=True, body=sdp("18", "a=rtpmap:18 G729/8000", version=3)),
            expect(488, optional=(100,)), request("ACK", 3, in_dialog=True),
            cancel.format(cseq=3), expect(200, optional=()),
            request("BYE", 4, in_dialog=True), expect(200, optional=())))
    assert [c["end_reason"] for c in calls] == ["remote hangup"], bridge.log()


def test_an_offer_that_takes_less_than_our_20_ms_packets_gets_488_saying_so(embedded_server, tmp_path: Path) -> None:
    """RFC 4566 6: a=maxptime is the most audio the offerer can take in one packet. The bridge sends 20 ms packets
    and answered an offer of maxptime 10 all the same, so the caller got packets it cannot take; now that offer
    gets 488 with a Warning saying why, and a retry that takes 20 ms (maxptime 40) is answered."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    calls = sipp_call(bridge, tmp_path, scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0", "a=maxptime:10")),
            expect(488, optional=(100,), match="^ *305 .*maxptime:10: this bridge sends 20 ms packets",
                   header="Warning"),
            request("ACK", 1, in_dialog=True),
            request("INVITE", 2, in_dialog=False, body=sdp("0", "a=maxptime:40")), expect(200),
            request("ACK", 2, in_dialog=True),
            request("BYE", 3, in_dialog=True), expect(200, optional=())))
    assert [c["end_reason"] for c in calls] == [
        "refused 488: a=maxptime:10: this bridge sends 20 ms packets", "remote hangup"]
