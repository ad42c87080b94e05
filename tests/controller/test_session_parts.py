"""What a session runs under its configuration, built whole before a session.update is taken (controller.session_parts).

A session.update assigned its new configuration first and built the input converter and the turn detector after: a
step that failed there left the session half updated (the new config, the old detector), with no session.updated to
show it. The parts are now built from the new config before the session takes anything."""

from __future__ import annotations

import dataclasses
import math

import pytest

from controller.errors import ConfigError
from controller.realtime.session_config import AudioFormat, ServerVad, SessionConfig
from controller.session_parts import initial_parts, updated_parts
from vad import turn_detector as vd

PAUSE_MS = 200


def _speaking() -> tuple[SessionConfig, vd.TurnDetector, list[vd.VadEvent]]:
    """A session under server_vad whose user is 0.5 s into a turn (32 ms chunks, all speech)."""
    cfg = SessionConfig(turn_detection=ServerVad())
    parts = initial_parts(cfg, pause_ms=PAUSE_MS, speculation=True)
    events = parts.detector.feed([1.0] * 16)
    return cfg, parts.detector, events


def test_an_update_the_detector_cannot_run_raises_before_anything_of_it_is_built_and_leaves_the_parts_alone() -> None:
    """A detector that cannot be built (here a negative pause, which the server's options refuse before a session
    starts) fails the build: the caller has nothing to assign, and the parts it has still work as before."""
    cfg, detector, _ = _speaking()
    current = dataclasses.replace(initial_parts(cfg, pause_ms=PAUSE_MS, speculation=True), detector=detector)
    bad = dataclasses.replace(cfg, turn_detection=ServerVad(threshold=0.7), input_format=AudioFormat.PCMU)
    with pytest.raises(ValueError, match="pause_ms"):
        updated_parts(cfg, bad, current, audio_ms=512, pause_ms=-1, speculation=True)
    assert detector.config.threshold == 0.5 and detector.in_speech
    assert current.converter.fmt is AudioFormat.PCM
    assert [type(e) for e in detector.feed([0.0] * 20)] == [vd.Pause, vd.SpeechStopped]  # the turn still ends


@pytest.mark.parametrize("threshold", [0.0, -0.25, 1.5, math.nan])
def test_a_vad_threshold_the_detector_refuses_is_refused_by_the_session_config_in_the_same_words(
        threshold: float) -> None:
    """ServerVad took threshold 0, which the turn detector refuses (every sound would be speech): only the wire parser
    kept it out, with a rule of its own, so a ServerVad built elsewhere failed later, at the session's detector.
    The session config, the parser and the detector now apply one rule (vad.turn_detector.check_threshold)."""
    with pytest.raises(ConfigError, match=r"threshold must be above 0 and at most 1") as config_error:
        ServerVad(threshold=threshold)
    with pytest.raises(ValueError) as detector_error:
        vd.TurnDetectorConfig(threshold=threshold)
    assert str(config_error.value) == str(detector_error.value)


def test_a_turn_detection_update_mid_turn_ends_that_turn_under_the_new_silence() -> None:
    cfg, detector, _ = _speaking()
    current = dataclasses.replace(initial_parts(cfg, pause_ms=PAUSE_MS, speculation=True), detector=detector)
    new = dataclasses.replace(cfg, turn_detection=ServerVad(silence_duration_ms=1000))
    parts = updated_parts(cfg, new, current, audio_ms=512, pause_ms=PAUSE_MS, speculation=True)
    assert parts.detector is not detector and detector.config.silence_duration_ms == 500  # the old one untouched
    assert parts.converter is current.converter  # same format: its stream (a split sample, the filter) goes on
    assert parts.detector.in_speech
    assert not [e for e in parts.detector.feed([0.0] * 20) if isinstance(e, vd.SpeechStopped)]  # 640 ms: not yet
    stopped = [e for e in parts.detector.feed([0.0] * 20) if isinstance(e, vd.SpeechStopped)]
    assert [e.audio_end_ms for e in stopped] == [512]  # ended by 1000 ms of silence, the speech's end kept


def test_turn_detection_switched_on_starts_its_clock_at_the_audio_heard_so_far() -> None:
    cfg = SessionConfig(turn_detection=None)
    current = initial_parts(cfg, pause_ms=PAUSE_MS, speculation=True)
    new = dataclasses.replace(cfg, turn_detection=ServerVad(prefix_padding_ms=0), input_format=AudioFormat.PCMA)
    parts = updated_parts(cfg, new, current, audio_ms=10_000, pause_ms=PAUSE_MS, speculation=True)
    assert not current.turns.server_vad and parts.turns.server_vad and parts.turns.speculation
    assert parts.converter.fmt is AudioFormat.PCMA and current.converter.fmt is AudioFormat.PCM
    started = [e for e in parts.detector.feed([0.0] * 4 + [1.0] * 8) if isinstance(e, vd.SpeechStarted)]
    assert [e.audio_start_ms for e in started] == [10_000 + 4 * 32]
