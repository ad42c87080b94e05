"""vq02 front-end: Kaldi-compatible 80-bin fbank, LFR 7/6 and CMVN from am.mvn, whole-utterance and streaming.

The fbank follows Kaldi's compute-fbank-feats (as torchaudio.compliance.kaldi.fbank computes it with FunASR's
arguments): snip_edges, 25 ms / 10 ms frames of waveform * 2^15, no dither, per-frame DC removal, pre-emphasis
0.97 (first sample against itself), povey-free hamming window, zero-pad to 512, power spectrum, triangular mel
banks on the 1127 ln(1 + f/700) scale from 20 Hz to Nyquist, log(max(x, float32 eps)).

LFR (FunASR apply_lfr): pad the left with (m-1)//2 copies of frame 0, then frame i stacks padded[6i : 6i+7];
ceil(T/6) frames, the last ones padded by repeating the final frame. Streaming emits frame i as soon as its 7
inputs exist and pads only at finish(), so streamed == whole-utterance exactly.

All spectral maths runs in float64 so that a frame's value does not depend on how many frames share its matmul.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .config import FbankConfig, TokenizerConfigError

_EPS32 = float(np.finfo(np.float32).eps)


def _kaldi_mel(f: np.ndarray | np.float64) -> np.ndarray:
    return 1127.0 * np.log1p(f / 700.0)


def kaldi_mel_banks(n_mels: int, n_fft: int, fs: int, low: float = 20.0, high: float = 0.0) -> np.ndarray:
    """Kaldi MelBanks weights [n_mels, n_fft // 2 + 1] (the Nyquist column is zero, as in Kaldi)."""
    high = fs / 2 + high if high <= 0 else high
    mel_lo, mel_hi = _kaldi_mel(np.float64(low)), _kaldi_mel(np.float64(high))
    delta = (mel_hi - mel_lo) / (n_mels + 1)
    bins = _kaldi_mel(np.arange(n_fft // 2, dtype=np.float64) * (fs / n_fft))  # [n_fft/2]
    left = mel_lo + delta * np.arange(n_mels, dtype=np.float64)[:, None]
    center, right = left + delta, left + 2 * delta
    up = (bins[None, :] - left) / (center - left)
    down = (right - bins[None, :]) / (right - center)
    w = np.maximum(0.0, np.minimum(up, down))  # [n_mels, n_fft/2]
    return np.concatenate([w, np.zeros((n_mels, 1))], axis=1)


class KaldiFbank:
    """Stateless frame -> log-mel computation shared by the whole-utterance and streaming paths."""

    def __init__(self, cfg: FbankConfig) -> None:
        self.cfg = cfg
        self.win = cfg.frame_samples
        self.hop = cfg.shift_samples
        self.n_fft = 1 << (self.win - 1).bit_length()
        # Kaldi's "hamming" is 0.54 - 0.46 cos(2 pi n / (N - 1)) (symmetric).
        n = np.arange(self.win, dtype=np.float64)
        self.window = 0.54 - 0.46 * np.cos(2 * math.pi * n / (self.win - 1))
        self.banks = torch.from_numpy(kaldi_mel_banks(cfg.n_mels, self.n_fft, cfg.fs))  # [n_mels, n_fft/2+1] f64

    def num_frames(self, n_samples: int) -> int:
        return 0 if n_samples < self.win else 1 + (n_samples - self.win) // self.hop

    def frames(self, wav: np.ndarray) -> np.ndarray:
        """wav: [N] float in [-1, 1] -> [num_frames(N), n_mels] float32 log-mel."""
        t = self.num_frames(len(wav))
        if t == 0:
            return np.zeros((0, self.cfg.n_mels), np.float32)
        x = np.asarray(wav, np.float64) * 32768.0
        idx = np.arange(t)[:, None] * self.hop + np.arange(self.win)[None, :]
        fr = x[idx]  # [T, win]
        fr = fr - fr.mean(axis=1, keepdims=True)
        prev = np.concatenate([fr[:, :1], fr[:, :-1]], axis=1)
        fr = (fr - 0.97 * prev) * self.window
        spec = torch.fft.rfft(torch.from_numpy(fr), n=self.n_fft)  # [T, n_fft/2+1] c128
        power = spec.real.square() + spec.imag.square()
        mel = power @ self.banks.T  # [T, n_mels]
        return torch.log(mel.clamp_min(_EPS32)).to(torch.float32).numpy()


def load_am_mvn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parses FunASR's am.mvn (Kaldi nnet1 text): <AddShift> holds -mean, <Rescale> holds 1/std.

    Each component header is followed by a line `<LearnRateCoef> 0 [ v1 v2 ... ]`.
    Returns (shift [D], scale [D]) float32; features are normalised as (x + shift) * scale.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TokenizerConfigError(f"cannot read {path}: {exc}") from exc
    found: dict[str, np.ndarray] = {}
    for i, line in enumerate(lines[:-1]):
        head = line.split()
        if head and head[0] in ("<AddShift>", "<Rescale>"):
            body = lines[i + 1].split()
            if body and body[0] == "<LearnRateCoef>" and body[2] == "[" and body[-1] == "]":
                found[head[0]] = np.array(body[3:-1], dtype=np.float32)
    if set(found) != {"<AddShift>", "<Rescale>"} or found["<AddShift>"].shape != found["<Rescale>"].shape:
        raise TokenizerConfigError(f"{path}: need <AddShift> and <Rescale> vectors of the same length")
    return found["<AddShift>"], found["<Rescale>"]


def lfr_whole(fb: np.ndarray, m: int, n: int) -> np.ndarray:
    """Whole-utterance LFR: fb [T, D] -> [ceil(T / n), m * D] (FunASR WavFrontend.apply_lfr)."""
    t = fb.shape[0]
    if t == 0:
        return np.zeros((0, fb.shape[1] * m), np.float32)
    padded = np.concatenate([np.repeat(fb[:1], (m - 1) // 2, axis=0), fb])
    out = []
    for i in range(math.ceil(t / n)):
        rows = padded[i * n : i * n + m]
        if rows.shape[0] < m:
            rows = np.concatenate([rows, np.repeat(padded[-1:], m - rows.shape[0], axis=0)])
        out.append(rows.reshape(-1))
    return np.stack(out).astype(np.float32)


class Vq02Frontend:
    """Whole-utterance and per-session streaming fbank -> LFR -> CMVN (560-d every 60 ms)."""

    def __init__(self, cfg: FbankConfig, shift: np.ndarray, scale: np.ndarray) -> None:
        if shift.shape != (cfg.feat_dim,):
            raise TokenizerConfigError(f"am.mvn has dim {shift.shape[0]}, expected {cfg.feat_dim}")
        self.cfg = cfg
        self.fbank = KaldiFbank(cfg)
        self.shift, self.scale = shift, scale

    def cmvn(self, lfr: np.ndarray) -> np.ndarray:
        return ((lfr + self.shift) * self.scale).astype(np.float32)

    def whole(self, wav16k: np.ndarray) -> np.ndarray:
        """[N] -> [ceil(T_fbank / 6), 560] float32."""
        return self.cmvn(lfr_whole(self.fbank.frames(wav16k), self.cfg.lfr_m, self.cfg.lfr_n))

    def new_state(self) -> "Vq02FrontendState":
        return Vq02FrontendState(self)


class Vq02FrontendState:
    """Per-session streaming state: leftover samples, fbank frames not yet fully consumed by LFR."""

    def __init__(self, fe: Vq02Frontend) -> None:
        self.fe = fe
        self.samples = np.zeros(0, np.float64)  # not yet framed
        self.fb = np.zeros((0, fe.cfg.n_mels), np.float32)  # padded fbank rows from LFR frame `self.lfr_done`
        self.n_fbank = 0
        self.lfr_done = 0

    def feed(self, wav16k: np.ndarray) -> np.ndarray:
        """Adds samples; returns the CMVN'd LFR frames [k, 560] whose inputs are now complete."""
        fe = self.fe.fbank
        self.samples = np.concatenate([self.samples, np.asarray(wav16k, np.float64)])
        t = fe.num_frames(len(self.samples))
        if t:
            rows = fe.frames(self.samples)
            self.samples = self.samples[t * fe.hop :]
            if self.n_fbank == 0:  # left context: (m-1)//2 copies of the first frame
                rows = np.concatenate([np.repeat(rows[:1], (self.fe.cfg.lfr_m - 1) // 2, axis=0), rows])
            self.fb = np.concatenate([self.fb, rows])
            self.n_fbank += t
        return self._emit(final=False)

    def finish(self) -> np.ndarray:
        """Emits the remaining LFR frames (right-padded by repeating the last fbank frame)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> np.ndarray:
        m, n = self.fe.cfg.lfr_m, self.fe.cfg.lfr_n
        total = math.ceil(self.n_fbank / n) if final else None
        out = []
        # Invariant: self.fb starts at padded fbank row lfr_done * n (rows leave n at a time).
        while total is None or self.lfr_done < total:
            rows = self.fb[:m]
            if rows.shape[0] < m:
                if not final or rows.shape[0] == 0:
                    break
                rows = np.concatenate([rows, np.repeat(rows[-1:], m - rows.shape[0], axis=0)])
            out.append(rows.reshape(-1))
            self.lfr_done += 1
            self.fb = self.fb[n:]
        if not out:
            return np.zeros((0, self.fe.cfg.feat_dim), np.float32)
        return self.fe.cmvn(np.stack(out))
