"""The agent ends a call while the caller is still talking (sipp against the bridge CLI).

The agent server's operator hangs up a session (`cmd/hangup` on the event bus): the server closes the WebSocket
with code 1000 "hangup". The in-test agent server here does just that once it has heard the caller for a second.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.sync.server import ServerConnection

from clients.sip.rtp import RtpPacket
from tests.sip.media import free_udp_port, read_pcap_udp, wait_for, write_rtp_pcap
from tests.sip.peers import BridgeProcess, Capture, need, run_sipp
from tests.sip.sipp_scenario import expect, request, scenario, sdp
from tests.ws_thread import ws_server_thread

pytestmark = pytest.mark.slow

HEARD_BEFORE_HANGUP = 8000  # bytes of G.711: one second of the caller's speech
FAREWELL_BYTE = b"\x2a"  # in no packet of ours but the farewell's (silence is 0xff)


def _hang_up_after_a_second(ws: ServerConnection, farewell: bytes) -> None:
    ws.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {"id": "sess_1"}}))
    heard = 0
    for message in ws:
        event = json.loads(message)
        if event.get("type") == "input_audio_buffer.append":
            heard += len(event["audio"]) * 3 // 4
        if heard >= HEARD_BEFORE_HANGUP:
            if farewell:  # said at once, as a server that synthesises faster than real time sends it
                ids = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}
                ws.send(json.dumps({"type": "response.created", "response": {"id": "resp_1"}}))
                ws.send(json.dumps({"type": "response.output_audio.delta", **ids,
                                    "delta": base64.b64encode(farewell).decode()}))
                ws.send(json.dumps({"type": "response.output_audio.done", **ids}))
                ws.send(json.dumps({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}}))
            ws.close(1000, "hangup")  # what the server's hangup command does (controller/session.py)
            return


@contextmanager
def hanging_up_agent(farewell: bytes = b"") -> Iterator[str]:
    """The ws:// URL of an agent server that hangs up each session once it heard a second of the caller, right
    after sending `farewell` (G.711 bytes) if any."""
    with ws_server_thread(functools.partial(_hang_up_after_a_second, farewell=farewell)) as port:
        yield f"ws://127.0.0.1:{port}/v1/realtime"


# The caller waits for our BYE; sipp fails the call unless its Reason says the agent hung up (RFC 3326).
BYE_SAYING_AGENT_HUNG_UP = (
    '<recv request="BYE" timeout="60000"><action><ereg regexp="agent hung up" search_in="hdr" header="Reason:" '
    'check_it="true" assign_to="m"/></action></recv>\n<Reference variables="m"/>\n'
    '<send><![CDATA[\nSIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\n[last_CSeq:]\n'
    'Content-Length: 0\n\n]]></send>\n')


@pytest.mark.parametrize("farewell_s", [0, 2])
def test_the_agent_hanging_up_while_the_caller_talks_ends_the_call_as_a_hang_up(tmp_path: Path,
                                                                                 farewell_s: int) -> None:
    """The caller talks on (10 s of audio) when the agent hangs up after a second: the caller gets our BYE (RFC
    3261 15.1.1) and no more RTP after it. The BYE's Reason and the call log say the agent hung up: it said "agent
    session lost", the words for a server that crashed or went away, and the bridge logged a warning, so an
    operator could not tell a deliberate hang-up from a fault. The agent's farewell, sent just before it hung up,
    is heard whole (the BYE cut it off where it stood in our queue)."""
    need("sipp", "tshark")
    media_port = free_udp_port()
    seconds = write_rtp_pcap(tmp_path / "talk.pcap", b"\x10" * 80_000, src_port=media_port)  # 10 s, never silent
    farewell = FAREWELL_BYTE * (8000 * farewell_s)
    with hanging_up_agent(farewell) as url:
        bridge = BridgeProcess(url, tmp_path)
        capture = Capture(tmp_path / "caller.pcap", media_port)
        try:
            code, errors = run_sipp(scenario(
                request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200),
                request("ACK", 1, in_dialog=True),
                f'<nop><action><exec play_pcap_audio="{tmp_path / "talk.pcap"}"/></action></nop>\n',
                BYE_SAYING_AGENT_HUNG_UP), bridge.port, tmp_path, media_port=media_port)
            calls = wait_for(bridge.calls, 10)
        finally:
            capture.stop()
            bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in calls] == ["agent hung up"]
    ours = [RtpPacket.parse(p) for _, dport, p in read_pcap_udp(tmp_path / "caller.pcap") if dport == media_port]
    assert ours and calls[0]["rtp_out_packets"] == len(ours)  # the RTP stopped with the call
    assert calls[0]["ended"] - calls[0]["started"] < seconds  # the agent ended it, not the caller's talk running out
    assert sum(p.payload.count(FAREWELL_BYTE) for p in ours) == len(farewell)
