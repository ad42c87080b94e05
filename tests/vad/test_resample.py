"""Resampler: streaming equals one-shot, frequencies survive, identity is exact, real speech survives."""

from __future__ import annotations

import numpy as np
import pytest

from vad import Resampler, SileroModel, SileroVad


def _stream(r: Resampler, x: np.ndarray, piece: int) -> np.ndarray:
    out = [r.process(x[i:i + piece]) for i in range(0, x.size, piece)]
    return np.concatenate(out + [r.flush()])


def test_identity_returns_the_input() -> None:
    r = Resampler(16_000, 16_000)
    x = np.linspace(-1, 1, 1000, dtype=np.float64)
    y = r.process(x)
    assert r.identity and y.dtype == np.float32
    np.testing.assert_array_equal(y, x.astype(np.float32))
    assert r.flush().size == 0


@pytest.mark.parametrize(("src", "dst"), [(24_000, 16_000), (22_050, 24_000), (8_000, 16_000)])
def test_streaming_matches_one_shot_and_keeps_length(src: int, dst: int) -> None:
    t = np.arange(src) / src  # 1 s
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    whole = _stream(Resampler(src, dst), x, x.size)
    pieces = _stream(Resampler(src, dst), x, src // 50)  # 20 ms pieces
    assert abs(whole.size - dst) <= 1
    np.testing.assert_allclose(pieces, whole, atol=1e-5)
    # The 440 Hz tone is still at 440 Hz at the new rate (1 s of samples: FFT bin k is k Hz).
    spectrum = np.abs(np.fft.rfft(pieces[:dst]))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1


def test_flush_makes_it_reusable() -> None:
    r = Resampler(24_000, 16_000)
    x = np.random.default_rng(1).standard_normal(4800).astype(np.float32) * 0.1
    first = _stream(r, x, 480)
    second = _stream(r, x, 480)
    np.testing.assert_allclose(first, second, atol=1e-6)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        Resampler(0, 16_000)
    with pytest.raises(ValueError):
        Resampler(24_000, 16_000).process(np.zeros((10, 2), dtype=np.float32))


@pytest.mark.slow
def test_48k_speech_resampled_is_detected(two_cities_48k: np.ndarray, silero_model: SileroModel) -> None:
    clip = two_cities_48k[: 48_000 * 8]
    pcm16k = _stream(Resampler(48_000, 16_000), clip, 960)
    assert abs(pcm16k.size - clip.size // 3) <= 1
    probs = np.array(SileroVad(silero_model).process(pcm16k))
    assert (probs > 0.5).mean() > 0.4
