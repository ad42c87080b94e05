"""Speaker prompt features for the flow: the 22050 Hz prompt mel and the CAM++ x-vector.

As Step-Audio's cosyvoice/cli/frontend.py, without torchaudio/librosa:
  prompt mel  = matcha mel_spectrogram(wav22k): reflect-pad (n_fft - hop)/2, |STFT| (hann 1024, hop 256, center False,
                sqrt(re^2 + im^2 + 1e-9)), librosa Slaney mel bank (80 bins, fmax 8000), log(clamp(., 1e-5))
                -> [1, frames, 80]
  x-vector    = campplus.onnx(kaldi fbank(wav16k, 80 bins, dither 0) - its time mean) -> [1, 192]
Kaldi fbank defaults (torchaudio.compliance.kaldi): 25 ms / 10 ms frames, snip_edges, DC removal, pre-emphasis 0.97,
povey window, 512-point power spectrum, HTK-mel triangles from 20 Hz to Nyquist, log with float eps floor.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model_files.native import native_name
from speech_decoder.cosyvoice_config import MelConfig


def _slaney_hz_to_mel(f: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = math.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep,
                    f / f_sp)


def _slaney_mel_to_hz(m: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def slaney_mel_bank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax) with htk=False, norm='slaney': [n_mels, n_fft//2+1]."""
    fmax = sr / 2.0 if fmax is None else fmax
    fft_f = np.linspace(0, sr / 2.0, n_fft // 2 + 1)
    mel_f = _slaney_mel_to_hz(np.linspace(_slaney_hz_to_mel(np.array(fmin)), _slaney_hz_to_mel(np.array(fmax)),
                                          n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return (weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]).astype(np.float32)


def prompt_mel(wav22k: torch.Tensor, cfg: MelConfig) -> torch.Tensor:
    """[T] float waveform at cfg.sampling_rate -> log-mel [1, frames, num_mels] (frames = T // hop)."""
    pad = (cfg.n_fft - cfg.hop_size) // 2
    y = F.pad(wav22k.float()[None, None], (pad, pad), mode="reflect")[0]
    spec = torch.stft(y, cfg.n_fft, cfg.hop_size, cfg.win_size, torch.hann_window(cfg.win_size), center=False,
                      return_complex=True)
    mag = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    bank = torch.from_numpy(slaney_mel_bank(cfg.sampling_rate, cfg.n_fft, cfg.num_mels, cfg.fmin, cfg.fmax))
    return torch.log(torch.clamp(bank @ mag[0], min=1e-5)).T[None]


def _kaldi_mel_bank(n_bins: int, n_fft: int, sr: int, low: float = 20.0) -> torch.Tensor:
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    lo, hi = mel(low), mel(sr / 2.0)
    delta = (hi - lo) / (n_bins + 1)
    fft_mel = mel(np.arange(n_fft // 2) * sr / n_fft)[None, :]
    left = lo + np.arange(n_bins)[:, None] * delta
    center, right = left + delta, left + 2 * delta
    bank = np.maximum(0.0, np.minimum((fft_mel - left) / (center - left), (right - fft_mel) / (right - center)))
    return F.pad(torch.from_numpy(bank.astype(np.float32)), (0, 1))  # zero weight on the Nyquist bin


def kaldi_fbank(wav16k: torch.Tensor, n_bins: int = 80, sr: int = 16000) -> torch.Tensor:
    """Kaldi log-mel fbank, dither 0: [T] float in [-1, 1] -> [frames, n_bins], frames = 1 + (T - 400) // 160."""
    win, shift, n_fft = int(sr * 0.025), int(sr * 0.010), 512
    x = wav16k.float()
    if x.numel() < win:
        return torch.zeros(0, n_bins)
    frames = x.unfold(0, win, shift)  # [N, 400]
    frames = frames - frames.mean(dim=1, keepdim=True)
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - 0.97 * prev
    frames = frames * torch.hann_window(win, periodic=False).pow(0.85)
    power = torch.fft.rfft(F.pad(frames, (0, n_fft - win))).abs().pow(2)  # [N, 257]
    energies = power @ _kaldi_mel_bank(n_bins, n_fft, sr).T
    return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()


class CampPlus:
    """campplus.onnx through onnxruntime on CPU (as upstream): mean-normalised fbank -> 192-d x-vector."""

    def __init__(self, onnx_path: str | Path, threads: int = 1) -> None:
        import onnxruntime  # imported here: loading a model is work, importing this module is not

        opts = onnxruntime.SessionOptions()
        opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        with native_name(onnx_path) as name:
            self._session = onnxruntime.InferenceSession(name, sess_options=opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def embed(self, wav16k: torch.Tensor) -> torch.Tensor:
        """[T] float 16 kHz -> [1, 192] float32."""
        feat = kaldi_fbank(wav16k)
        feat = feat - feat.mean(dim=0, keepdim=True)
        out = self._session.run(None, {self._input: feat[None].numpy().astype(np.float32)})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32).reshape(1, -1))
