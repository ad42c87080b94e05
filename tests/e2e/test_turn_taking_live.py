"""Speculation, rollback, barge-in and truncation against the running embedded server."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from tests.e2e.helpers import RATE, load_pcm24k, open_conversation, silence
from tests.realtime_schema import validate_server_event

pytestmark = pytest.mark.slow


def counters(server) -> dict[str, float]:
    m = server.metrics()
    return {k: m.get(f"stepaudio_speculations_{k}_total", 0.0) for k in ("started", "committed", "rolled_back")}


async def test_short_pause_rolls_back_and_end_of_turn_commits(embedded_server, beckett_wav) -> None:
    speech = load_pcm24k(beckett_wav)
    first, second = speech[: int(1.3 * RATE)], speech[int(1.5 * RATE): int(2.9 * RATE)]  # "Ever tried." "Ever failed."
    before = counters(embedded_server)
    conv = await open_conversation(embedded_server.ws)
    try:
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "silence_duration_ms": 1000}}})
        # A gap (about 0.8 s as silero hears it) longer than the 200 ms pause that starts a speculation,
        # shorter than the end of turn.
        await conv.stream(np.concatenate([silence(0.3), first, silence(0.35), second, silence(2.0)]))
        done = await conv.wait_for("response.done", timeout=120)
    finally:
        await conv.close()
    after = counters(embedded_server)
    assert after["rolled_back"] - before["rolled_back"] >= 1
    assert after["committed"] - before["committed"] == 1
    assert after["started"] - before["started"] >= 2
    # Only the committed reply was ever visible: one response, all audio from it.
    assert [e["response"]["id"] for e in conv.of_type("response.created")] == [done["response"]["id"]]
    assert len(conv.of_type("input_audio_buffer.committed")) == 1
    for raw in conv.raw:
        validate_server_event(raw)


async def test_barge_in_cancels_the_reply_and_truncation_keeps_the_heard_part(embedded_server, beckett_wav) -> None:
    speech = load_pcm24k(beckett_wav)
    conv = await open_conversation(embedded_server.ws)
    try:
        await conv.update_session(instructions="You are a storyteller. Answer with a long story of at least six "
                                               "sentences.")
        await conv.ask("Tell me a long story about a lighthouse keeper.")
        first_delta = await conv.wait_for("response.output_audio.delta", timeout=60)
        item_id = first_delta["item_id"]
        await asyncio.sleep(1.0)  # let about a second of the reply play
        await conv.stream(np.concatenate([speech[: int(2.9 * RATE)], silence(0.2)]))
        done = await conv.wait_for("response.done", timeout=30)
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "turn_detected"
        # What the client "played": 800 ms, or all it got if a loaded machine sent less before the barge-in (a
        # truncate past the audio sent is refused, as the API documents).
        got_ms = sum(len(base64.b64decode(e["delta"])) for e in conv.of_type("response.output_audio.delta")
                     if e["item_id"] == item_id) // (2 * RATE // 1000)
        played_ms = min(800, got_ms)
        n = len(conv.events)
        await conv.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                         "audio_end_ms": played_ms})
        truncated = await conv.wait_for("conversation.item.truncated", after=n, timeout=10)
        await conv.send({"type": "conversation.item.retrieve", "item_id": item_id})
        retrieved = await conv.wait_for("conversation.item.retrieved", after=n, timeout=10)
    finally:
        await conv.close()
    assert truncated["audio_end_ms"] == played_ms
    kept = retrieved["item"]["content"][0]["transcript"]
    full = " ".join(e["delta"] for e in conv.of_type("response.output_audio_transcript.delta")
                    if e["item_id"] == item_id)
    kept_words, full_words = kept.split(), full.split()
    assert 0 < len(kept_words) < len(full_words)
    assert full_words[: len(kept_words) - 1] == kept_words[:-1]  # a prefix (the last word may be cut)
    # The interrupted item is closed before response.done, as incomplete (the Realtime API's lifecycle).
    done_index = conv.events.index(done)
    closing_types = ["response.output_audio.done", "response.output_audio_transcript.done",
                     "response.content_part.done", "response.output_item.done"]
    assert [e["type"] for e in conv.events[:done_index] if e["type"] in closing_types] == closing_types
    item_done = [e for e in conv.events[:done_index] if e["type"] == "response.output_item.done"][-1]
    assert item_done["item"]["id"] == item_id and item_done["item"]["status"] == "incomplete"
    assert done["response"]["output"][0]["status"] == "incomplete"
    # Audio of the cancelled reply stops: nothing from it arrives after its response.done.
    assert not [e for e in conv.events[done_index:] if e["type"] == "response.output_audio.delta"
                and e["item_id"] == item_id]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_reply_cut_at_max_output_tokens_is_incomplete(embedded_server) -> None:
    conv = await open_conversation(embedded_server.ws)
    try:
        await conv.update_session(max_output_tokens=5, audio={"input": {"turn_detection": None}})
        await conv.ask("Tell me a long story about a lighthouse keeper.")
        done = await conv.wait_for("response.done", timeout=90)
    finally:
        await conv.close()
    response = done["response"]
    assert response["status"] == "incomplete", response
    assert response["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    said = conv.of_type("response.output_audio_transcript.done")[-1]["transcript"]
    assert 1 <= len(said.split()) <= 5  # five tokens at most
    usage = response["usage"]  # the LM's own counts; Piper speaks without audio tokens, so output audio is 0
    assert usage["output_tokens"] == usage["output_token_details"]["text_tokens"] == 5
    assert usage["output_token_details"]["audio_tokens"] == usage["input_token_details"]["audio_tokens"] == 0
    assert usage["input_tokens"] == usage["input_token_details"]["text_tokens"] > 20  # instructions + question
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    for raw in conv.raw:
        validate_server_event(raw)
