"""A reply's speech: its sentences synthesised as fast as the synthesiser goes, each sentence's audio span recorded,
the audio cut into deltas of the client's format; a sender task hands the events to the reply's OutputGate, in order,
which paces them to the client's playback.

Synthesis is not held back by the pacing: a barge-in mid-sentence cuts the text against the whole sentence's audio
(with a TTS that streams a sentence in pieces, as Step-Audio's does, the span pulled at the pace of playback reached
little past the cut, and far more text than was heard was kept).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from controller.audio_io import OutputConverter, bytes_per_ms
from controller.output_gate import OutputGate
from controller.owned_tasks import cancelled_unless_done
from controller.pipeline import SpeechPipeline
from controller.realtime import server_events as sev
from controller.response_settings import ResponseSettings

_Audio = tuple[bytes, float, float]  # a delta's audio and its [start_ms, end_ms) in the reply's audio
_Outbox = asyncio.Queue[sev.Json | _Audio | None]


@dataclass(slots=True)
class SpokenSpan:
    text: str
    start_ms: float
    end_ms: float


class ReplySpeech:
    def __init__(self, *, pipeline: SpeechPipeline, settings: ResponseSettings, events: sev.ServerEvents,
                 position: sev.PartPosition, gate: OutputGate, mark: Callable[[str], None]) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.ev = events
        self._pos = position  # the message's content part the deltas belong to
        self._gate = gate
        self._mark = mark
        self.spans: list[SpokenSpan] = []
        self.audio_tokens = 0  # audio tokens the synthesiser generated for the reply's speech
        self.synth_seconds = 0.0  # time spent waiting for the synthesiser: the TTS cost as seen here
        self.audio_ms = 0.0  # audio synthesised for the reply

    async def speak(self, sentences: asyncio.Queue[str | None]) -> None:
        """Speaks the sentences until None."""
        outbox: _Outbox = asyncio.Queue()
        sender = asyncio.create_task(self._send_in_order(outbox))
        try:
            await self._synthesise(sentences, outbox)
            outbox.put_nowait(None)
            await sender
        finally:
            await cancelled_unless_done(sender)

    async def _send_in_order(self, outbox: _Outbox) -> None:
        while (item := await outbox.get()) is not None:
            if isinstance(item, dict):
                await self._gate.emit(item)
            else:
                pcm, start_ms, end_ms = item
                await self._gate.emit_audio(self.ev.output_audio_delta(**self._pos, audio=pcm), (start_ms, end_ms))

    async def _synthesise(self, sentences: asyncio.Queue[str | None], outbox: _Outbox) -> None:
        conv = OutputConverter(self.pipeline.output_rate, self.settings.output_format)
        per_ms = bytes_per_ms(self.settings.output_format)
        chunk_bytes = int(per_ms * self.settings.delta_ms)
        pending = b""
        sent_ms = 0.0  # audio handed to the sender
        made_ms = 0.0  # audio synthesised, handed over or pending
        reply_text = self.pipeline.new_reply_text()  # this reply's: what it carries across sentences is its own
        while (sentence := await sentences.get()) is not None:
            delta = sentence if not self.spans else " " + sentence
            # The span is recorded before its audio goes out, so that a barge-in in the middle of
            # this sentence can still cut the text at what was heard.
            span = SpokenSpan(sentence, made_ms, made_ms)
            self.spans.append(span)
            if not self.settings.audio_out:
                outbox.put_nowait(self.ev.output_text_delta(**self._pos, delta=delta))
                continue
            outbox.put_nowait(self.ev.output_audio_transcript_delta(**self._pos, delta=delta))
            waited_from = time.monotonic()
            async for chunk in self.pipeline.synthesize(reply_text.for_synthesis(sentence), self.settings.voice,
                                                        self.settings.speed):
                self.audio_tokens += chunk.audio_tokens
                if not chunk.pcm.size:
                    continue
                self._mark("first_synth_chunk")
                self.synth_seconds += time.monotonic() - waited_from
                out = conv.convert(chunk.pcm)
                pending += out
                made_ms += len(out) / per_ms
                span.end_ms = made_ms
                while len(pending) >= chunk_bytes:
                    piece, pending = pending[:chunk_bytes], pending[chunk_bytes:]
                    outbox.put_nowait((piece, sent_ms, sent_ms + len(piece) / per_ms))
                    sent_ms += len(piece) / per_ms
                waited_from = time.monotonic()
        pending += conv.flush()
        if pending:
            outbox.put_nowait((pending, sent_ms, sent_ms + len(pending) / per_ms))
            sent_ms += len(pending) / per_ms
        self.audio_ms = sent_ms
