"""The user turns of a session: their inputs (what the LM reads of each, computed once and shared, started early by
the warm-ups and the early prefill), their commit, and their transcripts, in the order spoken; audio items sent whole
are transcribed as turns.

Split from session_items.py to keep each file about one thing; `TurnsMixin` is only ever mixed into Session and uses
its emit/metrics/pipeline (session_host.SessionHost declares what it uses, for mypy).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING

import numpy as np

from context_manager import UserMessage
from controller import turn_taking as tt
from controller.audio_io import PIPELINE_RATE
from controller.chat_request import tool_choice_for_chat, tools_for_chat
from controller.errors import MediaError
from controller.pipeline import Prefills, TurnInput
from controller.realtime import items as it
from lm_engine.chat import ChatRequest
from vad import Resampler, TurnDetectorConfig

if TYPE_CHECKING:
    from controller.session_host import SessionHost as _Base
else:
    _Base = object

PREFILL_EVERY_MS = 1000  # of user speech between two early prefills (each costs one ASR pass and an LM prefill)
# Trailing silence after which the turn's input (its ASR pass) starts, ahead of the speculation's pause. The turn
# ends where this silence began, whatever happens next, so the transcript is the one the pause will ask for.
WARM_TURN_INPUT_MS = 96


class TurnsMixin(_Base):
    @property
    def input_language(self) -> str | None:
        return self.cfg.transcription.asr_language if self.cfg.transcription else None

    def turn_task(self, start_ms: int, end_ms: int, *, unless_silent: bool = False) -> asyncio.Task[TurnInput]:
        """The input of turn [start_ms, end_ms), computed once and shared by everyone who needs it; with
        `unless_silent` (a turn no VAD cut), nothing when the VAD hears no speech in it."""
        key = (start_ms, end_ms)
        task = self._turn_inputs.get(key)
        if task is None:
            pcm = self.audio.segment(start_ms, end_ms)
            task = asyncio.ensure_future(self._heard_unless_silent(pcm, start_ms, end_ms) if unless_silent
                                         else self.listener.turn_input(pcm, start_ms, end_ms, self.input_language))
            self._turn_inputs[key] = task
            # Keep only the recent ones: a speculation and its commit share the latest few.
            while len(self._turn_inputs) > 4:
                self._turn_inputs.pop(next(iter(self._turn_inputs)))
        return task

    async def _heard_unless_silent(self, pcm16k: np.ndarray, start_ms: int, end_ms: int) -> TurnInput:
        """Audio the client committed or sent whole, which no VAD cut: Whisper makes words of silence and noise
        ("I'm going to do it." of a push-to-talk tap), which would be answered. Without speech it is heard as nothing,
        as the server's VAD would never have made it a turn. The VAD runs beside the listener, which is asked at once
        (in the order of the turns, and with no time added to a turn with speech)."""
        heard = asyncio.ensure_future(self.listener.turn_input(pcm16k, start_ms, end_ms, self.input_language))
        try:
            speech = await asyncio.to_thread(self._has_speech, pcm16k)
        except BaseException:
            heard.cancel()
            raise
        if speech:
            return await heard
        heard.cancel()
        return TurnInput.of_text("")

    def _has_speech(self, pcm16k: np.ndarray) -> bool:
        threshold = TurnDetectorConfig().threshold  # server_vad's default
        return any(p >= threshold for p in self.pipeline.new_vad().process(pcm16k))

    def turn_open(self, item_id: str) -> bool:
        """Whether item_id is the user's turn still open (not committed yet), as a speculation's turn can be."""
        return item_id == self._turn_item_id

    def maybe_warm_turn_input(self) -> None:
        """Speculation's first stage: once a silence has lasted WARM_TURN_INPUT_MS, transcribe the turn up to where
        the silence began, so that a Pause there finds its input ready (a shared turn_task). Wasted, like a rolled
        back speculation, when the user goes on speaking."""
        trailing = self.detector.trailing_silence
        if (trailing is None or trailing[1] < WARM_TURN_INPUT_MS or not self.turns.config.speculation
                or not self.turns.config.create_response or self.turns.state is not tt.TurnState.LISTENING):
            return
        key = (self._turn_start_ms, trailing[0])
        if key in self._turn_inputs:
            return
        # Counted once heard (a wasted one too): the only outside sign that the pass ran before any pause.
        self.turn_task(*key).add_done_callback(
            lambda t: None if t.cancelled() or t.exception() else self.metrics.turn_inputs_warmed.inc())

    def drop_stale_turn_inputs(self) -> None:
        """Speech went on after a silence: the inputs computed for the open turn up to that silence (a warm-up's, a
        rolled-back speculation's) answer a turn that no longer ends there. Left running, each held the ASR (one
        recognition at a time) and the real end of turn waited behind them."""
        if self.detector.speaking:
            self.drop_open_turn_inputs()

    def drop_open_turn_inputs(self) -> None:
        """Cancel the inputs computed so far for the open turn, which resumed speech or a clear of its audio made
        stale: each holds the ASR while it runs."""
        for key in [key for key in self._turn_inputs if key[0] == self._turn_start_ms]:
            task = self._turn_inputs.pop(key)
            task.cancel()
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result().transcript.cancel()  # Step-Audio: Whisper still runs beside the ids it returned

    def maybe_prefill(self) -> None:
        """While the user speaks, every PREFILL_EVERY_MS of their turn: transcribe what was said so far and let
        the LM evaluate the prompt it would get now (conversation + those words) into its cache. At the pause the
        reply's prompt starts the same way, so the LM evaluates only the last words (about 10 ms a token on two
        cores) instead of the whole user turn. The CPU is idle while the user speaks; one warm-up at a time."""
        # Not in a trailing silence: a warm-up started there would hear what the reply's own ASR pass is about
        # to hear, and compete with it for the CPU at the pause.
        if (not isinstance(self.pipeline, Prefills) or not self.defaults.early_prefill or self.cfg.kind != "realtime"
                or self.turns.state is not tt.TurnState.LISTENING
                or not self.detector.speaking or (self._prefill_task is not None and not self._prefill_task.done())):
            return
        start, end = self._turn_start_ms, self.audio.total_ms
        if end - max(start, self._prefilled_to_ms) < PREFILL_EVERY_MS:
            return
        self._prefilled_to_ms = end
        self._prefill_task = self.spawn(self._prefill(self.pipeline, start, end))

    def drop_warm_up(self) -> None:
        """The early prefill running warms a prompt no reply will start with (the speech it heard was cleared, or an
        item of the conversation before it deleted): stopped, as it holds the LM for every session's replies and,
        one warm-up at a time, kept the speech that follows from getting its own, which starts afresh."""
        if self._prefill_task is not None:
            self._prefill_task.cancel()
        self._prefilled_to_ms = 0

    async def _prefill(self, pipeline: Prefills, start_ms: int, end_ms: int) -> None:
        try:
            heard = await self.listener.turn_input(self.audio.segment(start_ms, end_ms), start_ms, end_ms,
                                                   self.input_language)
            if heard.lm_content and self.turns.state is tt.TurnState.LISTENING:
                tools = tools_for_chat(self.cfg)
                messages = await self.budget.prompt(self.conversation, self.cfg.instructions,
                                             keep_below=self.defaults.context_keep_below_tokens, tools=tools)
                await pipeline.prefill(ChatRequest(
                    messages=[*messages, {"role": "user", "content": heard.lm_content}],
                    tools=tools, tool_choice=tool_choice_for_chat(self.cfg), max_tokens=1))
                self.metrics.early_prefills.inc()
        except Exception as exc:  # a cache warm-up that fails changes nothing the user sees
            self.log.debug("early prefill failed: %s", exc)

    async def commit_user_turn(self, end_ms: int | None) -> None:
        start = self._turn_start_ms
        end = self.audio.total_ms if end_ms is None else end_ms
        item_id = self._turn_item_id
        previous = self.last_item_sent()  # a turn spoken over a reply that plays on follows that reply's items
        # A turn the client committed, or the idle timeout's silence: no VAD cut it (Whisper made 'you' of the
        # idle silence, and the LM read it as the user's words).
        turn = self.turn_task(start, end, unless_silent=end_ms is None)
        heard_from = min(end, max(start, self.audio.dropped_before_ms))
        self.conversation.add(UserMessage(id=item_id, text=""))
        self.item_wire.add_audio(item_id)
        self.item_wire.add_untranscribed(item_id)
        self._committed_turn = (item_id, start, end)
        self.reset_turn(end)
        self.metrics.turns_total.inc()
        await self.emit(self.events.committed(item_id=item_id, previous_item_id=previous))
        await self.emit(self.events.item_added(it.user_audio_item(item_id, transcript=None, status="completed"),
                                               previous_item_id=previous))
        if heard_from > start:
            await self._notice_cut_turn(item_id, start, heard_from, end)
        self._transcribe(item_id, self._finish_transcription(item_id, turn, end, (end - start) / 1000.0))

    async def _notice_cut_turn(self, item_id: str, start_ms: int, heard_from_ms: int, end_ms: int) -> None:
        """A turn longer than the input audio kept lost its beginning: the transcript and the reply hear only its end,
        which the user would otherwise learn only from a reply to half of what they said."""
        await self.error(MediaError(
            f"The user turn {item_id} lasted {(end_ms - start_ms) / 1000:.0f} s; this server keeps at most "
            f"{self.audio.max_seconds:.0f} s of input audio, so only its last {(end_ms - heard_from_ms) / 1000:.0f} s "
            "were transcribed and answered. Speak in shorter turns, or commit the buffer more often."),
            code="input_audio_truncated")

    def _transcribe(self, item_id: str, transcription: Coroutine[object, object, None]) -> None:
        """Run a user item's transcription. Every reply's prompt waits for those still running (build_request):
        a response.create right after input_audio_buffer.commit must hear the turn just committed. Its events go
        out after the previous item's: the API leaves their order open, but a client printing transcripts as they
        complete should print them as they were spoken (the speech recognition itself already runs, in parallel)."""
        previous = self._last_transcription

        async def in_order() -> None:
            try:
                if previous is not None:
                    await asyncio.wait([previous])  # its outcome is its own: only its end matters here
            except asyncio.CancelledError:
                transcription.close()  # never started
                raise
            await transcription

        task = self._last_transcription = asyncio.ensure_future(in_order())
        self._item_transcriptions[item_id] = task
        task.add_done_callback(lambda _: self._item_transcriptions.pop(item_id, None))
        task.add_done_callback(self.task_done)  # logs a failure

    async def _finish_transcription(self, item_id: str, turn: asyncio.Task[TurnInput], end_ms: int,
                                    seconds: float) -> None:
        try:
            text = await asyncio.shield((await turn).transcript)
        except Exception as exc:
            self.log.exception("transcription failed")
            if item_id in self.conversation:  # the item still closes: every item.added gets its item.done
                await self.emit(self.events.transcription_failed(item_id=item_id, content_index=0,
                                                                 code="transcription_failed", message=str(exc)))
                await self.emit(self.events.item_done(it.user_audio_item(item_id, transcript=None),
                                                      previous_item_id=self.wire_previous(item_id)))
            return
        if item_id not in self.conversation:  # deleted meanwhile: after conversation.item.deleted, no more of it
            return
        self.conversation.set_text(item_id, text)
        self.item_wire.transcribed(item_id)
        arrived = self.audio.arrival_time(end_ms)
        if arrived is not None:
            self.metrics.transcript_latency.observe(max(0.0, time.monotonic() - arrived))
        if text:
            await self.emit(self.events.transcription_delta(item_id=item_id, content_index=0, delta=text))
        await self.emit(self.events.transcription_completed(item_id=item_id, content_index=0, transcript=text,
                                                            audio_seconds=seconds))
        await self.emit(self.events.item_done(it.user_audio_item(item_id, transcript=text),
                                              previous_item_id=self.wire_previous(item_id)))

    def transcribe_audio_item(self, item_id: str, pcm: np.ndarray, rate: int, around: list[str | None] | None) -> None:
        """A user audio item sent whole (conversation.item.create) gets a spoken turn's transcription, and its
        conversation.item.done with the transcript. around: for an item whose audio came with its transcript, its text
        parts and None where the audio is, the LM reading what was heard there (no transcription events)."""
        self._transcribe(item_id, self._transcribe_item(item_id, pcm, rate, around))

    async def _transcribe_item(self, item_id: str, pcm: np.ndarray, rate: int,
                               around: list[str | None] | None) -> None:
        if around is None:
            pcm16k = _to_pipeline_rate(pcm, rate)
            end_ms = pcm16k.size * 1000 // PIPELINE_RATE
            turn = asyncio.ensure_future(self._heard_unless_silent(pcm16k, 0, end_ms))
            await self._finish_transcription(item_id, turn, end_ms, end_ms / 1000.0)
            return
        # The client's transcript stays what the item shows: no transcription events.
        text = await self.heard_around(pcm, rate, around)
        if text is not None and item_id in self.conversation:  # else deleted meanwhile
            self.conversation.set_text(item_id, text)

    async def heard_around(self, pcm: np.ndarray, rate: int, around: list[str | None]) -> str | None:
        """A message's parts as the LM reads them (`around`: their text, None where the audio is), with what the
        session's ASR hears in its audio in the place of the audio; None if recognition failed."""
        pcm16k = _to_pipeline_rate(pcm, rate)
        try:
            turn = await self._heard_unless_silent(pcm16k, 0, pcm16k.size * 1000 // PIPELINE_RATE)
            heard = await asyncio.shield(turn.transcript)
        except Exception:
            self.log.exception("transcription failed: the LM reads the item's transcript as the client sent it")
            return None
        return " ".join(t for t in (heard if t is None else t for t in around) if t)


def _to_pipeline_rate(pcm: np.ndarray, rate: int) -> np.ndarray:
    resampler = Resampler(rate, PIPELINE_RATE)
    return np.concatenate([resampler.process(pcm), resampler.flush()])
