"""`stepaudio-rt serve --profile tiny` completes a spoken turn through the real Controller and the wire:
audio tokens stream while the user speaks, reply audio streams before the reply ends, every event is valid."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.e2e.helpers import RATE, load_pcm24k, open_conversation, rms, silence
from tests.realtime_schema import validate_server_event

pytestmark = pytest.mark.slow

ONE_TURN_VAD = {"type": "server_vad", "silence_duration_ms": 1200, "prefix_padding_ms": 300}
IDS_PER_SECOND = 1000 / 120 * 5  # 41.67


def _ids_total(server) -> float:
    return server.metrics().get("stepaudio_tokenizer_ids_total", 0.0)


async def test_spoken_turn_streams_tokens_and_audio(tiny_server, beckett_wav) -> None:
    samples: list[tuple[float, float]] = []  # (monotonic time, stepaudio_tokenizer_ids_total)
    stop = asyncio.Event()

    async def poll() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), await asyncio.to_thread(_ids_total, tiny_server)))
            await asyncio.sleep(0.25)

    before = _ids_total(tiny_server)
    conv = await open_conversation(tiny_server.ws)
    poller = asyncio.create_task(poll())
    try:
        await conv.send({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": ONE_TURN_VAD}}}})
        await conv.wait_for("session.updated")
        speech = load_pcm24k(beckett_wav)
        t_start = time.monotonic()
        await conv.stream(np.concatenate([silence(0.3), speech, silence(2.0)]), pace=1.0)
        done = await conv.wait_for("response.done", timeout=120)
        await conv.wait_for("conversation.item.input_audio_transcription.completed", timeout=30)
    finally:
        stop.set()
        await poller
        await conv.close()

    stopped = conv.of_type("input_audio_buffer.speech_stopped")[0]
    t_stopped = conv.time_of(stopped)
    # Tokens streamed during speech: well before the end of turn was detected, most of the speech so far
    # had already become ids (the tokenizer holds back ~0.5 s of lookahead).
    during = [(t, v - before) for t, v in samples if t < t_stopped]
    assert during, samples
    t_mid, v_mid = max((s for s in during if s[0] < t_start + 6.0), key=lambda s: s[0])
    assert v_mid >= IDS_PER_SECOND * (t_mid - t_start - 1.5), (t_mid - t_start, v_mid)
    assert during[-1][1] >= IDS_PER_SECOND * 8, during[-1]

    assert done["response"]["status"] == "completed", done
    usage = done["response"]["usage"]  # the Chat LM's prompt holds the turn as <audio_N> ids: input audio tokens
    assert usage["input_token_details"]["audio_tokens"] >= IDS_PER_SECOND * 8
    assert usage["input_tokens"] > usage["input_token_details"]["audio_tokens"] and usage["output_tokens"] >= 1
    deltas = [e for e in conv.of_type("response.output_audio.delta")
              if e["response_id"] == done["response"]["id"]]
    assert deltas
    assert conv.time_of(deltas[0]) < conv.time_of(done)
    audio = conv.audio_of(done["response"]["id"])
    assert len(audio) / RATE >= 0.3
    assert rms(audio) > 1e-3
    said = conv.of_type("response.output_audio_transcript.done")[-1]["transcript"]
    assert said.strip()
    for raw in conv.raw:
        validate_server_event(raw)
    print(f"\nreply {said!r}: first audio {conv.time_of(deltas[0]) - t_stopped:.2f} s after speech_stopped, "
          f"done after {conv.time_of(done) - t_stopped:.2f} s, {len(audio) / RATE:.2f} s of audio; "
          f"ids {during[-1][1]:.0f} before speech_stopped")


async def test_a_push_to_talk_turn_reaches_the_chat_lm_as_its_audio_ids(tiny_server, beckett_wav) -> None:
    """turn_detection null, input_audio_buffer.commit then response.create (the browser's push-to-talk): the Chat LM
    reads the committed turn as its <audio_N> ids, as it reads a turn the server's VAD ended, not as Whisper's text."""
    conv = await open_conversation(tiny_server.ws)
    try:
        await conv.send({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
        await conv.wait_for("session.updated")
        speech = load_pcm24k(beckett_wav)[: 4 * RATE]
        await conv.stream(speech, pace=0)
        await conv.send({"type": "input_audio_buffer.commit"})
        await conv.send({"type": "response.create"})
        done = await conv.wait_for("response.done", timeout=120)
    finally:
        await conv.close()
    assert done["response"]["status"] == "completed", done
    assert done["response"]["usage"]["input_token_details"]["audio_tokens"] >= IDS_PER_SECOND * 3.5
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_reply_the_lm_did_not_count_counts_its_prompts_audio_as_audio(tiny_server, beckett_wav) -> None:
    """A reply cancelled as it begins has no counts from the LM, and the server counts its prompt itself: the spoken
    turn's <audio_N> ids were counted as text, usage.input_token_details.audio_tokens 0. They count as audio."""
    conv = await open_conversation(tiny_server.ws)
    try:
        await conv.send({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
        await conv.wait_for("session.updated")
        await conv.stream(load_pcm24k(beckett_wav)[: 4 * RATE], pace=0)
        await conv.send({"type": "input_audio_buffer.commit"})
        await conv.send({"type": "response.create"})
        await conv.wait_for("response.output_item.added", timeout=120)  # its prompt is built, the LM answering
        await conv.send({"type": "response.cancel"})
        done = await conv.wait_for("response.done", timeout=120)
    finally:
        await conv.close()
    usage = done["response"]["usage"]
    assert done["response"]["status"] == "cancelled", done
    assert usage["input_token_details"]["audio_tokens"] >= IDS_PER_SECOND * 3.5, usage
    assert usage["input_tokens"] > usage["input_token_details"]["audio_tokens"], usage
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_reply_counts_the_audio_tokens_tts_3b_spoke_it_with(tiny_server) -> None:
    """response.done's usage.output_token_details.audio_tokens is the number of audio tokens TTS-3B generated for the
    reply (what the server's stepaudio_tts_audio_tokens counter grew by), part of output_tokens and total_tokens; the
    flow speaks each (the 2:3 dual-codebook stream, IDS_PER_SECOND) so they match the audio the client got."""
    conv = await open_conversation(tiny_server.ws)
    try:
        await conv.send({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
        await conv.wait_for("session.updated")
        before = tiny_server.metrics().get("stepaudio_tts_audio_tokens_total", 0.0)
        n = await conv.ask("Say something.")
        done = await conv.wait_for("response.done", after=n, timeout=120)
        after = tiny_server.metrics().get("stepaudio_tts_audio_tokens_total", 0.0)
    finally:
        await conv.close()
    assert done["response"]["status"] == "completed", done
    usage = done["response"]["usage"]
    audio_tokens = usage["output_token_details"]["audio_tokens"]
    assert audio_tokens == after - before > 0
    assert usage["output_tokens"] == usage["output_token_details"]["text_tokens"] + audio_tokens
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    seconds = len(conv.audio_of(done["response"]["id"])) / RATE
    assert abs(seconds - audio_tokens / IDS_PER_SECOND) < 0.1, (seconds, audio_tokens)
    for raw in conv.raw:
        validate_server_event(raw)


async def test_the_engines_kv_blocks_and_sequences_are_on_metrics_and_come_back(tiny_server) -> None:
    """/metrics shows each LM engine's free KV blocks and sequences: after a session's replies and its close, the
    TTS engine holds no sequence and the free blocks are back to where they were (nothing leaked)."""
    free = 'stepaudio_lm_free_kv_blocks{engine="%s"}'
    seqs = 'stepaudio_lm_sequences{engine="%s"}'
    before = tiny_server.metrics()
    assert before[free % "tts"] > 0 and before[free % "chat"] > 0
    conv = await open_conversation(tiny_server.ws)
    try:
        await conv.send({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": None}}}})
        await conv.wait_for("session.updated")
        for question in ("Say something.", "And again."):
            n = await conv.ask(question)
            await conv.wait_for("response.done", after=n, timeout=120)
    finally:
        await conv.close()

    def settled() -> bool:
        now = tiny_server.metrics()
        return now[seqs % "tts"] == 0 and all(now[free % e] == before[free % e] for e in ("tts", "chat"))

    for _ in range(50):
        if settled():
            break
        await asyncio.sleep(0.1)
    assert settled(), (before, tiny_server.metrics())


WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


async def test_function_tools_are_refused_with_an_error_naming_the_field(tiny_server) -> None:
    """Step-Audio-Chat has no documented tool-call output format: a client offering tools learns it at once,
    instead of waiting for function calls that never come; the session goes on without them."""
    conv = await open_conversation(tiny_server.ws)
    try:
        n = len(conv.events)
        await conv.send({"type": "session.update", "event_id": "evt_tools", "session": {
            "type": "realtime", "instructions": "Be brief.", "tools": [WEATHER_TOOL]}})
        error = (await conv.wait_for("error", after=n, timeout=15))["error"]
        assert error["param"] == "session.tools" and error["code"] == "invalid_value"
        assert error["event_id"] == "evt_tools" and "no documented tool-call output format" in error["message"]
        n = len(conv.events)
        await conv.send({"type": "response.create", "event_id": "evt_resp",
                         "response": {"tools": [WEATHER_TOOL], "output_modalities": ["text"]}})
        error = (await conv.wait_for("error", after=n, timeout=15))["error"]
        assert error["param"] == "response.tools" and error["event_id"] == "evt_resp"
        updated = await conv.update_session(instructions="Be brief.", tools=[])
        assert updated["session"]["instructions"] == "Be brief." and updated["session"]["tools"] == []
        assert not conv.of_type("session.updated")[:-1] and not conv.of_type("response.created")
        for raw in conv.raw:
            validate_server_event(raw)
    finally:
        await conv.close()


async def test_a_session_says_it_speaks_in_the_default_speaker(tiny_server) -> None:
    """session.created names the voice replies are spoken in: the speakers folder's Tingting, not the embedded
    profile's Piper voice."""
    conv = await open_conversation(tiny_server.ws)
    try:
        created = conv.of_type("session.created")[0]
        assert created["session"]["audio"]["output"]["voice"] == "Tingting"
    finally:
        await conv.close()


async def test_a_voice_that_is_not_a_speaker_is_refused_not_spoken_in_another(tiny_server) -> None:
    conv = await open_conversation(tiny_server.ws)
    try:
        n = len(conv.events)
        await conv.send({"type": "session.update", "session": {"type": "realtime",
                                                               "audio": {"output": {"voice": "alloy"}}}})
        error = (await conv.wait_for("error", after=n, timeout=15))["error"]
        assert error["param"] == "session.audio.output.voice" and error["code"] == "invalid_value"
        assert "'alloy' is not a voice of this server (its voices: Tingting, TingtingRAP, Tingting哼唱)" in error[
            "message"]
        updated = await conv.update_session(audio={"output": {"voice": "TingtingRAP"}})
        assert updated["session"]["audio"]["output"]["voice"] == "TingtingRAP"
        for raw in conv.raw:
            validate_server_event(raw)
    finally:
        await conv.close()
    transcription = await open_conversation(tiny_server.ws + "?intent=transcription")  # a session without voice
    try:
        await transcription.send({"type": "session.update", "session": {"type": "transcription", "audio": {
            "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}}})
        await transcription.wait_for("session.updated", timeout=15)
        assert not transcription.of_type("error")
    finally:
        await transcription.close()


async def test_a_spoken_turn_through_the_python_client_from_8khz_stereo(tiny_server, beckett_wav) -> None:
    """The same spoken turn with our client library (clients.RealtimeClient, as the README's example uses it), from
    8 kHz two-channel audio (telephony rate, and a channel count upstream's tokenizer breaks on): a completed reply
    whose prompt held the turn as audio tokens, audio deltas, every event valid."""
    import soundfile as sf
    import soxr

    from clients import RealtimeClient

    mono, rate = sf.read(beckett_wav, dtype="float32")
    x8 = soxr.resample(mono, rate, 8000).astype(np.float32)
    stereo = np.stack([x8, 0.5 * x8], axis=1)
    events = []
    async with await RealtimeClient.connect(tiny_server.ws) as rt:
        await rt.session_update(type="realtime", audio={"input": {"turn_detection": ONE_TURN_VAD}})
        await rt.stream_audio(stereo, 8000, realtime=False, silence_ms=2000)
        async with asyncio.timeout(120):
            async for event in rt.events():
                events.append(event)
                if event.type == "response.done" and event.response_status == "completed":
                    break
    for event in events:
        validate_server_event(json.dumps(event.data))
    done = events[-1].data["response"]
    assert done["usage"]["input_token_details"]["audio_tokens"] >= IDS_PER_SECOND * 8
    deltas = [e for e in events if e.type == "response.output_audio.delta" and e.data["response_id"] == done["id"]]
    assert deltas
    transcripts = [e.data["transcript"] for e in events
                   if e.type == "conversation.item.input_audio_transcription.completed"]
    assert any("tried" in t.lower() for t in transcripts), transcripts


def test_a_cache_whisper_base_cannot_be_assembled_into_stops_the_server_in_one_line(tiny_model_dir, tmp_path) -> None:
    """--language de transcribes with Whisper base, assembled into the model cache on first use: a cache it could not
    be written into was a WARNING ("no Whisper ASR ...: user transcripts will be empty") and a server that went on
    with every user transcript empty."""
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "cache"
    proc = subprocess.run([sys.executable, "-m", "controller.cli", "serve", "--profile", "tiny", "--model-path",
                           str(tiny_model_dir), "--language", "de", "--port", "0"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "STEPAUDIO_RT_CACHE": str(cache)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"stepaudio-rt serve: error: cannot prepare Whisper (--language de): [Errno 20] Not a directory: '{cache}' "
        f"(the model cache, {cache}: set STEPAUDIO_RT_CACHE to a writable folder with 200 MB free)")
