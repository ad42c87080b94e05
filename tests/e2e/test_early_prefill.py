"""Early prefill: while the user speaks, the words heard so far warm the chat LM's prompt cache (embedded)."""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest

from tests.conftest import ServerProcess, free_port
from tests.e2e.helpers import RATE, load_pcm24k, open_conversation, silence
from tests.realtime_schema import validate_server_event

pytestmark = pytest.mark.slow

ONE_TURN_VAD = {"type": "server_vad", "silence_duration_ms": 1200, "prefix_padding_ms": 300}
COUNTER = "stepaudio_early_prefills_total"


async def _counter(server) -> float:  # type: ignore[no-untyped-def]
    return (await asyncio.to_thread(server.metrics)).get(COUNTER, 0.0)


async def _counted_more_than(server, count: float, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while await _counter(server) <= count and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


async def test_speech_warms_the_lm_before_the_turn_ends_and_the_reply_is_unchanged(embedded_server, beckett_wav,
                                                                                   two_cities_wav) -> None:
    before = await _counter(embedded_server)
    conv = await open_conversation(embedded_server.ws)
    try:
        await conv.send({"type": "session.update", "session": {
            "type": "realtime", "temperature": 0.0, "audio": {"input": {"turn_detection": ONE_TURN_VAD}}}})
        await conv.wait_for("session.updated")
        await conv.stream(np.concatenate([silence(0.3), load_pcm24k(beckett_wav)]), pace=1.0)
        # About one warm-up per second of speech, one at a time; on a loaded machine (CI's 2 cores under the
        # suite) one warm-up can outlast Beckett's 10 s. The user then goes on speaking
        # another reading, 1.5 s at a time (more than PREFILL_EVERY_MS), each piece once the warm-up it found
        # running or started is counted (the turn stays open meanwhile: the VAD hears no silence while nothing
        # comes). It starts at its first word: Beckett already ends in 1.1 s of silence, and 1.2 s ends the turn.
        more = load_pcm24k(two_cities_wav)[int(1.2 * RATE):]
        piece = int(1.5 * RATE)
        for i in range(0, 3 * piece, piece):
            counted = await _counter(embedded_server) - before
            if counted >= 3:
                break
            await conv.stream(more[i:i + piece], pace=1.0)
            await _counted_more_than(embedded_server, before + counted, timeout=90)
        # The turn is still open (no end-of-turn silence yet): the warm-ups happened during the speech.
        during = await _counter(embedded_server) - before
        assert not conv.of_type("input_audio_buffer.speech_stopped")
        assert during >= 3, during
        await conv.stream(silence(2.0), pace=1.0)
        done = await conv.wait_for("response.done", timeout=120)
        heard = await conv.wait_for("conversation.item.input_audio_transcription.completed", timeout=30)
    finally:
        await conv.close()
    assert "fail better" in " ".join(re.findall(r"[a-z']+", heard["transcript"].lower()))
    assert done["response"]["status"] == "completed", done
    assert conv.of_type("response.output_audio_transcript.done")[-1]["transcript"].strip()
    for raw in conv.raw:
        validate_server_event(raw)


QUICK_INPUT = 'stepaudio_turn_input_wait_seconds_bucket{le="0.025"}'
WARMED = "stepaudio_turn_inputs_warmed_total"
SPECULATED = "stepaudio_speculations_started_total"
COMMITTED = "stepaudio_speculations_committed_total"
# Beckett's first sentence, "Ever tried.", ends 1.24 s into the clip. Up to here the server's VAD (its audio
# 300 ms of silence later, less the resampler's delay) stands 128 +- 32 ms into the silence after it: past
# WARM_TURN_INPUT_MS (96), short of the 200 ms pause (224 ms: whole 32 ms chunks).
FIRST_SENTENCE_AND_SILENCE_S = 1.42


async def _metric_above(server, name: str, value: float, timeout: float) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (now := (await asyncio.to_thread(server.metrics)).get(name, 0.0)) <= value and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return now


async def test_a_silence_shorter_than_the_pause_already_starts_the_turns_transcription(embedded_server,
                                                                                        beckett_wav) -> None:
    """96 ms into a silence the turn's ASR pass starts; the speculation at the 200 ms pause finds it done."""
    before = await asyncio.to_thread(embedded_server.metrics)
    conv = await open_conversation(embedded_server.ws)
    try:
        await conv.send({"type": "session.update", "session": {
            "type": "realtime", "temperature": 0.0, "audio": {"input": {"turn_detection": ONE_TURN_VAD}}}})
        await conv.wait_for("session.updated")
        speech = load_pcm24k(beckett_wav)[:int(FIRST_SENTENCE_AND_SILENCE_S * RATE)]
        await conv.stream(np.concatenate([silence(0.3), speech]), pace=1.0)
        # The server hears nothing more, the turn stays open: its transcription is done before any pause (however
        # long it takes on a loaded machine).
        warmed = await _metric_above(embedded_server, WARMED, before.get(WARMED, 0.0), timeout=60)
        held = await asyncio.to_thread(embedded_server.metrics)
        assert warmed - before.get(WARMED, 0.0) == 1
        assert held.get(SPECULATED, 0.0) == before.get(SPECULATED, 0.0)  # no pause yet
        assert not conv.of_type("input_audio_buffer.speech_stopped")
        await conv.stream(silence(2.0), pace=1.0)
        # The reply itself is not what this is about (the LM may crawl on a loaded machine).
        await conv.wait_for("response.created", timeout=60)
        heard = await conv.wait_for("conversation.item.input_audio_transcription.completed", timeout=60)
        after = await asyncio.to_thread(embedded_server.metrics)
    finally:
        await conv.close()
    assert "tried" in heard["transcript"].lower(), heard
    assert after.get(SPECULATED, 0.0) - before.get(SPECULATED, 0.0) == 1
    assert after.get(COMMITTED, 0.0) - before.get(COMMITTED, 0.0) == 1
    # The speculation, committed as this reply, started with its transcript in hand.
    assert after.get(QUICK_INPUT, 0.0) - before.get(QUICK_INPUT, 0.0) == 1


async def test_with_a_chat_url_the_speech_is_not_transcribed_each_second_for_nothing(beckett_wav) -> None:
    """A --chat-url server takes no warm-up, yet each second of speech was transcribed (Whisper, on the cores the
    turn's own transcription and the speech synthesis need) and counted as an early prefill. Nothing needs to listen
    at the URL: the replies are not what this is about."""
    server = ServerProcess("--profile", "embedded", "--chat-url", f"http://127.0.0.1:{free_port()}/v1")
    try:
        conv = await open_conversation(server.ws)
        try:
            await conv.send({"type": "session.update", "session": {
                "type": "realtime", "audio": {"input": {"turn_detection": ONE_TURN_VAD}}}})
            await conv.wait_for("session.updated")
            await conv.stream(np.concatenate([silence(0.3), load_pcm24k(beckett_wav)]), pace=1.0)
            await asyncio.sleep(1.0)  # a warm-up started at the end of the speech has finished
            assert conv.of_type("input_audio_buffer.speech_started")
            assert (await _counter(server)) == 0
        finally:
            await conv.close()
    finally:
        server.stop()
