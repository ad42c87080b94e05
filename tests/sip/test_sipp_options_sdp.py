"""What an OPTIONS tells of the media we take (RFC 3261 11.2, RFC 3264 9): a PBX or SBC that qualifies a trunk with
OPTIONS and Accept: application/sdp (or no Accept, where SDP is assumed, 20.1) learns our codecs from the 200's SDP
without placing a call. sipp against the bridge CLI, a real agent server behind it."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.sip.body import accepts_sdp
from tests.sip.peers import BridgeProcess, need, sipp_call
from tests.sip.sipp_scenario import expect, request, scenario

CAPABILITIES = "m=audio 0 RTP/AVP 0 8 101"  # port 0: no stream is set up by it (RFC 3264 9)


@pytest.mark.slow
def test_an_options_that_takes_sdp_gets_our_codecs_and_one_that_does_not_gets_no_body(embedded_server,
                                                                                     tmp_path: Path) -> None:
    """The 200 to OPTIONS had Allow and Accept but no body, whatever the Accept: a peer asking which codecs it
    may offer learnt nothing. Now its SDP lists PCMU, PCMA and telephone-event on a stream of port 0 when the
    Accept names application/sdp or there is none; an Accept without it still gets no body."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    sipp_call(bridge, tmp_path, records=False, scenario=scenario(
        request("OPTIONS", 1, in_dialog=False, headers="Accept: application/sdp\n"),
        expect(200, optional=(), match=CAPABILITIES),
        request("OPTIONS", 2, in_dialog=False), expect(200, optional=(), match="a=rtpmap:8 PCMA/8000"),
        request("OPTIONS", 3, in_dialog=False, headers="Accept: application/dtmf-relay\n"),
        expect(200, optional=(), match="^ *0 *$", header="Content-Length")))
    assert bridge.calls() == []


def test_which_accept_takes_sdp() -> None:
    """RFC 3261 20.1: no Accept means application/sdp; an empty one takes no body; q=0 refuses a type."""
    assert accepts_sdp([]) and accepts_sdp(["application/sdp"]) and accepts_sdp(["text/plain, Application/SDP"])
    assert accepts_sdp(["application/dtmf", "*/*;q=0.1"]) and accepts_sdp(["application/*"])
    assert not accepts_sdp([""]) and not accepts_sdp(["application/dtmf-relay"])
    assert not accepts_sdp(["application/sdp;q=0"])
