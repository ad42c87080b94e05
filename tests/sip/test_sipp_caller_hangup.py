"""The caller hangs up or talks while the agent speaks (sipp against the bridge CLI): the call log keeps what the
caller heard of that reply, marked cut. The bridge closes the agent session at the BYE, so the reply's
response.output_audio_transcript.done never comes; its words had been left out of the call log. After a barge-in
that event does come, with the whole reply's words: they had been logged as if the caller heard them all."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.server import ServerConnection

from tests.sip.media import free_udp_port, wait_for
from tests.sip.peers import BridgeProcess, need, run_sipp
from tests.sip.sipp_scenario import expect, request, scenario, sdp
from tests.ws_thread import ws_server_thread

pytestmark = pytest.mark.slow

REPLY = "Thank you for calling. Our opening hours are nine to five on weekdays, and ten to two on Saturdays."
REPLY_S = 20  # far longer than the caller stays on the line


def _long_reply(ws: ServerConnection, *, barge_in_after_s: float | None = None, done_at_once: bool = False) -> None:
    """Replies at once, all of it (as a server that synthesises faster than real time sends it), then waits; with
    `barge_in_after_s`, the caller's speech starts that long after (as the server's VAD tells it), and the reply
    ends as the server ends a reply talked over: its transcript's done event with the whole reply's words. With
    `done_at_once` that event follows the audio at once, as from a server that does not pace its audio."""
    ids = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}
    ws.send(json.dumps({"type": "session.created", "event_id": "e1", "session": {"id": "sess_1"}}))
    ws.send(json.dumps({"type": "response.created", "response": {"id": "resp_1"}}))
    ws.send(json.dumps({"type": "response.output_audio_transcript.delta", **ids, "delta": REPLY}))
    ws.send(json.dumps({"type": "response.output_audio.delta", **ids,
                        "delta": base64.b64encode(b"\x2a" * 8000 * REPLY_S).decode()}))
    if done_at_once:
        ws.send(json.dumps({"type": "response.output_audio.done", **ids}))
        ws.send(json.dumps({"type": "response.output_audio_transcript.done", **ids, "transcript": REPLY}))
        ws.send(json.dumps({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}}))
    if barge_in_after_s is not None:
        time.sleep(barge_in_after_s)
        ws.send(json.dumps({"type": "input_audio_buffer.speech_started", "audio_start_ms": 3000, "item_id": "i2"}))
        ws.send(json.dumps({"type": "response.output_audio_transcript.done", **ids, "transcript": REPLY}))
        ws.send(json.dumps({"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}}))
    for _ in ws:
        pass


def _heard_part(transcripts: list[str]) -> str:
    """The one reply's words in the call log, which must be a cut start of REPLY (less than half of it)."""
    assert len(transcripts) == 1, transcripts
    heard, cut, _ = transcripts[0].partition(" [cut]")
    assert cut and heard and REPLY.startswith(heard) and len(heard) < len(REPLY) // 2, transcripts
    return heard


def _call_the_long_reply(tmp_path: Path, hang_up_after_ms: int, **reply: Any) -> dict:
    """sipp calls the bridge in front of _long_reply(**reply), hangs up after hang_up_after_ms; the call's log line."""
    need("sipp")
    with ws_server_thread(lambda ws: _long_reply(ws, **reply)) as port:
        bridge = BridgeProcess(f"ws://127.0.0.1:{port}/v1/realtime", tmp_path)
        try:
            code, errors = run_sipp(scenario(
                request("INVITE", 1, in_dialog=False, body=sdp("0")), expect(200),
                request("ACK", 1, in_dialog=True), f'<pause milliseconds="{hang_up_after_ms}"/>\n',
                request("BYE", 2, in_dialog=True), expect(200, optional=())), bridge.port, tmp_path,
                media_port=free_udp_port())
            calls = wait_for(bridge.calls, 10)
        finally:
            bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    return calls[0]


@pytest.mark.parametrize("done_at_once", [False, True], ids=["paced", "all-at-once"])
def test_a_caller_hanging_up_mid_reply_leaves_the_heard_words_in_the_call_log(tmp_path: Path,
                                                                             done_at_once: bool) -> None:
    """Also when the reply's words had all come (transcript.done) with its audio, long before that played."""
    call = _call_the_long_reply(tmp_path, 4000, done_at_once=done_at_once)
    _heard_part(call["agent_transcripts"])


def test_a_reply_the_caller_talked_over_is_logged_as_far_as_it_was_heard(tmp_path: Path) -> None:
    """The caller talks 3 s into a 20 s reply and stays on the line: the call log has the words it heard, marked
    cut, not the whole reply that the server's transcript.done carries."""
    call = _call_the_long_reply(tmp_path, 8000, barge_in_after_s=3.0)
    assert call["barge_ins"] == 1, call
    _heard_part(call["agent_transcripts"])
