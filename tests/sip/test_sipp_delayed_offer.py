"""A delayed offer's media before its answer (sipp against the bridge CLI, with a stub agent that records what it
hears): an INVITE without SDP gets our offer in the 200 OK, and the caller's answer comes in its ACK (RFC 3261
13.2.1). Once we offered we must take media on the offered port (RFC 3264 5: the offerer must be ready to receive
as soon as it sends the offer), and a caller (or the party a 3PCC controller connected, RFC 3725) may talk before
its ACK reaches us."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from websockets.sync.server import ServerConnection

from tests.sip.media import free_udp_port, read_pcap_udp, wait_for
from tests.sip.peers import BridgeProcess, Capture, need, run_sipp
from tests.sip.sipp_scenario import expect, request, scenario, sdp
from tests.ws_thread import ws_server_thread

pytestmark = pytest.mark.slow

VOICE = 0x11  # the caller's "speech": 2 s of 20 ms frames
FRAMES = 100


@pytest.mark.parametrize(("answer", "media_ip"), [
    (sdp("0"), "127.0.0.1"),
    (sdp("0", host="IP4 10.9.8.7", port="40000"), "127.0.0.1"),
    (sdp("0"), "127.0.0.3"),
], ids=["direct", "behind-a-nat", "media-from-another-host"])
def test_what_the_caller_says_between_our_offer_and_its_ack_reaches_the_agent(answer: str, media_ip: str,
                                                                              tmp_path: Path) -> None:
    """The caller talks from our 200 OK on and sends its ACK (with its answer) 1 s later. The bridge took its RTP
    but dropped it until the ACK (it had no address to send to yet, and took that for a hold): the agent missed
    the caller's first second. Now all but the latch's probation (3 packets of the signalling host) reach it.
    A caller behind a NAT (its answer names its private address) had its latched source forgotten at the ACK:
    our first packets went to the private address, and 3 more of its own were dropped; all of ours reach it.
    A PBX whose media comes from another host than its signalling (a proxy in front of it, a media server) was
    not heard at all before its ACK named that host; it is now, as any source of a caller we know no address of."""
    need("sipp", "tshark")
    media_port = free_udp_port()
    (tmp_path / "voice.ul").write_bytes(bytes([VOICE]) * 160 * FRAMES)
    heard = bytearray()

    def agent(ws: ServerConnection) -> None:
        ws.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {"id": "sess_1"}}))
        for message in ws:
            event = json.loads(message)
            if event.get("type") == "input_audio_buffer.append":
                heard.extend(base64.b64decode(event["audio"]))

    with ws_server_thread(agent) as port:
        bridge = BridgeProcess(f"ws://127.0.0.1:{port}/v1/realtime", tmp_path)
        capture = Capture(tmp_path / "caller.pcap", media_port)
        try:
            code, errors = run_sipp(scenario(
                request("INVITE", 1, in_dialog=False), expect(200, match="m=audio [0-9]+ RTP/AVP 0 101"),
                f'<nop><action><exec rtp_stream="{tmp_path / "voice.ul"},1,0"/></action></nop>\n'
                '<pause milliseconds="1000"/>\n',
                request("ACK", 1, in_dialog=True, body=answer), '<pause milliseconds="2000"/>\n',
                request("BYE", 2, in_dialog=True), expect(200, optional=())),
                bridge.port, tmp_path, media_port=media_port, media_ip=media_ip)
            calls = wait_for(bridge.calls, 10)
        finally:
            capture.stop()
            bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in calls] == ["remote hangup"]
    frames = heard.count(VOICE) // 160
    assert frames >= FRAMES - 5, f"the agent heard {frames} of the caller's {FRAMES} frames"
    ours = [p for _, dport, p in read_pcap_udp(tmp_path / "caller.pcap") if dport == media_port]
    assert len(ours) == calls[0]["rtp_out_packets"] > 50, (len(ours), calls)  # every packet of ours reached it
    assert calls[0]["media_to"] == f"{media_ip}:{media_port}", calls
