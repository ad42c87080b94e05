"""Voice activity detection for the pipeline: resampling at the edges, silero-vad, server_vad turns.

Synchronous, per-session streaming objects; no asyncio or threads. Importing this package loads no model.
"""

from __future__ import annotations

from vad.resample import Resampler
from vad.silero import CHUNK_SAMPLES, SAMPLE_RATE, SileroModel, SileroModelError, SileroVad
from vad.turn_detector import (
    Pause,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnDetectorConfig,
    VadEvent,
)

__all__ = [
    "CHUNK_SAMPLES",
    "SAMPLE_RATE",
    "Pause",
    "Resampler",
    "SileroModel",
    "SileroModelError",
    "SileroVad",
    "SpeechResumed",
    "SpeechStarted",
    "SpeechStopped",
    "TurnDetector",
    "TurnDetectorConfig",
    "VadEvent",
]
