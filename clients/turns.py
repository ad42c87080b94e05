"""Per-turn latency bookkeeping from the client's point of view. Pure: events come in with their arrival time.

A turn is one committed user item plus the response that answers it. Its end of user speech is the send time of
the last voiced sample (above -40 dBFS) of the audio that turn committed: the last voiced sample at or before the
server's speech_stopped audio_end_ms plus a grace (VAD frames are coarse), or before the commit when the client
committed by hand. All times are monotonic seconds from the same clock as the SendLog's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from clients.audio import SendLog, last_voiced_at_or_before
from clients.events import CLIENT_RESPONSE_LOST, ServerEvent

__all__ = ["Turn", "TurnTracker"]

# Must stay below the server's silence_duration_ms (500 ms default), so it never reaches the next utterance.
EOS_GRACE_MS = 400


@dataclass(slots=True)
class Turn:
    """Timings (monotonic seconds) and texts of one user turn and its reply."""

    user_item_id: str | None = None
    response_id: str | None = None
    audio_end_ms: int | None = None      # server's speech_stopped, session input ms
    end_of_speech: float | None = None
    first_audio: float | None = None
    last_audio: float | None = None
    transcript_done: float | None = None
    response_done: float | None = None
    audio_bytes: int = 0                 # PCM16 24 kHz bytes of reply audio
    user_transcript: str = ""
    assistant_transcript: str = ""
    status: str | None = None
    reason: str | None = None  # response.done's status_details.reason (why incomplete or cancelled)

    def _since_eos(self, t: float | None) -> float | None:
        return None if t is None or self.end_of_speech is None else t - self.end_of_speech

    @property
    def first_audio_latency(self) -> float | None:
        return self._since_eos(self.first_audio)

    @property
    def transcript_latency(self) -> float | None:
        return self._since_eos(self.transcript_done)

    @property
    def done_latency(self) -> float | None:
        return self._since_eos(self.response_done)

    @property
    def audio_s(self) -> float:
        return self.audio_bytes / 2 / 24_000

    @property
    def tts_rtf(self) -> float | None:
        """Audio seconds received per second between the first and the last audio delta (> 1: faster than
        real time). None with fewer than two deltas' worth of spread."""
        if self.first_audio is None or self.last_audio is None or self.last_audio <= self.first_audio:
            return None
        return self.audio_s / (self.last_audio - self.first_audio)


@dataclass(slots=True)
class TurnTracker:
    """Builds `Turn`s from server events.

    Args:
        log: the SendLog being filled by stream_audio (read live).
        voiced: sorted stream-sample indices of voiced samples of the streamed audio.
    """

    log: SendLog
    voiced: npt.NDArray[np.int64]
    turns: list[Turn] = field(default_factory=list)
    _stopped_ms: dict[str, int] = field(default_factory=dict)
    # Index of the first turn whose response may answer the next commit: a response created before the speech
    # stopped (an operator's `say` while the user talks) cannot answer that speech.
    _answers_from: int = 0

    def feed(self, event: ServerEvent, now: float) -> Turn | None:
        """Record `event` (arrived at `now`); returns the turn it touched, if any."""
        t = event.type
        if t == "input_audio_buffer.speech_stopped" and event.item_id and event.audio_end_ms is not None:
            self._stopped_ms[event.item_id] = event.audio_end_ms
            self._answers_from = len(self.turns)
            return None
        if t == "input_audio_buffer.committed":
            return self._commit(event.item_id)
        if t == "conversation.item.input_audio_transcription.completed":
            turn = self._by_item(event.item_id)
            if turn is not None:
                turn.transcript_done = now
                turn.user_transcript = event.transcript or ""
            return turn
        if t == "conversation.item.input_audio_transcription.failed":
            turn = self._by_item(event.item_id)
            if turn is not None:
                turn.transcript_done = now
            return turn
        if t == "response.created":
            # It answers the latest turn, if that has no reply yet: an earlier one still without a reply was spoken
            # over before its reply became visible, and the server dropped that reply for good.
            turn = self.turns[-1] if self.turns and self.turns[-1].response_id is None else None
            if turn is None:  # a response nobody's speech asked for (e.g. response.create alone, an operator's say)
                turn = Turn()
                self.turns.append(turn)
            turn.response_id = event.response_id
            return turn
        turn = self._by_response(event.response_id)
        if turn is None:
            return None
        if t == "response.output_audio.delta":
            turn.first_audio = now if turn.first_audio is None else turn.first_audio
            turn.last_audio = now
            turn.audio_bytes += len(event.audio)
        elif t in ("response.output_audio_transcript.delta", "response.output_text.delta"):
            turn.assistant_transcript += event.delta
        elif t == "response.done":
            turn.response_done = now
            turn.status, turn.reason = event.response_status, event.response_reason
        elif t == CLIENT_RESPONSE_LOST:  # the connection dropped mid-reply: no response.done will ever come
            turn.response_done = now
            turn.status, turn.reason = "lost", "connection_lost"
        return turn

    def _commit(self, item_id: str | None) -> Turn:
        # A server may announce its (speculative) response before the commit, once the speech stopped: that response
        # answers this item.
        unanswered = (x for x in self.turns[self._answers_from:] if x.user_item_id is None and x.response_done is None)
        turn = next(unanswered, None)
        if turn is None:
            turn = Turn()
            self.turns.append(turn)
        turn.user_item_id = item_id
        stream_ms = self._stopped_ms.pop(item_id, None) if item_id else None
        if stream_ms is not None:
            turn.audio_end_ms = stream_ms
            limit = (stream_ms + EOS_GRACE_MS) * self.log.rate // 1000 - self.log.base
        else:  # committed by hand: the turn holds everything sent so far
            limit = self.log.samples_sent - 1
        idx = last_voiced_at_or_before(self.voiced, limit)
        if idx is not None:
            turn.end_of_speech = self.log.time_of_sample(idx)
        elif stream_ms is not None:
            turn.end_of_speech = self.log.time_of_ms(stream_ms)
        return turn

    def _by_item(self, item_id: str | None) -> Turn | None:
        return next((x for x in self.turns if item_id and x.user_item_id == item_id), None)

    def _by_response(self, response_id: str | None) -> Turn | None:
        return next((x for x in reversed(self.turns) if response_id and x.response_id == response_id), None)

    def all_done(self) -> bool:
        """At least one turn, and every turn's response is done, except a turn without a reply that a later turn's
        reply followed (the user spoke on before a reply to it became visible: the server dropped that reply)."""
        answered_later = False
        for turn in reversed(self.turns):
            if turn.response_id is None and answered_later:
                continue
            if turn.response_done is None:
                return False
            answered_later = True
        return bool(self.turns)

    def transcripts_done(self) -> bool:
        return all(x.transcript_done is not None for x in self.turns if x.user_item_id)
