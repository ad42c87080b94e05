"""Step-Audio dual-codebook tokenizer: whole-utterance and per-session streaming, interleaved into LM ids.

Rules (upstream stepfun-ai/Step-Audio tokenizer.py StepAudioTokenizer unless marked *ours*):
- Input: float32 audio at any rate, mono or multi-channel. *ours*: channels are averaged and any rate (8 kHz
  telephony included) is resampled with soxr; upstream asserts rate > 16 kHz and breaks on multi-channel.
- Peak normalisation x / max(peak, 0.01) * 0.999. Upstream uses the utterance's global peak (upstream=True);
  a stream cannot know it, so *ours* uses the running peak up to each sample, in streaming and offline alike.
- vq02: 16.67 Hz codes = nearest of 1024 centroids (cdist argmin) of the chunked SANM encoder output.
- vq06: 25 Hz codes. Upstream: full attention over 30 s pieces (upstream=True). *ours*, the windowed rule:
  the codes of hop h (tokens 6h..6h+5, mel frames 24h..24h+23) come from one encoder pass over mel frames
  [max(0, 24h - context), min(24h + 24 + lookahead, T)), log-mel clamp at that window's max; lookahead 240 ms.
- Interleave 2 vq02 + 3 vq06 per 120 ms group: vq02 c -> 65536 + c, vq06 c -> 66560 + c;
  groups = min(len02 // 2, len06 // 3).

Streaming == offline: StreamingStepTokenizer's ids, concatenated over feed() calls and finish(), equal
tokenize_offline(wav) (upstream=False) exactly for 16 kHz input, whatever the feed sizes. Edge rule: ids for
the last, partial hop (the final LFR frames padded by repeating the last fbank frame, the final mel frames
using whisper's end reflection, the windows clipped at the end) only come out of finish().
Latency: hop h (audio [0.24h, 0.24h + 0.24) s) is emitted once 0.24 (h + 2) s + 2.5 ms of audio have arrived.
"""

from __future__ import annotations

import enum
import math
from pathlib import Path

import numpy as np
import soxr
import torch

from model_files.weights import load_torch_state, unreadable_message

from .config import (
    AUDIO_ID_BASE, KMEANS_FILE, PARAFORMER_DIR, REQUIRED_FILES, S3_ONNX_FILE, VQ02_CODES, FbankConfig,
    StepTokenizerError, StreamConfig, TokenizerConfigError, read_paraformer_config,
)  # fmt: skip
from .fbank import KaldiFbank, Vq02Frontend, load_am_mvn
from .s3 import OnnxS3, S3TokenizerV1, token_count, torch_from_onnx
from .sanm import SanmEncoder
from .whisper_mel import WhisperMel, WhisperMelStream

SAMPLE_RATE = 16000
HOP_SAMPLES = 3840  # 240 ms = 4 LFR frames = 24 mel frames = 6 vq06 tokens = 2 groups
UPSTREAM_PIECE = 30 * SAMPLE_RATE
UPSTREAM_MIN_PIECE = 480  # upstream drops a last piece shorter than this (30 ms)


class Vq06Backend(enum.Enum):
    ONNX = "onnx"  # speech_tokenizer_v1.onnx through onnxruntime, as upstream
    TORCH = "torch"  # our torch module with the ONNX file's weights


def interleave(vq02: list[int], vq06: list[int]) -> list[int]:
    """2 vq02 + 3 vq06 codes per group -> LM ids; incomplete trailing groups are dropped."""
    out: list[int] = []
    for g in range(min(len(vq02) // 2, len(vq06) // 3)):
        out += [AUDIO_ID_BASE + c for c in vq02[2 * g : 2 * g + 2]]
        out += [AUDIO_ID_BASE + VQ02_CODES + c for c in vq06[3 * g : 3 * g + 3]]
    return out


def upstream_id_count(n_samples16k: int, fbank: FbankConfig) -> int:
    """How many LM ids tokenize_offline(upstream=True) gives for that many prepared 16 kHz samples, from lengths
    alone: one vq02 code per LFR frame, token_count(mel frames) vq06 codes per 30 s piece, 5 ids per whole group."""
    n02 = math.ceil(KaldiFbank(fbank).num_frames(n_samples16k) / fbank.lfr_n)
    n06 = sum(token_count(WhisperMel.num_frames(p.stop - p.start)) for p in _upstream_pieces(n_samples16k))
    return 5 * min(n02 // 2, n06 // 3)


def offline_id_count(folder: str | Path, audio: np.ndarray, sample_rate: int, *, trim: bool = False) -> int:
    """len(tokenize_offline(audio, sample_rate, upstream=True, trim=trim)) for the tokenizer of `folder`, without
    loading its models (the real ones take a while, and the tools check a wav before anything loads)."""
    fbank, _ = read_paraformer_config(Path(folder) / PARAFORMER_DIR / "config.yaml")
    return upstream_id_count(len(StepAudioTokenizer.prepare(audio, sample_rate, upstream=True, trim=trim)), fbank)


def _upstream_pieces(n_samples16k: int) -> list[slice]:
    """Upstream's vq06 pieces of a whole utterance: 30 s each, the last one dropped when too short."""
    starts = range(0, n_samples16k, UPSTREAM_PIECE)
    pieces = [slice(i, min(i + UPSTREAM_PIECE, n_samples16k)) for i in starts]
    return [p for p in pieces if p.stop - p.start >= UPSTREAM_MIN_PIECE]


def ids_to_text(ids: list[int]) -> str:
    """LM ids -> the <audio_N> text form (N = id - 65536) that upstream sends to vLLM."""
    return "".join(f"<audio_{i - AUDIO_ID_BASE}>" for i in ids)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """[N] or 2-D (the shorter axis is channels: [N, C] as soundfile returns, or [C, N]) -> [N] float32."""
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        return a
    if a.ndim != 2:
        raise StepTokenizerError(f"audio must be 1-D or 2-D, got shape {a.shape}")
    return a.mean(axis=1 if a.shape[0] >= a.shape[1] else 0).astype(np.float32)


def trim_silence(x: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The voiced span of a prompt wav, as upstream's wav2token trims speaker and clone prompts (enable_trim=True):
    voiced frames are those within 20 dB of the loudest (RMS of 512-sample frames every 128, centred, zero-padded,
    as librosa.effects.trim); the span, rounded up to 240-sample steps, keeps 0.05 s before it and 0.22 s after,
    zero-padded where the audio runs out."""
    frame, hop = 512, 128
    padded = np.pad(np.asarray(x, np.float64), frame // 2)
    starts = hop * np.arange(1 + len(x) // hop)
    rms = np.sqrt(np.mean(padded[starts[:, None] + np.arange(frame)[None, :]] ** 2, axis=1))
    db = 20 * np.log10(np.maximum(rms, 1e-5) / max(float(rms.max(initial=0.0)), 1e-5))
    voiced = np.flatnonzero(db > -20)
    start, end = (int(voiced[0]) * hop, min(len(x), (int(voiced[-1]) + 1) * hop)) if voiced.size else (0, 0)
    first = start - int(0.05 * rate)
    y = x[first:] if first > 0 else np.pad(x, (-first, 0))
    length = int(math.ceil((end - start) / 240) * 240 + 0.27 * rate)
    y = y[:length] if length < len(y) else np.pad(y, (0, length - len(y)))
    return y.astype(np.float32)


def running_peak_normalize(x: np.ndarray, peak: float) -> tuple[np.ndarray, float]:
    """Causal form of upstream energy_norm_fn: each sample scaled by 0.999 / max(peak so far, 0.01)."""
    if len(x) == 0:
        return x, peak
    cum = np.maximum.accumulate(np.maximum(np.abs(x), np.float32(peak)))
    return (x / np.maximum(cum, 0.01) * 0.999).astype(np.float32), float(cum[-1])


class StepAudioTokenizer:
    """Shared, read-only models. Create one per process; one StreamingStepTokenizer per session."""

    def __init__(
        self, *, frontend: Vq02Frontend, sanm: SanmEncoder, kmeans: torch.Tensor,
        s3: OnnxS3 | S3TokenizerV1, stream: StreamConfig,
    ) -> None:  # fmt: skip
        self.frontend, self.sanm, self.kmeans, self.s3, self.stream = frontend, sanm.eval(), kmeans, s3, stream
        self.mel = WhisperMel(128)

    @classmethod
    def load(
        cls, folder: str | Path, *, backend: Vq06Backend = Vq06Backend.ONNX, stream: StreamConfig | None = None
    ) -> StepAudioTokenizer:
        """Loads a Step-Audio-Tokenizer folder (the real layout, see config.py)."""
        root = Path(folder)
        para = root / PARAFORMER_DIR
        for name in REQUIRED_FILES:
            if not (root / name).is_file():
                raise TokenizerConfigError(f"missing {root / name}")
        stream = stream or StreamConfig()
        fb_cfg, sanm_cfg = read_paraformer_config(para / "config.yaml")
        frontend = Vq02Frontend(fb_cfg, *load_am_mvn(para / "am.mvn"))
        sanm = SanmEncoder(sanm_cfg)
        sanm.load_funasr(load_torch_state(para / "model.pt", TokenizerConfigError))
        try:
            kmeans = torch.from_numpy(np.load(root / KMEANS_FILE).astype(np.float32))
        except (ValueError, OSError, EOFError) as exc:  # numpy names no file, and for a non-array advises pickle
            raise TokenizerConfigError(unreadable_message(root / KMEANS_FILE, exc)) from exc
        if kmeans.shape != (VQ02_CODES, sanm_cfg.output_size):
            raise TokenizerConfigError(
                f"{KMEANS_FILE}: shape {tuple(kmeans.shape)}, want (1024, {sanm_cfg.output_size})")
        path = root / S3_ONNX_FILE
        s3 = OnnxS3(path, stream.intra_op_threads) if backend is Vq06Backend.ONNX else torch_from_onnx(path)
        return cls(frontend=frontend, sanm=sanm, kmeans=kmeans, s3=s3, stream=stream)

    def new_session(self, sample_rate: int = SAMPLE_RATE) -> StreamingStepTokenizer:
        return StreamingStepTokenizer(self, sample_rate)

    # --- shared pieces (streaming and offline call the same functions with the same shapes) ---

    def vq02_chunk(self, feats: np.ndarray, state) -> list[int]:  # type: ignore[no-untyped-def]
        """feats [L <= 4, 560] -> L codes; advances the SANM state."""
        out = self.sanm.step(torch.from_numpy(feats)[None], state, self.stream.chunk_size[1],
                             self.stream.encoder_chunk_look_back)  # fmt: skip
        with torch.inference_mode():
            return torch.cdist(out[0], self.kmeans).argmin(dim=1).tolist()

    def vq06_hop(self, raw: np.ndarray, raw_start: int, hop: int, n_frames: int) -> list[int]:
        """Codes of tokens [6 hop, 6 hop + 6) by the windowed rule. raw: log10 mel rows from frame raw_start."""
        s = max(0, 24 * hop - self.stream.vq06_context_frames)
        e = min(24 * hop + 24 + self.stream.vq06_lookahead_frames, n_frames)
        codes = self.s3.tokens(self.mel.normalize(raw[s - raw_start : e - raw_start]))
        lo = 6 * hop - s // 4
        return [int(c) for c in codes[lo : lo + 6]]

    # --- whole utterance ---

    @staticmethod
    def prepare(audio: np.ndarray, sample_rate: int, *, upstream: bool = False, trim: bool = False) -> np.ndarray:
        """Mono, 16 kHz, peak-normalised float32; trim (upstream only): then trim_silence, as upstream's wav2token
        does by default (speaker and clone prompts; its Chat path passes enable_trim=False)."""
        x = to_mono(audio)
        if sample_rate != SAMPLE_RATE:
            if upstream:
                x = soxr.resample(x, sample_rate, SAMPLE_RATE).astype(np.float32)
            else:
                x = soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32").resample_chunk(x, last=True)
        if upstream:
            x = (x / max(float(np.abs(x).max(initial=0.0)), 0.01) * 0.999).astype(np.float32)
            return trim_silence(x) if trim else x
        return running_peak_normalize(x, 0.0)[0]

    def codes_offline(self, wav16k: np.ndarray, *, upstream: bool = False) -> tuple[list[int], list[int]]:
        """Prepared 16 kHz audio -> (vq02 codes, vq06 codes)."""
        feats = self.frontend.whole(wav16k)
        state = self.sanm.new_state(self.stream.chunk_size[2])
        stride = self.stream.chunk_size[1]
        vq02: list[int] = []
        for i in range(0, feats.shape[0], stride):
            vq02 += self.vq02_chunk(feats[i : i + stride], state)
        vq06: list[int] = []
        if upstream:  # 30 s pieces with full attention
            for piece in _upstream_pieces(len(wav16k)):
                vq06 += [int(c) for c in self.s3.tokens(self.mel.upstream(wav16k[piece]))]
            return vq02, vq06
        raw = self.mel.whole_log10(wav16k)
        n06 = token_count(raw.shape[0])
        for hop in range(math.ceil(n06 / 6)):
            vq06 += self.vq06_hop(raw, 0, hop, raw.shape[0])
        return vq02, vq06  # the last hop's window ends at frame T, so it yields exactly n06 - 6 hop codes

    def tokenize_offline(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, *, upstream: bool = False,
                         trim: bool = False) -> list[int]:
        """Whole utterance -> LM ids. upstream=True: global peak and full-attention vq06 (upstream's tokens);
        trim=True with it: upstream's silence trim first (its wav2token default, used for speaker prompts)."""
        x = self.prepare(audio, sample_rate, upstream=upstream, trim=trim)
        return interleave(*self.codes_offline(x, upstream=upstream))


class StreamingStepTokenizer:
    """Per-session streaming state; synchronous. feed() returns the LM ids of newly completed 240 ms hops."""

    def __init__(self, tok: StepAudioTokenizer, sample_rate: int = SAMPLE_RATE) -> None:
        if sample_rate <= 0:
            raise StepTokenizerError(f"bad sample rate {sample_rate}")
        self.tok, self.sample_rate = tok, sample_rate
        self.reset()

    def reset(self) -> None:
        """Starts a new utterance (models are shared; only this session's state is dropped)."""
        tok = self.tok
        self._resampler = (
            None if self.sample_rate == SAMPLE_RATE
            else soxr.ResampleStream(self.sample_rate, SAMPLE_RATE, 1, dtype="float32")
        )  # fmt: skip
        self._peak = 0.0
        self._fe = tok.frontend.new_state()
        self._lfr = np.zeros((0, tok.frontend.cfg.feat_dim), np.float32)
        self._sanm = tok.sanm.new_state(tok.stream.chunk_size[2])
        self._mel = WhisperMelStream(tok.mel)
        self._raw = np.zeros((0, tok.mel.n_mels))  # log10 mel rows from frame self._raw_start
        self._raw_start = 0
        self._next_hop = 0
        self._vq02: list[int] = []
        self._vq06: list[int] = []
        self._groups = 0
        self.samples16k = 0
        self.finished = False

    def feed(self, audio: np.ndarray) -> list[int]:
        """audio: float32 at this session's rate, [N] or [N, C]. Returns new LM ids (a multiple of 10 per hop)."""
        if self.finished:
            raise StepTokenizerError("feed() after finish(); call reset() for a new utterance")
        x = to_mono(audio)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x, last=False)
        return self._advance(x, final=False)

    def finish(self) -> list[int]:
        """Flushes the partial last hop (the edge rule) and closes the utterance."""
        if self.finished:
            raise StepTokenizerError("finish() called twice; call reset() for a new utterance")
        x = np.zeros(0, np.float32)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x, last=True)
        ids = self._advance(x, final=True)
        self.finished = True
        return ids

    def _advance(self, x16k: np.ndarray, final: bool) -> list[int]:
        tok = self.tok
        x16k, self._peak = running_peak_normalize(np.asarray(x16k, np.float32), self._peak)
        self.samples16k += len(x16k)
        # vq02: 4 LFR frames (one 240 ms chunk) per SANM step, the remainder at finish.
        parts = [self._lfr, self._fe.feed(x16k)] + ([self._fe.finish()] if final else [])
        self._lfr = np.concatenate(parts)
        stride = tok.stream.chunk_size[1]
        while self._lfr.shape[0] >= stride or (final and self._lfr.shape[0] > 0):
            self._vq02 += tok.vq02_chunk(self._lfr[:stride], self._sanm)
            self._lfr = self._lfr[stride:]
        # vq06: windowed encoder passes, one per hop whose lookahead has arrived.
        new = [self._raw, self._mel.feed(x16k)] + ([self._mel.finish()] if final else [])
        self._raw = np.concatenate(new)
        n_frames = self._raw_start + self._raw.shape[0]
        look = tok.stream.vq06_lookahead_frames
        n06 = token_count(n_frames)
        while 24 * self._next_hop + 24 + look <= n_frames or (final and 6 * self._next_hop < n06):
            self._vq06 += tok.vq06_hop(self._raw, self._raw_start, self._next_hop, n_frames)
            self._next_hop += 1
            drop = max(0, 24 * self._next_hop - tok.stream.vq06_context_frames) - self._raw_start
            if drop > 0:  # frames before the next window's start are no longer needed
                self._raw, self._raw_start = self._raw[drop:], self._raw_start + drop
        return self._emit()

    def _emit(self) -> list[int]:
        # Codes before group self._groups were already emitted; keep only the tails.
        ready = min(len(self._vq02) // 2, len(self._vq06) // 3)
        ids = interleave(self._vq02[: 2 * ready], self._vq06[: 3 * ready])
        self._vq02, self._vq06 = self._vq02[2 * ready :], self._vq06[3 * ready :]
        self._groups += ready
        return ids
