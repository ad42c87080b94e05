"""The caller hangs up while the agent speaks (sipp against the bridge CLI): the call log keeps what the caller
heard of that reply, marked cut. The bridge closes the agent session at the BYE, so the reply's
response.output_audio_transcript.done never comes; its words had been left out of the call log."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from websockets.sync.server import ServerConnection

from tests.sip.media import free_udp_port, wait_for
from tests.sip.peers import BridgeProcess, need, run_sipp
from tests.sip.sipp_scenario import expect, request, scenario, sdp
from tests.ws_thread import ws_server_thread

pytestmark = pytest.mark.slow

REPLY = "Thank you for calling. Our opening hours are nine to five on weekdays, and ten to two on Saturdays."
REPLY_S = 20  # far longer than the caller stays on the line


def _long_reply(ws: ServerConnection) -> None:
    """Replies at once, all of it (as a server that synthesises faster than real time sends it), then waits."""
    ids = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}
    ws.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {"id": "sess_1"}}))
    ws.send(json.dumps({"type": "response.created", "response": {"id": "resp_1"}}))
    ws.send(json.dumps({"type": "response.output_audio_transcript.delta", **ids, "delta": REPLY}))
    ws.send(json.dumps({"type": "response.output_audio.delta", **ids,
                        "delta": base64.b64encode(b"\x2a" * 8000 * REPLY_S).decode()}))
    for _ in ws:
        pass


def test_a_caller_hanging_up_mid_reply_leaves_the_heard_words_in_the_call_log(tmp_path: Path) -> None:
    need("sipp")
    with ws_server_thread(_long_reply) as port:
        bridge = BridgeProcess(f"ws://127.0.0.1:{port}/v1/realtime", tmp_path)
        try:
            code, errors = run_sipp(scenario(
                request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200),
                request("ACK", 1, in_dialog=True), '<pause milliseconds="4000"/>\n',
                request("BYE", 2, in_dialog=True), expect(200, optional=())), bridge.port, tmp_path,
                media_port=free_udp_port())
            calls = wait_for(bridge.calls, 10)
        finally:
            bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    transcripts = calls[0]["agent_transcripts"]
    assert len(transcripts) == 1, calls[0]
    heard, cut, _ = transcripts[0].partition(" [cut]")
    assert cut and heard and REPLY.startswith(heard) and len(heard) < len(REPLY) // 2, transcripts
