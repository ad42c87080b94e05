"""server_vad turn detection over speech probabilities: a pure core (no I/O, no clock).

Rules. Time is *audio* time: chunk i of the session's 16 kHz input covers [i*32, (i+1)*32) ms, offset
by `origin_ms` when a detector takes over mid-session (e.g. after a turn_detection update).
- Hysteresis (as silero's own iterator): a chunk is *voiced* when p >= threshold; once speech is
  running it continues while p >= neg_threshold (default threshold - 0.15) and a chunk below
  neg_threshold is *silent*. While trailing silence is being timed, only a voiced chunk can end it.
- Start: a voiced chunk opens a candidate. It is confirmed once it has lasted min_speech_ms with no
  silent chunk; a silent chunk before that drops it (a blip, ignored). On confirmation
  SpeechStarted(audio_start_ms) is emitted, with audio_start_ms = candidate start - prefix_padding_ms,
  clamped at origin_ms (0 by default) and at the previous turn's speech end.
- Trailing silence: speech ends at the start of the first silent chunk (speech_end_ms). Silence is
  timed from there to the end of the current chunk.
  - It reaches pause_ms: Pause(audio_ms=speech_end_ms), once per silence (the speculation point).
  - It reaches silence_duration_ms: SpeechStopped(audio_end_ms=speech_end_ms), end of turn; the
    detector then waits for a new start. Pause and SpeechStopped carry the same ms for one silence, so
    a speculation started at the Pause can be matched at end of turn.
- Resuming: a voiced chunk during trailing silence opens a resume candidate, confirmed by the same
  min_speech_ms rule. While it is pending no Pause/SpeechStopped fires (it may be speech). Confirmed:
  speech continues, and if a Pause was emitted, SpeechResumed(audio_ms=candidate start) follows.
  Dropped: its chunks count as silence, timed from the old speech_end_ms, and the checks run again.
- Durations are rounded up to whole chunks; a zero pause_ms/silence_duration_ms fires on the first
  silent chunk.
- Events come out of `feed` in the order their conditions were met, chunk by chunk.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


def check_threshold(threshold: float) -> None:
    """The one rule for server_vad's threshold, which the Realtime session config and this detector both apply.

    Raises:
        ValueError: `threshold` is outside (0, 1]. A chunk is voiced at p >= threshold, so at 0 every sound is
            speech and no turn would ever end.
    """
    if not 0.0 < threshold <= 1.0:
        why = ": at 0 every sound is speech, so no turn would ever end" if threshold == 0 else ""
        raise ValueError(f"threshold must be above 0 and at most 1, got {threshold}{why}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnDetectorConfig:
    """server_vad parameters (names follow the Realtime API's turn_detection)."""

    threshold: float = 0.5
    neg_threshold: float | None = None  # None: max(threshold - 0.15, 0.01), as silero's VADIterator
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    pause_ms: int = 200
    min_speech_ms: int = 100
    chunk_samples: int = 512
    sample_rate: int = 16_000

    def __post_init__(self) -> None:
        check_threshold(self.threshold)
        if self.neg_threshold is not None and not 0.0 <= self.neg_threshold <= self.threshold:
            raise ValueError(f"neg_threshold must be in [0, threshold], got {self.neg_threshold}")
        for name, value in (("prefix_padding_ms", self.prefix_padding_ms), ("min_speech_ms", self.min_speech_ms)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.pause_ms < 0:
            raise ValueError(f"pause_ms must be >= 0, got {self.pause_ms}")
        if self.silence_duration_ms < self.pause_ms:
            raise ValueError(f"silence_duration_ms ({self.silence_duration_ms}) must be >= pause_ms "
                             f"({self.pause_ms}): a pause is the start of an end of turn")
        if self.chunk_samples <= 0 or self.sample_rate <= 0:
            raise ValueError("chunk_samples and sample_rate must be positive")

    @property
    def effective_neg_threshold(self) -> float:
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.01)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_start_ms: int  # already moved back by prefix_padding_ms


@dataclass(frozen=True, slots=True)
class Pause:
    audio_ms: int  # where the speech ended


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    audio_ms: int  # where the resumed speech began


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_end_ms: int  # where the speech ended


VadEvent = SpeechStarted | Pause | SpeechResumed | SpeechStopped


class _State(enum.Enum):
    SILENCE = "silence"  # no turn in progress
    STARTING = "starting"  # candidate start, not yet min_speech long
    SPEECH = "speech"
    TRAILING = "trailing"  # in a turn, timing silence
    RESUMING = "resuming"  # in a turn, candidate resume after silence


class TurnDetector:
    """Turns per-chunk speech probabilities into server_vad events in audio time."""

    def __init__(self, config: TurnDetectorConfig | None = None, *, origin_ms: int = 0) -> None:
        """`origin_ms`: the audio time at which the first chunk fed to this detector begins."""
        if origin_ms < 0:
            raise ValueError(f"origin_ms must be >= 0, got {origin_ms}")
        self.config = config if config is not None else TurnDetectorConfig()
        self._origin_ms = int(origin_ms)
        self._neg = self.config.effective_neg_threshold
        # Durations in chunks, rounded up: a condition "lasted X ms" holds once whole chunks cover X.
        self._min_speech = self._chunks_for(self.config.min_speech_ms)
        self._pause = self._chunks_for(self.config.pause_ms)
        self._silence = self._chunks_for(self.config.silence_duration_ms)
        self._index = 0  # chunks fed to this detector (chunk 0 begins at origin_ms)
        self._floor_chunk = 0  # a new turn's padding never reaches back before the previous turn's end
        self._reset_turn()

    def _chunks_for(self, ms: int) -> int:
        num = ms * self.config.sample_rate
        den = 1000 * self.config.chunk_samples
        return max(1, -(-num // den)) if ms > 0 else 0

    def _ms(self, chunk_index: int) -> int:
        return self._origin_ms + chunk_index * self.config.chunk_samples * 1000 // self.config.sample_rate

    def _reset_turn(self) -> None:
        self._state = _State.SILENCE
        self._candidate_start = 0  # first chunk of the current start/resume candidate
        self._speech_end = 0  # first silent chunk of the current trailing silence
        self._paused = False  # Pause emitted for the current silence

    @property
    def position_ms(self) -> int:
        """Audio time at the end of everything fed so far."""
        return self._ms(self._index)

    @property
    def in_speech(self) -> bool:
        """True between SpeechStarted and SpeechStopped."""
        return self._state not in (_State.SILENCE, _State.STARTING)

    @property
    def speaking(self) -> bool:
        """True while the current turn's speech runs: not before it, not in its trailing silence."""
        return self._state is _State.SPEECH

    @property
    def trailing_silence(self) -> tuple[int, int] | None:
        """(speech_end_ms, silence_ms so far) while a turn's trailing silence is being timed; None otherwise
        (also while a resume is only a candidate). speech_end_ms is what Pause and SpeechStopped will carry."""
        if self._state is not _State.TRAILING:
            return None
        end_ms = self._ms(self._speech_end)
        return end_ms, self._ms(self._index) - end_ms

    def retuned(self, config: TurnDetectorConfig) -> TurnDetector:
        """This detector under new parameters (a turn_detection update): the audio clock and a turn in progress
        carry over, so a turn the user is in the middle of still ends; its start is not announced again."""
        if (config.chunk_samples, config.sample_rate) != (self.config.chunk_samples, self.config.sample_rate):
            raise ValueError("retuning cannot change the chunk geometry")
        other = TurnDetector(config, origin_ms=self._origin_ms)
        other._index, other._floor_chunk = self._index, self._floor_chunk
        other._state, other._candidate_start = self._state, self._candidate_start
        other._speech_end, other._paused = self._speech_end, self._paused
        return other

    def reset(self) -> None:
        """Drop any turn in progress (no events); the audio clock keeps running."""
        self._reset_turn()
        self._floor_chunk = self._index

    def feed(self, probs: list[float]) -> list[VadEvent]:
        """Advance by one chunk per probability and return the events that became due."""
        events: list[VadEvent] = []
        for p in probs:
            self._step(float(p), events)
            self._index += 1
        return events

    def _step(self, p: float, events: list[VadEvent]) -> None:
        i = self._index
        voiced, silent = p >= self.config.threshold, p < self._neg
        state = self._state
        if state is _State.SILENCE:
            if voiced:
                self._candidate_start = i
                self._state = _State.STARTING
                self._check_confirmed(events)
        elif state is _State.STARTING:
            if silent:
                self._state = _State.SILENCE
            else:
                self._check_confirmed(events)
        elif state is _State.SPEECH:
            if silent:
                self._speech_end, self._paused = i, False
                self._state = _State.TRAILING
                self._check_silence(events)
        elif state is _State.TRAILING:
            if voiced:
                self._candidate_start = i
                self._state = _State.RESUMING
                self._check_confirmed(events)
            else:
                self._check_silence(events)
        else:  # RESUMING
            if silent:
                self._state = _State.TRAILING
                self._check_silence(events)
            else:
                self._check_confirmed(events)

    def _check_confirmed(self, events: list[VadEvent]) -> None:
        """A candidate (STARTING or RESUMING) that now spans min_speech becomes speech."""
        if self._index + 1 - self._candidate_start < self._min_speech:
            return
        if self._state is _State.STARTING:
            start_ms = max(self._ms(self._candidate_start) - self.config.prefix_padding_ms,
                           self._ms(self._floor_chunk))
            events.append(SpeechStarted(start_ms))
        elif self._paused:
            events.append(SpeechResumed(self._ms(self._candidate_start)))
        self._state = _State.SPEECH

    def _check_silence(self, events: list[VadEvent]) -> None:
        silence = self._index + 1 - self._speech_end
        end_ms = self._ms(self._speech_end)
        if not self._paused and silence >= self._pause:
            self._paused = True
            events.append(Pause(end_ms))
        if silence >= self._silence:
            events.append(SpeechStopped(end_ms))
            # The next turn's prefix padding stops where this turn's speech ended.
            self._floor_chunk = self._speech_end
            self._reset_turn()
