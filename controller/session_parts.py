"""What a session runs under its configuration (input converter, turn detector, turn-taking settings), built from a
SessionConfig.

A session.update builds all of it from the new configuration before the session takes any of it: a step that
fails leaves the session exactly as it was (the update is answered with an error), never half under the new
configuration and half under the old, with no session.updated to show which.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller import turn_events as te
from controller.audio_io import InputConverter
from controller.realtime.session_config import SessionConfig
from vad import TurnDetector, TurnDetectorConfig


@dataclass(frozen=True, slots=True)
class SessionParts:
    """The parts a configuration gives a session; each is new, or the session's own when the update left it as it
    was (its streaming state goes on)."""

    converter: InputConverter
    detector: TurnDetector
    turns: te.TurnConfig


def turn_config(cfg: SessionConfig, speculation: bool) -> te.TurnConfig:
    vad = cfg.turn_detection
    if vad is None:
        return te.TurnConfig(server_vad=False, speculation=False)
    answers = cfg.kind == "realtime"  # a transcription session's turns are only transcribed
    return te.TurnConfig(
        server_vad=True, speculation=speculation and answers, create_response=vad.create_response and answers,
        interrupt_response=vad.interrupt_response,
        idle_timeout_s=None if vad.idle_timeout_ms is None or not answers else vad.idle_timeout_ms / 1000.0)


def detector_config(cfg: SessionConfig, pause_ms: int) -> TurnDetectorConfig:
    """pause_ms: the server's pause that starts a speculation, never longer than the end-of-turn silence."""
    vad = cfg.turn_detection
    return TurnDetectorConfig(pause_ms=pause_ms) if vad is None else TurnDetectorConfig(
        threshold=vad.threshold, prefix_padding_ms=vad.prefix_padding_ms,
        silence_duration_ms=vad.silence_duration_ms, pause_ms=min(pause_ms, vad.silence_duration_ms))


def initial_parts(cfg: SessionConfig, *, pause_ms: int, speculation: bool) -> SessionParts:
    return SessionParts(converter=InputConverter(cfg.input_format),
                        detector=TurnDetector(detector_config(cfg, pause_ms)), turns=turn_config(cfg, speculation))


def updated_parts(old: SessionConfig, new: SessionConfig, current: SessionParts, *, audio_ms: int, pause_ms: int,
                  speculation: bool) -> SessionParts:
    """The parts for `new`, from the session's `current` ones under `old`; `current` is left as it was.

    audio_ms: the input audio heard so far, where a detector that starts now (turn detection was off) begins.
    Raises ValueError where `new` is one the turn detector cannot run."""
    converter = current.converter if new.input_format == old.input_format else InputConverter(new.input_format)
    detector = current.detector
    if new.turn_detection != old.turn_detection:
        # A turn the user is in the middle of goes on under the new parameters: a fresh detector would never end it
        # (it never saw it start). One that was idle (no turn detection) starts its clock now.
        config = detector_config(new, pause_ms)
        detector = (current.detector.retuned(config) if old.turn_detection is not None
                    else TurnDetector(config, origin_ms=audio_ms))
    return SessionParts(converter=converter, detector=detector, turns=turn_config(new, speculation))
