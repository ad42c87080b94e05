from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from streaming_tokenizer import WhisperAsr


def speech_asset(name: str) -> tuple[np.ndarray, int]:
    """A real recording shipped in the moonshine-voice wheel (read as a file; the package is not imported)."""
    import soundfile as sf

    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("moonshine-voice (test speech data) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / name
    audio, rate = sf.read(path, dtype="float32", always_2d=False)
    return audio, int(rate)


@pytest.fixture(scope="session")
def beckett() -> np.ndarray:
    """16 kHz: "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better." (10 s)."""
    audio, rate = speech_asset("beckett.wav")
    assert rate == 16_000
    return audio


@pytest.fixture(scope="session")
def tiny_en() -> WhisperAsr:
    return WhisperAsr.load(language="en", cpu_threads=2)
