"""Silero VAD on real speech (beckett.wav), alone and driving the TurnDetector."""

from __future__ import annotations

import numpy as np
import pytest

from vad import (
    CHUNK_SAMPLES,
    Pause,
    SileroModel,
    SileroVad,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnDetectorConfig,
    VadEvent,
)

pytestmark = pytest.mark.slow
SR = 16_000


def events_for(model: SileroModel, audio: np.ndarray, cfg: TurnDetectorConfig) -> list[VadEvent]:
    vad, det = SileroVad(model), TurnDetector(cfg)
    # 20 ms pieces, as a client would send them; a second of trailing silence closes the last turn.
    audio = np.concatenate([audio, np.zeros(SR, dtype=np.float32)])
    events: list[VadEvent] = []
    for i in range(0, audio.size, 320):
        events += det.feed(vad.process(audio[i:i + 320]))
    return events


def test_probabilities_per_full_chunk_and_split_invariant(silero_model: SileroModel, beckett: np.ndarray) -> None:
    vad = SileroVad(silero_model)
    whole = vad.process(beckett)
    assert len(whole) == beckett.size // CHUNK_SAMPLES
    assert vad.chunks == len(whole)
    vad.reset()
    pieces: list[float] = []
    rng = np.random.default_rng(0)
    i = 0
    while i < beckett.size:
        n = int(rng.integers(1, 1500))
        pieces += vad.process(beckett[i:i + n])
        i += n
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-6)
    probs = np.array(whole)
    assert probs[:8].max() < 0.2  # the recording opens with ~0.3 s of room noise
    assert (probs > 0.5).mean() > 0.4  # and is mostly speech
    assert probs.min() >= 0.0 and probs.max() <= 1.0


def test_beckett_turns(silero_model: SileroModel, beckett: np.ndarray) -> None:
    events = events_for(silero_model, beckett, TurnDetectorConfig())
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    stops = [e for e in events if isinstance(e, SpeechStopped)]
    # Six short sentences separated by ~0.7 s: six turns with the default 500 ms silence.
    assert len(starts) == 6 and len(stops) == 6
    assert 0 <= starts[0].audio_start_ms <= 200  # speech begins ~0.33 s in, minus 300 ms padding
    assert 1000 <= stops[0].audio_end_ms <= 1400  # "Ever tried." ends ~1.2 s
    assert 8500 <= stops[-1].audio_end_ms <= 9400  # "Fail better." ends ~8.9 s
    # Strict alternation; every turn pauses before it stops, at the same ms.
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, Pause, SpeechStopped] * 6
    for k in range(6):
        pause, stop = events[3 * k + 1], events[3 * k + 2]
        assert isinstance(pause, Pause) and isinstance(stop, SpeechStopped)
        assert pause.audio_ms == stop.audio_end_ms


def _splice(beckett: np.ndarray, gap_s: float) -> np.ndarray:
    # "Ever tried." (0-1.25 s) + digital silence + "Ever failed." (1.85-2.9 s), cut close to the words.
    first, second = beckett[: int(1.25 * SR)], beckett[int(1.85 * SR): int(2.9 * SR)]
    return np.concatenate([first, np.zeros(int(gap_s * SR), dtype=np.float32), second])


def test_long_gap_ends_the_turn(silero_model: SileroModel, beckett: np.ndarray) -> None:
    cfg = TurnDetectorConfig(pause_ms=200, silence_duration_ms=500)
    events = events_for(silero_model, _splice(beckett, 1.5), cfg)
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, Pause, SpeechStopped, SpeechStarted, Pause, SpeechStopped]
    stop, restart = events[2], events[3]
    assert isinstance(stop, SpeechStopped) and isinstance(restart, SpeechStarted)
    assert 1100 <= stop.audio_end_ms <= 1300
    # The second sentence starts at ~1.25 + 1.5 s; its start is moved back by the 300 ms padding.
    assert 2750 - 300 - 200 <= restart.audio_start_ms <= 2750


def test_short_gap_is_a_pause_then_resume(silero_model: SileroModel, beckett: np.ndarray) -> None:
    cfg = TurnDetectorConfig(pause_ms=200, silence_duration_ms=500)
    events = events_for(silero_model, _splice(beckett, 0.3), cfg)
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, Pause, SpeechResumed, Pause, SpeechStopped]
    pause, resumed = events[1], events[2]
    assert isinstance(pause, Pause) and isinstance(resumed, SpeechResumed)
    assert 1100 <= pause.audio_ms <= 1300
    assert 1450 <= resumed.audio_ms <= 1700  # second sentence at ~1.25 + 0.3 s


def test_reset_restarts_the_stream(silero_model: SileroModel, beckett: np.ndarray) -> None:
    vad = SileroVad(silero_model)
    first = vad.process(beckett[: 3 * SR + 100])
    vad.reset()
    assert vad.chunks == 0
    again = vad.process(beckett[: 3 * SR + 100])
    assert again == first


def test_rejects_stereo(silero_model: SileroModel) -> None:
    with pytest.raises(ValueError):
        SileroVad(silero_model).process(np.zeros((2, 512), dtype=np.float32))
