"""TurnDetector on scripted probability sequences: exact events, exact audio ms, exact emission chunk.

Default config: threshold 0.5 (neg 0.35), 32 ms chunks, min_speech 100 ms = 4 chunks,
pause 200 ms = 7 chunks, silence 500 ms = 16 chunks, prefix padding 300 ms.
"""

from __future__ import annotations

import pytest

from vad import Pause, SpeechResumed, SpeechStarted, SpeechStopped, TurnDetector, TurnDetectorConfig, VadEvent

S, V, MID = 0.05, 0.9, 0.4  # silent, voiced, between neg_threshold and threshold


def seq(*parts: tuple[float, int]) -> list[float]:
    out: list[float] = []
    for p, n in parts:
        out += [p] * n
    return out


def timeline(det: TurnDetector, probs: list[float]) -> list[tuple[int, VadEvent]]:
    """Feed one chunk at a time; return (chunk index at which it was emitted, event)."""
    out: list[tuple[int, VadEvent]] = []
    for i, p in enumerate(probs):
        out += [(i, ev) for ev in det.feed([p])]
    return out


def test_one_turn_exact_times() -> None:
    probs = seq((S, 10), (V, 20), (S, 20))
    assert timeline(TurnDetector(), probs) == [
        (13, SpeechStarted(320 - 300)),  # candidate at chunk 10 (320 ms) confirmed after 4 chunks
        (36, Pause(960)),  # speech ended at chunk 30 = 960 ms; 7 silent chunks = 224 ms >= 200
        (45, SpeechStopped(960)),  # 16 silent chunks = 512 ms >= 500
    ]


def test_feeding_whole_or_chunkwise_gives_same_events() -> None:
    probs = seq((S, 5), (V, 12), (S, 3), (V, 6), (S, 9), (V, 8), (S, 30), (V, 2), (S, 4), (V, 10), (S, 17))
    chunkwise = [ev for _, ev in timeline(TurnDetector(), probs)]
    det = TurnDetector()
    whole = det.feed(probs[:17]) + det.feed(probs[17:40]) + det.feed(probs[40:])
    assert whole == chunkwise
    assert chunkwise[0] == SpeechStarted(0)


def test_prefix_padding_clamps_at_zero() -> None:
    assert TurnDetector().feed(seq((S, 2), (V, 4))) == [SpeechStarted(0)]
    cfg = TurnDetectorConfig(prefix_padding_ms=0)
    assert TurnDetector(cfg).feed(seq((S, 2), (V, 4))) == [SpeechStarted(64)]


def test_blip_shorter_than_min_speech_is_ignored() -> None:
    det = TurnDetector()
    assert det.feed(seq((S, 3), (V, 3), (S, 40))) == []
    assert not det.in_speech
    assert det.feed(seq((V, 4))) == [SpeechStarted(46 * 32 - 300)]
    assert det.in_speech


def test_min_speech_zero_starts_on_first_voiced_chunk() -> None:
    det = TurnDetector(TurnDetectorConfig(min_speech_ms=0, prefix_padding_ms=0))
    assert timeline(det, seq((S, 3), (V, 1))) == [(3, SpeechStarted(96))]


def test_hysteresis_between_thresholds() -> None:
    det = TurnDetector()
    # In silence, MID does not start speech ...
    assert det.feed(seq((MID, 30))) == []
    # ... once speaking, MID keeps it going: no pause however long it lasts.
    assert det.feed(seq((V, 4), (MID, 40))) == [SpeechStarted(30 * 32 - 300)]
    # and a silent chunk then starts the trailing silence at its own start.
    assert det.feed(seq((S, 16))) == [Pause(74 * 32), SpeechStopped(74 * 32)]


def test_mid_chunks_count_as_silence_once_trailing() -> None:
    # After the first silent chunk only a voiced chunk can end the silence.
    events = timeline(TurnDetector(), seq((V, 10), (S, 1), (MID, 20)))
    assert events == [(3, SpeechStarted(0)), (16, Pause(320)), (25, SpeechStopped(320))]


def test_short_gap_below_pause_emits_nothing() -> None:
    events = timeline(TurnDetector(), seq((V, 10), (S, 6), (V, 10), (S, 16)))
    assert events == [(3, SpeechStarted(0)), (32, Pause(26 * 32)), (41, SpeechStopped(26 * 32))]


def test_pause_then_resume_then_end_of_turn() -> None:
    probs = seq((S, 10), (V, 20), (S, 9), (V, 10), (S, 16))
    assert timeline(TurnDetector(), probs) == [
        (13, SpeechStarted(20)),
        (36, Pause(960)),
        (42, SpeechResumed(39 * 32)),  # resume candidate at chunk 39 confirmed after 4 chunks
        (55, Pause(49 * 32)),
        (64, SpeechStopped(49 * 32)),
    ]


def test_resume_blip_after_pause_is_ignored() -> None:
    # Speech ends at chunk 10; a 2-chunk blip at chunks 20-21 is too short to resume.
    probs = seq((V, 10), (S, 10), (V, 2), (S, 10))
    assert timeline(TurnDetector(), probs) == [
        (3, SpeechStarted(0)), (16, Pause(320)), (25, SpeechStopped(320)),
    ]


def test_pending_resume_defers_end_of_turn_then_counts_as_silence() -> None:
    # Speech ends at chunk 10; end of turn would fire at chunk 25, but a candidate (chunks 24-26)
    # is pending then; when it is dropped at chunk 27 the silence (17 chunks) already exceeds 16.
    probs = seq((V, 10), (S, 14), (V, 3), (S, 5))
    assert timeline(TurnDetector(), probs) == [
        (3, SpeechStarted(0)), (16, Pause(320)), (27, SpeechStopped(320)),
    ]


def test_pending_resume_without_pause_holds_pause_back() -> None:
    # Silence of 5 chunks, then a 3-chunk candidate that dies: pause reached only when it is dropped.
    probs = seq((V, 10), (S, 5), (V, 3), (S, 20))
    assert timeline(TurnDetector(), probs) == [
        (3, SpeechStarted(0)), (18, Pause(320)), (25, SpeechStopped(320)),
    ]


def test_next_turn_padding_never_reaches_into_previous_turn() -> None:
    det = TurnDetector()
    first = det.feed(seq((V, 10), (S, 16)))
    assert first == [SpeechStarted(0), Pause(320), SpeechStopped(320)]
    # New speech at chunk 26 = 832 ms; 832 - 300 = 532 >= 320, so the padding applies in full.
    assert det.feed(seq((V, 4))) == [SpeechStarted(532)]
    det2 = TurnDetector(TurnDetectorConfig(prefix_padding_ms=1000))
    det2.feed(seq((V, 10), (S, 16)))
    assert det2.feed(seq((V, 4))) == [SpeechStarted(320)]


def test_reset_drops_turn_but_keeps_the_audio_clock() -> None:
    det = TurnDetector()
    assert det.feed(seq((V, 10), (S, 8))) == [SpeechStarted(0), Pause(320)]
    det.reset()
    assert not det.in_speech and det.position_ms == 18 * 32
    assert det.feed(seq((S, 30))) == []  # no SpeechStopped for the dropped turn
    assert det.feed(seq((V, 4))) == [SpeechStarted(48 * 32 - 300)]


def test_retuned_mid_turn_ends_the_turn_under_the_new_silence_and_keeps_the_clock() -> None:
    det = TurnDetector()
    assert det.feed(seq((S, 10), (V, 20), (S, 4))) == [SpeechStarted(20)]
    det = det.retuned(TurnDetectorConfig(silence_duration_ms=300, pause_ms=100))
    # Speech ended at chunk 30 (960 ms): 5 silent chunks >= the new 100 ms pause, 10 (320 ms) >= its 300 ms silence.
    assert timeline(det, seq((S, 10))) == [(0, Pause(960)), (5, SpeechStopped(960))]
    assert det.feed(seq((V, 4))) == [SpeechStarted(44 * 32 - 300)]


def test_retuned_in_silence_starts_turns_with_the_new_threshold() -> None:
    det = TurnDetector().retuned(TurnDetectorConfig(threshold=0.95))
    assert det.feed(seq((V, 10), (S, 20))) == []
    assert det.position_ms == 30 * 32
    with pytest.raises(ValueError, match="chunk geometry"):
        det.retuned(TurnDetectorConfig(chunk_samples=256))


def test_pause_equal_to_silence_duration() -> None:
    det = TurnDetector(TurnDetectorConfig(pause_ms=500, silence_duration_ms=500))
    assert timeline(det, seq((V, 5), (S, 16))) == [
        (3, SpeechStarted(0)), (20, Pause(160)), (20, SpeechStopped(160)),
    ]


def test_other_chunk_geometry() -> None:
    # 10 ms chunks: durations round up to whole chunks (25 ms -> 3, 45 ms -> 5, 95 ms -> 10).
    cfg = TurnDetectorConfig(chunk_samples=160, sample_rate=16_000, prefix_padding_ms=0,
                             min_speech_ms=25, pause_ms=45, silence_duration_ms=95)
    assert timeline(TurnDetector(cfg), seq((S, 1), (V, 3), (S, 10))) == [
        (3, SpeechStarted(10)), (8, Pause(40)), (13, SpeechStopped(40)),
    ]


def test_origin_offsets_all_times() -> None:
    det = TurnDetector(origin_ms=10_000)
    assert det.position_ms == 10_000
    assert det.feed(seq((S, 2), (V, 10), (S, 16))) == [
        SpeechStarted(10_000),  # 10_064 - 300 clamps at the origin, not at 0
        Pause(10_000 + 12 * 32), SpeechStopped(10_000 + 12 * 32),
    ]
    with pytest.raises(ValueError):
        TurnDetector(origin_ms=-1)


def test_zero_durations_fire_on_first_silent_chunk() -> None:
    det = TurnDetector(TurnDetectorConfig(pause_ms=0, silence_duration_ms=0))
    assert timeline(det, seq((V, 5), (S, 2))) == [
        (3, SpeechStarted(0)), (5, Pause(160)), (5, SpeechStopped(160)),
    ]


@pytest.mark.parametrize("kwargs", [
    {"threshold": 0.0}, {"threshold": 1.5}, {"neg_threshold": 0.6}, {"pause_ms": -1},
    {"pause_ms": 600}, {"min_speech_ms": -1}, {"prefix_padding_ms": -5}, {"chunk_samples": 0},
])
def test_invalid_config_raises(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TurnDetectorConfig(**kwargs)  # type: ignore[arg-type]


def test_default_neg_threshold_follows_silero() -> None:
    assert TurnDetectorConfig().effective_neg_threshold == pytest.approx(0.35)
    assert TurnDetectorConfig(threshold=0.1).effective_neg_threshold == pytest.approx(0.01)
    assert TurnDetectorConfig(neg_threshold=0.2).effective_neg_threshold == 0.2


def test_speaking_is_false_in_the_trailing_silence_and_true_again_on_resume() -> None:
    det = TurnDetector()
    det.feed(seq((S, 2), (V, 3)))
    assert not det.speaking  # a start candidate is not speech yet
    det.feed(seq((V, 1)))
    assert det.speaking and det.in_speech
    det.feed(seq((S, 3)))
    assert not det.speaking and det.in_speech  # timing a silence inside the turn
    det.feed(seq((V, 4)))
    assert det.speaking  # resume confirmed
    det.feed(seq((S, 20)))
    assert not det.speaking and not det.in_speech


def test_trailing_silence_names_the_end_that_pause_and_speech_stopped_will_carry() -> None:
    det = TurnDetector()
    det.feed(seq((S, 10), (V, 20)))
    assert det.trailing_silence is None  # speaking
    det.feed(seq((S, 3)))
    assert det.trailing_silence == (960, 96)  # speech ended at chunk 30; three silent chunks since
    det.feed(seq((V, 2)))
    assert det.trailing_silence is None  # a resume candidate
    events = det.feed(seq((S, 3)))  # the candidate failed: the silence is timed from 960 ms again
    assert det.trailing_silence == (960, 256) and events == [Pause(960)]
    assert det.feed(seq((S, 8))) == [SpeechStopped(960)] and det.trailing_silence is None
