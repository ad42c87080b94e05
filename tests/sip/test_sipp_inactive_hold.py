"""Hold with a=inactive by re-INVITE, a PBX's in-dialog OPTIONS meanwhile, and the resume (sipp against the bridge
CLI, with a real agent server behind it).

The a=sendonly hold and a=inactive in the first offer have their own tests (test_sipp_dialogs.py); here the call is
up and talking first, then held both ways off (RFC 3264 8.4: a=inactive, answered a=inactive), asked whether it is
still there (RFC 3261 11, an OPTIONS in the dialog), and resumed (back to a=sendrecv); or its audio stream is
removed (port 0) and added back, which the bridge treats as such a hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from websockets.sync.server import ServerConnection

from clients.sip.rtp import RtpPacket
from tests.sip.media import free_udp_port, read_pcap_udp, wait_for
from tests.sip.peers import BridgeProcess, Capture, need, run_sipp
from tests.sip.sipp_scenario import expect, request, scenario, sdp
from tests.ws_thread import ws_server_thread

pytestmark = pytest.mark.slow

HOLD_S = 3


@pytest.mark.parametrize(("hold", "answer"), [
    (sdp("0", "a=inactive", version=2), "a=inactive"),
    # RFC 3264 8.2: a re-offer of port 0 removes the audio stream; it got 488 and the call went on sending. Its
    # answer has port 0 too, and the call stays up without media (as an inactive hold) until audio is offered again.
    (sdp("0", port="0", version=2), "m=audio 0 RTP/AVP 0"),
], ids=["inactive", "audio-removed"])
def test_an_inactive_hold_stops_our_rtp_until_the_resume_and_options_in_it_are_answered(
        hold: str, answer: str, embedded_server, tmp_path: Path) -> None:
    need("sipp", "tshark")
    media_port = free_udp_port()
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    capture = Capture(tmp_path / "caller.pcap", media_port)
    try:
        code, errors = run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200),
            request("ACK", 1, in_dialog=True),
            '<pause milliseconds="1000"/>\n',
            request("INVITE", 2, in_dialog=True, body=hold), expect(200, optional=(100,), match=answer),
            request("ACK", 2, in_dialog=True),
            request("OPTIONS", 3, in_dialog=True),
            expect(200, optional=(), match="INVITE, ACK, CANCEL, BYE, OPTIONS, INFO", header="Allow"),
            f'<pause milliseconds="{HOLD_S * 1000}"/>\n',
            request("INVITE", 4, in_dialog=True, body=sdp("0", version=3)),
            expect(200, optional=(100,), match="a=sendrecv"),
            request("ACK", 4, in_dialog=True),
            '<pause milliseconds="1000"/>\n',
            request("BYE", 5, in_dialog=True), expect(200, optional=())),
            bridge.port, tmp_path, media_port=media_port)
        calls = wait_for(bridge.calls, 10)
    finally:
        capture.stop()
        bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in calls] == ["remote hangup"]
    ours = [RtpPacket.parse(p) for _, dport, p in read_pcap_udp(tmp_path / "caller.pcap") if dport == media_port]
    assert ours, bridge.log()
    # Our RTP clock runs on through the hold while no packet goes out: one gap in the timestamps, at least most of
    # the hold long (not the whole of it: a stalled loop's ticks are skipped), and no sequence number missing.
    gaps = [b.timestamp - a.timestamp for a, b in zip(ours, ours[1:])]
    hold = gaps.index(max(gaps))
    assert gaps[hold] >= 8000 * HOLD_S // 2 and sorted(gaps)[-2] < 8000, gaps
    assert [p.sequence - ours[0].sequence for p in ours] == list(range(len(ours)))
    assert hold >= 10 and len(gaps) - hold >= 10, gaps  # RTP flowed before the hold and again after the resume


def test_a_nat_callers_hold_by_the_old_address_keeps_its_latched_source(embedded_server, tmp_path: Path) -> None:
    """A phone behind a NAT (its SDP names 10.9.8.7, unreachable; its audio comes from 127.0.0.3) holds the call
    the RFC 2543 way (c=0.0.0.0) and resumes to the same SDP address, sending all along: every packet of ours
    reaches it, before the hold and after the resume. The hold made the bridge forget the NAT source, so after
    the resume its first packets (~80 ms: until the caller's had passed the latch's probation again) went to the
    private address, and the caller missed the start of what the agent said."""
    need("sipp", "tshark")
    (tmp_path / "silence.ul").write_bytes(b"\xff" * 8000)
    media_port = free_udp_port()
    private = sdp("0", host="IP4 10.9.8.7", port="40000")
    bridge = BridgeProcess(embedded_server.ws, tmp_path)
    capture = Capture(tmp_path / "nat.pcap", media_port)
    try:
        code, errors = run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=private), expect(200), request("ACK", 1, in_dialog=True),
            f'<nop><action><exec rtp_stream="{tmp_path / "silence.ul"},-1,0"/></action></nop>\n'
            '<pause milliseconds="1500"/>\n',
            request("INVITE", 2, in_dialog=True, body=sdp("0", host="IP4 0.0.0.0", port="40000", version=2)),
            expect(200, optional=(100,)), request("ACK", 2, in_dialog=True), '<pause milliseconds="1500"/>\n',
            request("INVITE", 3, in_dialog=True, body=private.replace(" 1 IN", " 3 IN")),
            expect(200, optional=(100,)), request("ACK", 3, in_dialog=True), '<pause milliseconds="1500"/>\n',
            request("BYE", 4, in_dialog=True), expect(200, optional=())),
            bridge.port, tmp_path, media_port=media_port, media_ip="127.0.0.3")
        calls = wait_for(bridge.calls, 10)
    finally:
        capture.stop()
        bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert calls[0]["media_to"] == f"127.0.0.3:{media_port}", calls
    ours = [RtpPacket.parse(p) for _, dport, p in read_pcap_udp(tmp_path / "nat.pcap") if dport == media_port]
    gaps = [b.timestamp - a.timestamp for a, b in zip(ours, ours[1:])]
    hold = gaps.index(max(gaps))
    assert hold >= 10 and len(gaps) - hold >= 10, gaps  # RTP reached it before the hold and after the resume
    assert [p.sequence - ours[0].sequence for p in ours] == list(range(len(ours))), \
        [p.sequence for p in ours]  # none of ours went elsewhere


def _quiet_agent(ws: ServerConnection) -> None:
    ws.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {"id": "sess_1"}}))
    for _ in ws:
        pass


def test_an_rfc_2543_hold_is_answered_with_what_we_do(tmp_path: Path) -> None:
    """RFC 3264 8.4: a hold by the old address (c=0.0.0.0, no direction: sendrecv) gives us nowhere to send; the
    answer must say we do not (recvonly), and inactive to one that is a=inactive too. Both were answered
    a=sendrecv while our RTP stopped. The resume gets sendrecv again."""
    need("sipp")
    old_hold = sdp("0", host="IP4 0.0.0.0", version=2)
    with ws_server_thread(_quiet_agent) as port:
        bridge = BridgeProcess(f"ws://127.0.0.1:{port}/v1/realtime", tmp_path)
        try:
            code, errors = run_sipp(scenario(
                request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200, match="a=sendrecv"),
                request("ACK", 1, in_dialog=True),
                request("INVITE", 2, in_dialog=True, body=old_hold), expect(200, optional=(100,), match="a=recvonly"),
                request("ACK", 2, in_dialog=True),
                request("INVITE", 3, in_dialog=True, body=old_hold.replace(" 2 IN", " 3 IN") + "a=inactive\n"),
                expect(200, optional=(100,), match="a=inactive"),
                request("ACK", 3, in_dialog=True),
                request("INVITE", 4, in_dialog=True, body=sdp("0", version=4)),
                expect(200, optional=(100,), match="a=sendrecv"),
                request("ACK", 4, in_dialog=True),
                request("BYE", 5, in_dialog=True), expect(200, optional=())),
                bridge.port, tmp_path, media_port=free_udp_port())
            calls = wait_for(bridge.calls, 10)
        finally:
            bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in calls] == ["remote hangup"]
