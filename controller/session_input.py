"""The input audio side of a session: input_audio_buffer.append (conversion, pacing, the VAD and the turn events
it makes, the buffer's bound), commit and clear.

Split from session.py to keep each file about one thing; `InputAudioMixin` is only ever mixed into Session and uses
its turn-taking core, emit and the TurnsMixin's turn warm-ups (session_host.SessionHost declares what it uses, for
mypy).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import numpy as np

from controller import turn_events as te
from controller import turn_taking as tt
from controller.errors import MediaError, RemoteProtocolError
from controller.session_parts import detector_config
from vad import TurnDetector
from vad import turn_detector as vd

if TYPE_CHECKING:
    from controller.session_host import SessionHost as _Base
else:
    _Base = object

# Between turns (no speech under way) only the next speech start's prefix padding is ever read back: the audio is cut
# to that and this much more whenever it has grown this much past it (a copy every few seconds, not each append).
# A long append (minutes of audio in one event) is heard a second at a time, the event loop free between: its VAD
# pass alone held every other session's audio and events for seconds.
HEAR_SLICE_SAMPLES = 16000
IDLE_AUDIO_SLACK_MS = 5000


class InputAudioMixin(_Base):
    async def append_audio(self, data: bytes) -> None:
        """input_audio_buffer.append: the audio, converted, is heard a slice at a time."""
        split = self.converter.split_samples
        pcm = self.converter.convert(data)
        if split == 0 and self.converter.split_samples:
            self.log.warning("input_audio_buffer.append of %d bytes ends mid-sample: its odd byte joins the next "
                             "append's (audio/pcm is a byte stream; a stray byte would shift all later audio)",
                             len(data))
        for start in range(0, len(pcm), HEAR_SLICE_SAMPLES):
            if start:
                await asyncio.sleep(0)
            await self._keep_pace()  # between slices too: one append may hold many turns (a whole recording)
            await self._hear(pcm[start:start + HEAR_SLICE_SAMPLES])

    async def _keep_pace(self) -> None:
        """Wait while max_pending_turns of the session's turns (or audio items) wait for their transcripts. Their
        recognition never waits for more input, so the wait ends; a reader waiting here reads nothing, so the client's
        sends block once the socket's buffers are full (websockets' max_queue, then TCP)."""
        limit = self.defaults.max_pending_turns
        while limit and len(pending := self._item_transcriptions) >= limit:
            if not self._paced:  # once a session: an operator sees why a client's upload went slower
                self._paced = True
                self.log.info("input audio comes faster than its turns are transcribed: read only as fast as they "
                              "are (%d turns waiting)", len(pending))
            await asyncio.wait(list(pending.values()), return_when=asyncio.FIRST_COMPLETED)

    async def _hear(self, pcm: np.ndarray) -> None:
        now = time.monotonic()
        self.audio.append(pcm, now)
        self.listener.feed(pcm)
        if self.audio.dropped_before_ms > self._turn_start_ms and self._cut_told != self._turn_start_ms and (
                self.cfg.turn_detection is None or self.turns.state in (tt.TurnState.LISTENING,
                                                                        tt.TurnState.SPECULATING)):
            await self._notice_full_buffer()
        if self.cfg.turn_detection is None:
            return
        for vad_event in self.detector.feed(self.vad.process(pcm)):
            match vad_event:
                case vd.SpeechStarted():
                    if self.turns.state in (tt.TurnState.IDLE, tt.TurnState.RESPONDING, tt.TurnState.SPEAKING):
                        self._turn_start_ms = vad_event.audio_start_ms
                    await self.apply(te.SpeechStarted(vad_event.audio_start_ms))
                case vd.Pause():
                    await self.apply(te.Pause(vad_event.audio_ms))
                case vd.SpeechResumed():
                    await self.apply(te.SpeechResumed(vad_event.audio_ms))
                case vd.SpeechStopped():
                    await self.apply(te.SpeechStopped(vad_event.audio_end_ms))
        self._forget_idle_audio(self.cfg.turn_detection.prefix_padding_ms)
        self.drop_stale_turn_inputs()
        self.maybe_warm_turn_input()
        self.maybe_prefill()

    async def _notice_full_buffer(self) -> None:
        """The turn under way (with turn_detection null: the buffer since its last commit or clear) has outgrown the
        input audio kept, and its start is being dropped. Told once, as it happens: a buffer never committed, or a turn
        a huge silence_duration_ms never ends, lost its audio unseen; a commit later tells what was answered."""
        self._cut_told = self._turn_start_ms
        await self.error(MediaError(
            f"The input audio buffer holds at most {self.audio.max_seconds:.0f} s: the audio since "
            f"{self._turn_start_ms} ms, not yet committed, has outgrown it, and its oldest part is dropped as more "
            "comes. Commit the buffer more often, or speak in shorter turns."), code="input_audio_truncated")

    def _forget_idle_audio(self, prefix_padding_ms: int) -> None:
        """Between turns, keep only what the next speech start's padding can reach back to."""
        if self.detector.in_speech or self.turns.state not in (tt.TurnState.IDLE, tt.TurnState.RESPONDING,
                                                               tt.TurnState.SPEAKING):
            return
        keep_ms = max(1000, prefix_padding_ms + 500)
        if self.audio.kept_seconds * 1000 > keep_ms + IDLE_AUDIO_SLACK_MS:
            self.audio.trim(self.audio.total_ms - keep_ms)

    async def commit_input_audio(self) -> None:
        """input_audio_buffer.commit: the audio since the turn's start is a user turn."""
        tail = self.converter.flush()  # what the client sent last is still in the resampler's filter
        if tail.size:
            self.audio.append(tail, time.monotonic())
            self.listener.feed(tail)
        if self.audio.total_ms - self._turn_start_ms < 100:
            raise RemoteProtocolError(
                "Error committing input audio buffer: buffer too small; expected at least 100ms "
                f"of audio, but buffer only has {self.audio.total_ms - self._turn_start_ms}ms.",
                code="input_audio_buffer_commit_empty")
        # The turn ends here even if the user is still speaking: what they say next is a turn of its own
        # (with its own speech_started), not the tail of the committed one.
        self.detector.reset()
        await self.apply(te.BufferCommitted(self.audio.total_ms))

    async def clear_input_audio(self) -> None:
        """input_audio_buffer.clear: the audio since the turn's start is forgotten, and the VAD starts afresh."""
        cleared_at = self.audio.total_ms
        self.converter.reset()
        self.drop_open_turn_inputs()
        self._turn_start_ms = self.audio.total_ms
        self.audio.trim(self._turn_start_ms)
        self.drop_warm_up()
        self.vad.reset()
        self.detector = TurnDetector(detector_config(self.cfg, self.defaults.pause_ms),
                                     origin_ms=self.audio.total_ms)
        await self.apply(te.BufferCleared(cleared_at))  # a speech_stopped it emits names the cleared speech's item
        # The cleared speech's id went out in its speech_started: the next turn reusing it read as the same item.
        self._turn_item_id = self.new_id("item")
        await self.emit(self.events.cleared())
