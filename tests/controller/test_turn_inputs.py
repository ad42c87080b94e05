"""The inputs of a spoken turn (its transcription) as the speculation stages compute them, over the real server and
wire with a scripted pipeline (no models)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np

from controller.app import App
from controller.pipeline import PromptCut
from lm_engine.chat import ChatDelta, ChatRequest

from tests.controller.scripted_pipeline import ScriptedPipeline, conversation, speech, user_messages
from tests.e2e.helpers import Conversation, silence
from tests.realtime_schema import validate_server_event


async def test_a_transcription_made_stale_by_resumed_speech_does_not_hold_up_the_turns_real_end() -> None:
    """The user pauses (the turn's transcription starts there, for the speculation) and speaks on. That transcription
    answers a turn that no longer ends at the pause: it kept the recognizer (one recognition at a time) for as long
    as it took, and the turn's real transcript and reply waited behind it."""
    async with _a_pause_whose_transcription_holds_the_recognizer("what time") as (pipeline, server, conv):
        await conv.stream(np.concatenate([speech(1.0), silence(0.8)]), pace=0)  # speaks on, then ends the turn
        await _the_turn_is_heard_and_answered(pipeline, conv, timeout=20)
        metrics = server.metrics.render().decode()
    assert "stepaudio_speculations_rolled_back_total 1.0" in metrics


async def test_only_the_replies_the_user_gets_count_in_the_turn_input_wait() -> None:
    """stepaudio_turn_input_wait_seconds is about replies to user turns. A speculation rolled back (the user spoke on)
    or found stale at the end of the turn answered nothing: it was counted all the same, one observation per pause."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (server, conv):
        for _ in range(2):  # two pauses that the user speaks on after
            await conv.stream(np.concatenate([speech(1.0), silence(0.3)]), pace=0)
            await asyncio.sleep(0.5)  # the speculation has its input
        await conv.stream(np.concatenate([speech(1.0), silence(0.8)]), pace=0)
        await conv.wait_for("response.done", timeout=20)
        metrics = server.metrics.render().decode()
    assert "stepaudio_speculations_started_total 3.0" in metrics
    assert "stepaudio_speculations_committed_total 1.0" in metrics
    assert "stepaudio_turn_input_wait_seconds_count 1.0" in metrics


async def test_a_turn_longer_than_the_input_audio_kept_is_answered_with_a_notice_that_its_start_was_lost() -> None:
    """The session keeps 300 s of input audio. A longer spoken turn lost its beginning without a word: its transcript
    and the reply covered only its end. The client is now told twice: as its start goes (while the user still
    speaks), and at the commit, naming the item answered; the turn is still transcribed and answered."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.stream(np.concatenate([speech(310.0), silence(0.8)]), pace=0, chunk_s=2.0)
        heard = await conv.wait_for("conversation.item.input_audio_transcription.completed", timeout=60)
        done = await conv.wait_for("response.done", timeout=60)
    committed = conv.of_type("input_audio_buffer.committed")
    errors = [e["error"] for e in conv.of_type("error")]
    assert [e["code"] for e in errors] == ["input_audio_truncated"] * 2, errors
    assert "holds at most 300 s" in errors[0]["message"], errors
    assert committed[0]["item_id"] in errors[1]["message"] and "lasted 310 s" in errors[1]["message"], errors
    assert "keeps at most 300 s" in errors[1]["message"]
    assert heard["transcript"] == "what time is it"
    assert done["response"]["status"] == "completed"
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_turn_longer_than_the_chat_lm_reads_is_answered_with_one_notice_that_its_start_was_not_heard() -> None:
    """Step-Audio's Chat LM reads a spoken turn as its audio ids, about 42 a second: the tiny profile's context of 4096
    tokens holds some 97 s of it. A longer turn lost its start with only a warning in the server's log, and the
    client learnt of it only from a reply to part of what was said. Here a pause starts a speculation (rolled back:
    the user speaks on) and the turn's end a reply: both read the cut prompt, the client is told once, by the reply
    it gets, and the turn is answered. The next turn, a short one, is not cut."""
    pipeline = ScriptedPipeline()
    pipeline.heard_as = "<audio_7>" * 400  # 900 tokens as the scripted pipeline counts them: 300 are read
    pipeline.prompt_limit = 300
    async with conversation(pipeline) as (server, conv):
        await conv.stream(np.concatenate([speech(1.0), silence(0.3)]), pace=0)  # past the 200 ms pause
        await asyncio.sleep(0.5)  # the speculation has its input
        await conv.stream(np.concatenate([speech(1.0), silence(0.8)]), pace=0)
        first = await conv.wait_for("response.done", timeout=20)
        pipeline.heard_as = "<audio_7>" * 10
        await conv.stream(np.concatenate([speech(1.0), silence(0.8)]), pace=0)
        await conv.wait_for("response.done", after=conv.events.index(first) + 1, timeout=20)
        metrics = server.metrics.render().decode()
    assert "stepaudio_speculations_rolled_back_total 1.0" in metrics
    assert len(pipeline.requests) == 3  # the speculation, the first turn's reply, the second's
    committed = conv.of_type("input_audio_buffer.committed")
    errors = [e["error"] for e in conv.of_type("error")]
    assert [e["code"] for e in errors] == ["turn_truncated"], errors
    message = errors[0]["message"]
    assert committed[0]["item_id"] in message and "reads at most 300 tokens" in message, message
    assert "lasted 2 s" in message and "only its last 1 s were answered" in message, message
    done = conv.of_type("response.done")
    assert [d["response"]["status"] for d in done] == ["completed", "completed"]
    notice = conv.events.index(conv.of_type("error")[0])
    assert conv.events.index(conv.of_type("response.created")[0]) < notice < conv.events.index(done[0])
    for raw in conv.raw:
        validate_server_event(raw)


class _WarmingPipeline(ScriptedPipeline):
    """A scripted pipeline with an early-prefill warm-up that holds the one LM for `prefill_seconds`, as a prefill
    of a long prompt holds llama.cpp (a reply waits for it); each warm-up's outcome is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.lm = asyncio.Lock()
        self.prefill_seconds = 3.0
        self.prefills: list[tuple[list[str], str]] = []  # (the warm-up's user messages, "done" or "cancelled")

    async def prefill(self, request: ChatRequest) -> None:
        async with self.lm:
            try:
                await asyncio.sleep(self.prefill_seconds)
            except asyncio.CancelledError:
                self.prefills.append((user_messages(request), "cancelled"))
                raise
            self.prefills.append((user_messages(request), "done"))

    async def reply(self, request: ChatRequest) -> AsyncIterator[ChatDelta | PromptCut]:
        async with self.lm:
            async for delta in super().reply(request):
                yield delta


async def test_clearing_the_buffer_stops_the_warm_up_of_the_cleared_speech_and_the_next_speech_gets_its_own() -> None:
    """The user speaks past a second (an early prefill starts warming the LM with the words heard so far), then the
    client clears the buffer. That warm-up went on computing the LM's cache for speech thrown away, holding the LM
    (one request at a time, other sessions' replies waiting), and, one warm-up at a time, the next speech got none:
    its reply's prompt was evaluated whole at the pause."""
    pipeline = _WarmingPipeline()
    pipeline.prefill_seconds = 1.0
    pipeline.turn_scripts = [(0.0, "throw this away")]  # what the first warm-up heard
    async with conversation(pipeline) as (server, conv):
        await conv.stream(speech(1.5), pace=0)
        await asyncio.sleep(0.3)  # the warm-up is in the LM
        await conv.send({"type": "input_audio_buffer.clear"})
        await conv.wait_for("input_audio_buffer.cleared")
        await conv.stream(speech(1.5), pace=0)  # the next speech, past a second: a warm-up of its own
        await asyncio.sleep(pipeline.prefill_seconds + 0.5)
        await conv.stream(silence(0.8), pace=0)
        done = await conv.wait_for("response.done", timeout=10)
        warmed = server.metrics.registry.get_sample_value("stepaudio_early_prefills_total")
    assert pipeline.prefills == [(["throw this away"], "cancelled"), (["what time is it"], "done")]
    assert warmed == 1
    assert done["response"]["status"] == "completed"
    assert [user_messages(r) for r in pipeline.requests] == [["what time is it"]]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_deleting_an_item_stops_the_warm_up_that_read_it_and_the_speech_is_warmed_again_without_it() -> None:
    """An item deleted while the user speaks: the early prefill running warms a prompt that still holds it, which no
    reply will start with; it held the LM to the end, and the speech went on with no warm-up of the prompt it gets."""
    pipeline = _WarmingPipeline()
    pipeline.prefill_seconds = 1.0
    async with conversation(pipeline) as (server, conv):
        await conv.send({"type": "conversation.item.create", "item": {
            "id": "aside", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "an aside"}]}})
        await conv.wait_for("conversation.item.done")
        await conv.stream(speech(1.5), pace=0)
        await asyncio.sleep(0.3)  # the warm-up is in the LM
        await conv.send({"type": "conversation.item.delete", "item_id": "aside"})
        await conv.wait_for("conversation.item.deleted")
        await conv.stream(speech(0.1), pace=0)  # the user speaks on
        await asyncio.sleep(pipeline.prefill_seconds + 0.5)
        await conv.stream(silence(0.8), pace=0)
        done = await conv.wait_for("response.done", timeout=10)
    assert pipeline.prefills == [(["an aside", "what time is it"], "cancelled"), (["what time is it"], "done")]
    assert done["response"]["status"] == "completed"
    assert [user_messages(r) for r in pipeline.requests] == [["what time is it"]]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_clearing_the_buffer_stops_the_transcription_of_the_cleared_speech_and_the_next_turn_is_heard_at_once(
        ) -> None:
    """The user pauses (the turn's transcription starts there, for the speculation), then the client clears the
    buffer. That transcription heard speech thrown away: it kept the recognizer (one recognition at a time) for as
    long as it took, and the next turn's transcript and reply waited behind it."""
    async with _a_pause_whose_transcription_holds_the_recognizer("throw this away") as (pipeline, _, conv):
        await conv.send({"type": "input_audio_buffer.clear"})
        await conv.wait_for("input_audio_buffer.cleared")
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        await _the_turn_is_heard_and_answered(pipeline, conv, timeout=5)


@contextlib.asynccontextmanager
async def _a_pause_whose_transcription_holds_the_recognizer(
        transcript: str) -> AsyncIterator[tuple[ScriptedPipeline, App, Conversation]]:
    """The user speaks and pauses: the turn's transcription starts at the pause, for the speculation, and holds the
    recognizer (one recognition at a time) for a minute, as on a loaded machine, before it would say `transcript`.
    The events the client got are checked against the schema on the way out."""
    pipeline = ScriptedPipeline()
    pipeline.asr_lock = asyncio.Lock()
    pipeline.turn_scripts = [(60.0, transcript)]
    async with conversation(pipeline) as (server, conv):
        await conv.stream(np.concatenate([speech(1.0), silence(0.3)]), pace=0)  # past the 200 ms pause
        await asyncio.sleep(0.5)  # that pass has the recognizer
        yield pipeline, server, conv
    for raw in conv.raw:
        validate_server_event(raw)


async def _the_turn_is_heard_and_answered(pipeline: ScriptedPipeline, conv: Conversation, timeout: float) -> None:
    """The turn's transcript is its own (not the held pass's), and the one reply answers it."""
    heard = await conv.wait_for("conversation.item.input_audio_transcription.completed", timeout=timeout)
    done = await conv.wait_for("response.done", timeout=timeout)
    assert heard["transcript"] == "what time is it"
    assert done["response"]["status"] == "completed"
    assert [user_messages(r) for r in pipeline.requests] == [["what time is it"]]
