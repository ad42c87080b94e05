"""Key presses as RFC 4733 events in RTP where the SDP exchange did not name their payload type as the caller sends
it (sipp playing Debian's DTMF pcap against the bridge CLI, a real agent server behind it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sip.peers import BridgeProcess, need, sipp_call
from tests.sip.sipp_scenario import expect, request, scenario, sdp

pytestmark = pytest.mark.slow

KEY_5 = "/usr/share/sip-tester/dtmf_2833_5.pcap"  # ten packets of payload type 101, the events of key 5


def test_rfc4733_keys_the_answer_did_not_name_are_logged_as_lost(embedded_server, tmp_path: Path) -> None:
    """RFC 3264 6.1, 7: our answer names only formats the offer did, and the caller sends only those: one that
    offered no telephone-event must not send events, and its key presses are lost. Some phones send them anyway.
    The call log showed no key and the bridge's log said nothing, so an operator had no way to tell why the keys
    were not heard; now one line per call says which payload type was ignored and what our answer named."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    calls = sipp_call(bridge, tmp_path, scenario(
        request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200), request("ACK", 1, in_dialog=True),
        f'<nop><action><exec play_pcap_audio="{KEY_5}"/></action></nop>\n<pause milliseconds="1500"/>\n',
        request("BYE", 2, in_dialog=True), expect(200, optional=())))
    assert [(c["end_reason"], c["dtmf"]) for c in calls] == [("remote hangup", [])]
    assert bridge.log().count("RTP of payload type 101 ignored: our answer named PCMU 0, no telephone-event: "
                              "the offer had none") == 1, bridge.log()


def test_rfc4733_keys_come_with_our_offers_number_whatever_the_answer_names(embedded_server, tmp_path: Path) -> None:
    """RFC 3264 5.1: the payload type numbers of an SDP are those its side receives. To a delayed offer (an INVITE
    without SDP) the bridge offers telephone-event as 101; a caller whose answer in the ACK names it 96 (6.1 only
    says SHOULD keep 101) still sends its key presses as 101. The bridge listened for 96 and lost them."""
    need("sipp")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    calls = sipp_call(bridge, tmp_path, scenario(
        request("INVITE", 1, in_dialog=False), expect(200, match="m=audio [0-9]+ RTP/AVP 0 101"),
        request("ACK", 1, in_dialog=True, body=sdp("0 96", "a=rtpmap:96 telephone-event/8000")),
        f'<nop><action><exec play_pcap_audio="{KEY_5}"/></action></nop>\n<pause milliseconds="1500"/>\n',
        request("BYE", 2, in_dialog=True), expect(200, optional=())))
    assert [(c["end_reason"], c["dtmf"]) for c in calls] == [("remote hangup", ["5"])], bridge.log()
