"""The Step-Audio listener: a session's audio becomes dual-codebook <audio_N> ids while it arrives, and a turn gets
its ids as soon as it ends (plus, a little later, a Whisper transcript for the history, when the ASR is there)."""
from __future__ import annotations

import asyncio
import copy
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from controller.bridge import call_in_thread
from controller.pipeline import TurnInput

if TYPE_CHECKING:
    from controller.step_audio_pipeline import StepAudioPipeline

logger = logging.getLogger(__name__)

GROUP_MS = 120  # one interleaved group: 2 vq02 + 3 vq06 ids
GROUP_IDS = 5


class StreamingTokenListener:
    """Tokenises a session's audio while it arrives (one ordered job queue on a worker thread).

    The stream runs over the whole session, so group g of ids covers session audio [120 g, 120 g + 120) ms.
    A turn [start, end) gets the groups that overlap it; the last ones (the tokenizer holds ~480 ms of lookahead)
    come from a copy of the stream state flushed with the edge rule, so the live stream is never disturbed.
    """

    MAX_GROUPS = 30_000  # one hour of ids per session

    def __init__(self, pipeline: StepAudioPipeline) -> None:
        self._p = pipeline
        self._stream = pipeline.audio_tokenizer.new_session(16000)
        self._jobs: deque[np.ndarray | _Snapshot] = deque()  # audio to tokenise, or a turn's ids to take
        self._lock = threading.Lock()
        self._running = False
        self._closed = False
        self._groups: list[list[int]] = []  # ids of groups _base.. (5 each)
        self._base = 0
        self._fed = 0  # samples queued

    # -- event loop side

    def feed(self, pcm16k: np.ndarray) -> None:
        if self._closed or pcm16k.size == 0:
            return
        self._fed += int(pcm16k.size)
        self._submit(np.asarray(pcm16k, dtype=np.float32).copy())

    async def turn_input(self, pcm16k: np.ndarray, start_ms: int, end_ms: int,
                         language: str | None) -> TurnInput:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[int]] = loop.create_future()

        def deliver(result: list[int] | BaseException) -> None:
            if fut.done():
                return
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

        end_ms = max(end_ms, start_ms)
        if self._fed * 1000 // 16000 + GROUP_MS < end_ms:
            # The turn's audio did not come through feed() (should not happen): tokenise it whole.
            tokens = loop.run_in_executor(self._p.tok_pool, self._p.audio_tokenizer.tokenize_offline, pcm16k, 16000)
        else:
            self._submit(_Snapshot(start_ms, end_ms, lambda r: loop.call_soon_threadsafe(deliver, r)))
            tokens = fut
        # Whisper runs beside the tokenizer; the reply reads the ids and does not wait for it.
        transcript = asyncio.ensure_future(self._transcript(pcm16k, language))
        try:
            ids = await tokens
        except BaseException:
            transcript.cancel()
            raise
        from streaming_tokenizer.step_audio import ids_to_text
        return TurnInput(lm_content=ids_to_text(ids), transcript=transcript)

    async def _transcript(self, pcm16k: np.ndarray, language: str | None) -> str:
        asr = self._p.asr
        if asr is None or not pcm16k.size:
            return ""
        try:
            text = await call_in_thread(self._p.asr_pool, asr.transcribe, pcm16k, language or self._p.config.language)
        except Exception:  # the history then holds an empty turn; the reply heard the audio ids anyway
            logger.exception("transcription failed")
            return ""
        return text.strip()

    def close(self) -> None:
        self._closed = True
        with self._lock:
            self._jobs.clear()

    # -- worker side

    def _submit(self, job: np.ndarray | _Snapshot) -> None:
        with self._lock:
            self._jobs.append(job)
            if self._running:
                return
            self._running = True
        try:
            self._p.tok_pool.submit(self._drain)
        except RuntimeError:  # pool shut down
            with self._lock:
                self._running = False

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._jobs or self._closed:
                    self._running = False
                    return
                job = self._jobs.popleft()
            try:
                if isinstance(job, _Snapshot):
                    job.reply(self._snapshot(job.start_ms, job.end_ms))
                else:
                    self._add(self._stream.feed(job))
            except Exception as exc:
                logger.exception("streaming tokenizer failed")
                if isinstance(job, _Snapshot):
                    job.reply(exc)

    def _add(self, ids: list[int]) -> None:
        if not ids:
            return
        for k in range(0, len(ids), GROUP_IDS):
            self._groups.append(ids[k:k + GROUP_IDS])
        self._p.tokenizer_ids.inc(len(ids))
        extra = len(self._groups) - self.MAX_GROUPS
        if extra > 0:
            del self._groups[:extra]
            self._base += extra

    def _snapshot(self, start_ms: int, end_ms: int) -> list[int]:
        g0 = start_ms // GROUP_MS
        g1 = math.ceil(end_ms / GROUP_MS)
        groups = self._groups
        if self._base + len(groups) < g1:  # the tail is still inside the lookahead: flush a copy
            tok = self._stream.tok
            memo = {id(tok): tok, **{id(v): v for v in vars_of(tok)}}
            tail = copy.deepcopy(self._stream, memo).finish()
            groups = groups + [tail[k:k + GROUP_IDS] for k in range(0, len(tail), GROUP_IDS)]
        lo, hi = max(0, g0 - self._base), max(0, g1 - self._base)
        return [i for g in groups[lo:hi] for i in g]


def vars_of(obj: Any) -> list[Any]:
    """The shared (read-only) model objects a tokenizer session refers to: never deep-copied."""
    return [v for v in vars(obj).values() if v is not None]


@dataclass(slots=True)
class _Snapshot:
    start_ms: int
    end_ms: int
    reply: Callable[[list[int] | BaseException], object]  # the turn's ids, or why they could not be taken
