"""vq06 front-end: Whisper's 128-bin log-mel at 16 kHz (whisper.log_mel_spectrogram(x, n_mels=128)).

STFT n_fft 400, hop 160, periodic Hann window, centred frames with reflect padding of 200 samples, the last
frame dropped (so len // 160 frames); power spectrum; librosa's Slaney mel filters (fmin 0, fmax 8000,
norm="slaney"), computed here because librosa is not a dependency. Normalisation:
    log10(max(mel, 1e-10)) -> max(x, x.max() - 8) -> (x + 4) / 4
where the max runs over the whole input tensor. The raw log10 frames are causal except for the end
reflection; the max is not, so the windowed streaming path applies the clamp per window (normalize()).
"""

from __future__ import annotations

import math

import numpy as np
import torch

N_FFT = 400
HOP = 160
PAD = N_FFT // 2


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    logstep = math.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_mel = 1000.0 / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, 1000.0 * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def slaney_mel_filters(n_mels: int = 128, sr: int = 16000, n_fft: int = N_FFT) -> np.ndarray:
    """librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels) (htk=False, norm='slaney'): [n_mels, n_fft//2+1]."""
    fft_freqs = np.linspace(0.0, sr / 2, 1 + n_fft // 2)
    lo, hi = _hz_to_mel_slaney(np.array(0.0)), _hz_to_mel_slaney(np.array(sr / 2))
    mel_f = _mel_to_hz_slaney(np.linspace(lo, hi, n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


class WhisperMel:
    """Raw log10 mel frames (causal part) and the whisper normalisation."""

    def __init__(self, n_mels: int = 128) -> None:
        self.n_mels = n_mels
        self.filters = torch.from_numpy(slaney_mel_filters(n_mels))  # [n_mels, 201] f64
        n = torch.arange(N_FFT, dtype=torch.float64)
        self.window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / N_FFT)  # torch.hann_window(400), periodic

    @staticmethod
    def num_frames(n_samples: int) -> int:
        return n_samples // HOP

    def log10_frames(self, padded: np.ndarray, first: int, count: int) -> np.ndarray:
        """Frames [first, first + count) from the reflect-padded signal -> [count, n_mels] float64 log10 mel."""
        if count <= 0:
            return np.zeros((0, self.n_mels))
        x = torch.from_numpy(np.asarray(padded, np.float64))
        idx = (torch.arange(count)[:, None] + first) * HOP + torch.arange(N_FFT)[None, :]
        spec = torch.fft.rfft(x[idx] * self.window, n=N_FFT)  # [count, 201]
        power = spec.real.square() + spec.imag.square()
        mel = power @ self.filters.T
        return torch.log10(mel.clamp_min(1e-10)).numpy()

    def whole_log10(self, wav16k: np.ndarray) -> np.ndarray:
        """Whole utterance: [len // 160, n_mels] float64 raw log10 mel."""
        wav = np.asarray(wav16k, np.float64)
        if len(wav) <= PAD:
            # torch.stft's reflect pad needs len > 200; whisper would raise, we return no frames.
            return np.zeros((0, self.n_mels))
        padded = np.pad(wav, PAD, mode="reflect")
        return self.log10_frames(padded, 0, self.num_frames(len(wav)))

    @staticmethod
    def normalize(log10: np.ndarray) -> np.ndarray:
        """[T, n_mels] raw log10 -> [n_mels, T] float32 whisper features (clamp at the block max - 8)."""
        if log10.shape[0] == 0:
            return np.zeros((log10.shape[1], 0), np.float32)
        y = np.maximum(log10, log10.max() - 8.0)
        return ((y + 4.0) / 4.0).T.astype(np.float32)

    def upstream(self, wav16k: np.ndarray) -> np.ndarray:
        """whisper.log_mel_spectrogram(wav, n_mels=128): [128, len // 160] float32."""
        return self.normalize(self.whole_log10(wav16k))


class WhisperMelStream:
    """Per-session incremental raw log10 mel: frame t is final once samples up to 160 t + 200 exist."""

    def __init__(self, mel: WhisperMel) -> None:
        self.mel = mel
        self.buf = np.zeros(0, np.float64)  # samples from absolute index self.buf_start
        self.buf_start = 0
        self.n_samples = 0
        self.done = 0  # frames emitted

    def feed(self, wav16k: np.ndarray) -> np.ndarray:
        """Returns the newly final frames [k, n_mels] float64 (no end reflection involved)."""
        self.buf = np.concatenate([self.buf, np.asarray(wav16k, np.float64)])
        self.n_samples += len(wav16k)
        # Frame t reads samples [160 t - 200, 160 t + 200); frames 0 and 1 reflect samples 1..200.
        ready = max(0, (self.n_samples - PAD) // HOP + 1) if self.n_samples > PAD else 0
        return self._frames_to(min(ready, self.mel.num_frames(self.n_samples)), final=False)

    def finish(self) -> np.ndarray:
        if self.n_samples <= PAD:
            return np.zeros((0, self.mel.n_mels))
        return self._frames_to(self.mel.num_frames(self.n_samples), final=True)

    def _frames_to(self, end: int, final: bool) -> np.ndarray:
        if end <= self.done:
            return np.zeros((0, self.mel.n_mels))
        buf = self.buf
        left = 0
        if self.buf_start == 0:  # prepend the left reflection: padded[k] = x[200 - k]
            buf = np.concatenate([self.buf[1 : PAD + 1][::-1], self.buf])
            left = PAD
        if final:  # append the right reflection: padded[200 + N + k] = x[N - 2 - k]
            buf = np.concatenate([buf, self.buf[-PAD - 1 : -1][::-1]])
        # Local padded index of frame t starts at 160 t - 200 - buf_start + left.
        first = self.done
        off = first * HOP - PAD - self.buf_start + left
        out = self.mel.log10_frames(buf[off:], 0, end - first)
        self.done = end
        keep_from = max(0, self.done * HOP - PAD)  # the next frame's first real sample
        if keep_from > self.buf_start:
            self.buf = self.buf[keep_from - self.buf_start :]
            self.buf_start = keep_from
        return out
