"""Front-end numerics for the Step-Audio tokenizer: Kaldi fbank, LFR, CMVN (am.mvn), Whisper 128-bin log-mel.

References are written here independently (per-frame loops in numpy, torch.stft for the whisper STFT) from the
algorithms as documented: Kaldi feat/feature-fbank.cc + mel-computations.cc (as torchaudio.compliance.kaldi
implements them), FunASR frontends/wav_frontend.py (apply_lfr, load_cmvn), openai whisper audio.py and
librosa.filters.mel (Slaney).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from streaming_tokenizer.step_audio.config import FbankConfig
from streaming_tokenizer.step_audio.fbank import KaldiFbank, Vq02Frontend, kaldi_mel_banks, lfr_whole, load_am_mvn
from streaming_tokenizer.step_audio.whisper_mel import WhisperMel, WhisperMelStream, slaney_mel_filters


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def _kaldi_reference(wav: np.ndarray) -> np.ndarray:
    """Kaldi fbank, one frame at a time, plain numpy."""
    x = wav.astype(np.float64) * 32768
    n_frames = 1 + (len(x) - 400) // 160
    mel = lambda f: 1127 * math.log(1 + f / 700)  # noqa: E731
    lo, hi = mel(20), mel(8000)
    delta = (hi - lo) / 81
    banks = np.zeros((80, 257))
    for b in range(80):
        left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        for i in range(256):
            m = mel(i * 16000 / 512)
            if left < m < right:
                banks[b, i] = (m - left) / (center - left) if m <= center else (right - m) / (right - center)
    win = np.array([0.54 - 0.46 * math.cos(2 * math.pi * n / 399) for n in range(400)])
    out = []
    for f in range(n_frames):
        fr = x[f * 160 : f * 160 + 400].copy()
        fr -= fr.mean()
        pre = fr.copy()
        pre[1:] -= 0.97 * fr[:-1]
        pre[0] -= 0.97 * fr[0]
        spec = np.fft.rfft(np.concatenate([pre * win, np.zeros(112)]))
        out.append(np.log(np.maximum(banks @ (np.abs(spec) ** 2), np.finfo(np.float32).eps)))
    return np.array(out)


def test_kaldi_fbank_matches_per_frame_reference() -> None:
    wav = _signal(0.5)
    got = KaldiFbank(FbankConfig()).frames(wav)
    assert got.shape == (1 + (8000 - 400) // 160, 80) and got.dtype == np.float32
    np.testing.assert_allclose(got, _kaldi_reference(wav), rtol=0, atol=2e-4)


def test_kaldi_fbank_properties() -> None:
    fb = KaldiFbank(FbankConfig())
    assert fb.n_fft == 512 and fb.num_frames(399) == 0 and fb.num_frames(400) == 1 and fb.num_frames(560) == 2
    banks = kaldi_mel_banks(80, 512, 16000)
    assert banks.shape == (80, 257) and np.all(banks[:, 256] == 0) and banks.max() <= 1.0
    # A 1 kHz tone peaks in the filter whose centre is nearest 1 kHz on the Kaldi mel scale.
    t = np.arange(16000) / 16000
    feats = fb.frames((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    mel = lambda f: 1127 * np.log1p(f / 700)  # noqa: E731
    centres = mel(20) + (np.arange(80) + 1) * (mel(8000) - mel(20)) / 81
    assert int(np.bincount(feats.argmax(axis=1)).argmax()) == int(np.abs(centres - mel(1000)).argmin())
    # Scaling the waveform by g adds 2 ln g to every log-mel (power spectrum, no dither).
    np.testing.assert_allclose(fb.frames(_signal(0.3) * 0.5), fb.frames(_signal(0.3)) + 2 * math.log(0.5), atol=1e-3)


def test_lfr_matches_funasr_rule() -> None:
    fb = np.arange(13 * 2, dtype=np.float32).reshape(13, 2)
    out = lfr_whole(fb, 7, 6)
    assert out.shape == (3, 14)  # ceil(13 / 6)
    padded = np.concatenate([fb[:1], fb[:1], fb[:1], fb])  # (m - 1) // 2 = 3 copies of frame 0
    np.testing.assert_array_equal(out[0], padded[0:7].reshape(-1))
    np.testing.assert_array_equal(out[1], padded[6:13].reshape(-1))
    last = np.concatenate([padded[12:16], np.repeat(fb[-1:], 3, axis=0)])  # right-padded with the last frame
    np.testing.assert_array_equal(out[2], last.reshape(-1))


def _write_mvn(path, shift, scale) -> None:  # type: ignore[no-untyped-def]
    vec = lambda v: " ".join(str(float(x)) for x in v)  # noqa: E731
    d = len(shift)
    path.write_text(
        f"<Nnet>\n<Splice> {d} {d}\n[ 0 ]\n<AddShift> {d} {d}\n<LearnRateCoef> 0 [ {vec(shift)} ]\n"
        f"<Rescale> {d} {d}\n<LearnRateCoef> 0 [ {vec(scale)} ]\n</Nnet>\n"
    )


def test_am_mvn_parse_and_streaming_frontend_equals_whole(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    shift, scale = -rng.uniform(8, 12, 560).astype(np.float32), rng.uniform(0.1, 0.3, 560).astype(np.float32)
    _write_mvn(tmp_path / "am.mvn", shift, scale)
    got_shift, got_scale = load_am_mvn(tmp_path / "am.mvn")
    np.testing.assert_allclose(got_shift, shift, rtol=1e-6)
    np.testing.assert_allclose(got_scale, scale, rtol=1e-6)
    fe = Vq02Frontend(FbankConfig(), got_shift, got_scale)
    for seconds in (1.0, 0.9999, 0.24, 0.0301):
        wav = _signal(seconds, seed=4)
        whole = fe.whole(wav)
        n_fb = 1 + (len(wav) - 400) // 160
        assert whole.shape == (math.ceil(n_fb / 6), 560)
        np.testing.assert_allclose(whole[0], (lfr_whole(KaldiFbank(fe.cfg).frames(wav), 7, 6)[0] + shift) * scale,
                                   rtol=1e-5)
        st = fe.new_state()
        parts, i = [], 0
        while i < len(wav):
            n = int(rng.integers(1, 2000))
            parts.append(st.feed(wav[i : i + n]))
            i += n
        parts.append(st.finish())
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_full_chunks_give_four_lfr_frames_each() -> None:
    """k full 3840-sample pieces give exactly 4k LFR frames before finish (upstream's 240 ms vq02 chunk)."""
    fe = Vq02Frontend(FbankConfig(), np.zeros(560, np.float32), np.ones(560, np.float32))
    st = fe.new_state()
    wav = _signal(1.2)
    counts = [st.feed(wav[i : i + 3840]).shape[0] for i in range(0, 5 * 3840, 3840)]
    assert counts == [4, 4, 4, 4, 4]


def test_slaney_filters_match_librosa_definition() -> None:
    w = slaney_mel_filters(128)
    assert w.shape == (128, 201)
    # Slaney scale: linear below 1 kHz (200/3 Hz per mel), log above; each triangle has peak 2 / (f_hi - f_lo).
    f_sp, logstep = 200 / 3, math.log(6.4) / 27
    to_mel = lambda f: f / f_sp if f < 1000 else 15 + math.log(f / 1000) / logstep  # noqa: E731
    to_hz = lambda m: m * f_sp if m < 15 else 1000 * math.exp(logstep * (m - 15))  # noqa: E731
    edges = [to_hz(m) for m in np.linspace(to_mel(0), to_mel(8000), 130)]
    freqs = np.linspace(0, 8000, 201)
    for i in (0, 20, 64, 127):
        lo, c, hi = edges[i], edges[i + 1], edges[i + 2]
        tri = np.maximum(0, np.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c))) * 2 / (hi - lo)
        np.testing.assert_allclose(w[i], tri, rtol=1e-9, atol=1e-12)


def test_whisper_log_mel_matches_torch_stft_and_streams() -> None:
    wav = _signal(1.37, seed=5)
    mel = WhisperMel(128)
    x = torch.from_numpy(wav.astype(np.float64))
    stft = torch.stft(x, 400, 160, window=torch.hann_window(400, dtype=torch.float64), return_complex=True)
    ref = torch.from_numpy(slaney_mel_filters(128)) @ stft[..., :-1].abs() ** 2
    ref = torch.clamp(ref, min=1e-10).log10()
    ref = (torch.maximum(ref, ref.max() - 8.0) + 4.0) / 4.0
    got = mel.upstream(wav)
    assert got.shape == (128, len(wav) // 160) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-5)
    st = WhisperMelStream(mel)
    rng = np.random.default_rng(6)
    parts, i = [], 0
    while i < len(wav):
        n = int(rng.integers(1, 3000))
        new = st.feed(wav[i : i + n])
        i += n
        # causality: a frame is released only once its 400-sample window (no end reflection) has arrived
        assert st.done == 0 or (st.done - 1) * 160 + 200 <= i
        parts.append(new)
    parts.append(st.finish())
    np.testing.assert_allclose(np.concatenate(parts), mel.whole_log10(wav), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [0, 150, 201, 359])
def test_whisper_mel_short_inputs(n: int) -> None:
    wav = _signal(0.03)[:n]
    mel = WhisperMel(128)
    st = WhisperMelStream(mel)
    out = np.concatenate([st.feed(wav), st.finish()])
    assert out.shape == mel.whole_log10(wav).shape == ((n // 160 if n > 200 else 0), 128)
