"""PiperTts with the packaged en_US-joe-medium voice."""
from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from speech_decoder import PiperError, PiperTts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tts() -> Iterator[PiperTts]:
    yield PiperTts.load(voice="joe")


def speak(tts: PiperTts, text: str, speed: float = 1.0) -> np.ndarray:
    chunks = list(tts.synthesize(text, speed))
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def test_sentence_has_plausible_length_and_energy(tts: PiperTts) -> None:
    assert tts.sample_rate == 22050
    audio = speak(tts, "Hello there, how can I help you today?")
    seconds = audio.size / tts.sample_rate
    assert 1.2 < seconds < 4.0  # 9 words at a normal speaking rate
    rms = float(np.sqrt(np.mean(audio ** 2)))
    assert 0.02 < rms < 0.5
    assert float(np.abs(audio).max()) <= 1.0


def test_speed_changes_the_length_of_the_speech_and_keeps_its_energy(tts: PiperTts) -> None:
    text = "Hello there, how can I help you today?"
    normal, fast, slow = (speak(tts, text, speed) for speed in (1.0, 1.5, 0.5))
    # Piper's phoneme durations scale with 1 / speed; the pauses around the sentence scale less.
    assert 0.55 < fast.size / normal.size < 0.85  # measured 0.69-0.76 (the durations are sampled)
    assert 1.45 < slow.size / normal.size < 2.2  # measured 1.66-1.76
    for audio in (fast, slow):
        assert 0.02 < float(np.sqrt(np.mean(audio ** 2))) < 0.5
    with pytest.raises(PiperError, match="speed"):
        list(tts.synthesize(text, 0))


def test_empty_or_whitespace_text_yields_nothing(tts: PiperTts) -> None:
    for text in ["", "   ", "\n\t "]:
        assert list(tts.synthesize(text)) == []


def test_digits_and_non_ascii_do_not_crash(tts: PiperTts) -> None:
    audio = speak(tts, "It costs 3.14 dollars on 12/05/2024 at the café naïve, 北京.")
    assert audio.size / tts.sample_rate > 1.0


def test_concurrent_synthesis_gives_the_same_audio(tts: PiperTts) -> None:
    """Thread-safety: two sessions synthesizing at once get what each would get alone (Piper is deterministic
    for a given text only up to its noise; compare lengths, which depend on the phonemes)."""
    texts = ["The first session speaks now.", "A second voice answers at the same time, a little longer."]
    alone = [speak(tts, t).size for t in texts]
    results: dict[int, int] = {}

    def run(i: int) -> None:
        results[i] = speak(tts, texts[i]).size

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i, size in enumerate(alone):
        assert abs(results[i] - size) < 0.35 * size


def test_unknown_voice_is_a_clear_error() -> None:
    with pytest.raises(PiperError, match="unknown Piper voice"):
        PiperTts.load(voice="nobody")
