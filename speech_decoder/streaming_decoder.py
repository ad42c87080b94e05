"""Per-session streaming token -> 22050 Hz audio for Step-Audio-TTS-3B's CosyVoice decoder.

Upstream Step-Audio decodes only whole utterances. We follow CosyVoice v1's streaming recipe, aligned to absolute
positions so that it reduces to the offline decode when one window covers everything:
  * Tokens arrive at 41.667/s (2 linguistic + 3 semantic per 120 ms); all hops and overlaps are multiples of 5
    tokens so every window starts on a 120 ms group boundary.
  * Window k runs the flow on tokens [a_k, a_k + hop_k + overlap) (with the speaker prompt). Its mel covers
    absolute frames [F(a_k), F(a_k + hop_k + overlap)) with F(n) = int(n / 41.667 * 22050 / 256), the same frame
    grid the offline decode uses, and its CFM noise is indexed by absolute frame (cosyvoice_noise.cfm_noise).
  * Frames [F(a_k + hop_k), ...) are the overlap tail; the next window's first frames cross-fade with it
    (Hamming-shaped weights normalised to sum to 1, so identical inputs pass through unchanged).
  * Final mel goes to HiFTStream (mel cache + source cache + phase state), which emits audio equal to offline HiFT
    on the same mel.
The first window is `first_chunk_tokens` (25) long, so audio starts once 25 tokens exist; hops then double up to
`max_hop_tokens`. finish() decodes the remainder. With fewer than `first_chunk_tokens` tokens in total, finish()
runs a single window over everything: the output then equals CosyVoiceModel.token2wav exactly.
The flow itself is non-causal (full attention, whole-sequence GroupNorm), so chunked mel differs from offline mel
inside every window, not only at seams; this is inherent to the released model (upstream streaming has it too).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from speech_decoder.cosyvoice_config import FlowConfig
from speech_decoder.cosyvoice_model import CosyVoiceModel, SpeakerPrompt
from speech_decoder.flow_batch import FlowJob, run_flow_jobs
from speech_decoder.hift.streaming import HiFTStream


class StreamingConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamingDecoderConfig:
    first_chunk_tokens: int = 25  # tokens in the first flow window (hop + overlap): ~0.6 s of speech
    overlap_tokens: int = 10  # right overlap per window = cross-fade length (~0.24 s, ~20 mel frames)
    max_hop_tokens: int = 100  # hops double after the first window, up to this
    vocoder_context: int = 16  # HiFT mel cache, frames
    vocoder_lookahead: int = 16  # HiFT frames held back until their right context is final

    def __post_init__(self) -> None:
        tokens = {"first_chunk_tokens": self.first_chunk_tokens, "overlap_tokens": self.overlap_tokens,
                  "max_hop_tokens": self.max_hop_tokens}
        for name, v in tokens.items():
            if v <= 0 or v % 5:
                raise StreamingConfigError(f"{name}={v} must be a positive multiple of 5 (one 2:3 token group)")
        if self.first_chunk_tokens <= self.overlap_tokens:
            raise StreamingConfigError("first_chunk_tokens must exceed overlap_tokens")


def crossfade_weights(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fade_in, fade_out), each [n], Hamming halves normalised so fade_in + fade_out == 1 at every frame."""
    w = torch.hamming_window(2 * n, periodic=False, dtype=torch.float64)
    rise, fall = w[:n], w[n:]
    fade_in = rise / (rise + fall)
    return fade_in.float(), (1.0 - fade_in).float()


class StreamingDecoder:
    """One utterance of one session: push(tokens) -> audio chunks, finish() -> the rest. Not thread-safe."""

    def __init__(self, model: CosyVoiceModel, prompt: SpeakerPrompt, config: StreamingDecoderConfig | None = None,
                 seed: int = 0, flow: Callable[[FlowJob], torch.Tensor] | None = None) -> None:
        """`flow` runs one window (a FlowBatcher's `run` batches it with other sessions'); default: alone."""
        self.model, self.prompt, self.seed = model, prompt, seed
        self._flow = flow or _run_alone
        self.config = config or StreamingDecoderConfig()
        self._tokens: list[int] = []
        self._start = 0  # a_k: first token not yet owned by an emitted window
        self._hop = self.config.first_chunk_tokens - self.config.overlap_tokens
        self._tail: torch.Tensor | None = None  # [80, X] overlap mel waiting for its cross-fade
        with model.on_stream():  # its state tensors are made and used on the speech stream
            self._vocoder = HiFTStream(model.hift, seed, self.config.vocoder_context, self.config.vocoder_lookahead,
                                       model.hift_graphs)
        self.finished = False

    @property
    def num_tokens(self) -> int:
        return len(self._tokens)

    def runs_window(self, n_new: int) -> bool:
        """Whether push()ing n_new more tokens runs a flow window (device work, audio out); otherwise the push only
        stores them, which a caller may do without handing it to a decoder thread."""
        return not self.finished and self.num_tokens + n_new >= self._start + self._hop + self.config.overlap_tokens

    def runs_first_window(self, n_new: int) -> bool:
        """Whether push()ing n_new more tokens runs the utterance's first flow window (the first audio waits on it)."""
        return self._start == 0 and self.runs_window(n_new)

    def push(self, tokens: Sequence[int]) -> np.ndarray:
        """Add flow tokens (LM ids - 65536); returns newly final float32 audio (possibly empty)."""
        if self.finished:
            raise RuntimeError("StreamingDecoder.push after finish()")
        vocab = self.model.cfg.flow.vocab_size
        for t in tokens:
            if not 0 <= int(t) < vocab:
                raise ValueError(f"flow token {t} outside [0, {vocab})")
        self._tokens.extend(int(t) for t in tokens)
        out = []
        ov = self.config.overlap_tokens
        with self.model.on_stream():
            while len(self._tokens) >= self._start + self._hop + ov:
                end = self._start + self._hop
                mel = self._window(self._start, end + ov)
                flow_cfg = self.model.cfg.flow
                out.append(self._emit_mel(mel, flow_cfg.mel_frames(end) - flow_cfg.mel_frames(self._start)))
                self._start = end
                self._hop = min(2 * self._hop, self.config.max_hop_tokens)  # stays a multiple of 5
        return _join(out)

    def finish(self) -> np.ndarray:
        """Decode the remaining tokens and flush the vocoder."""
        if self.finished:
            return np.zeros(0, dtype=np.float32)
        out = []
        with self.model.on_stream():
            if len(self._tokens) > self._start:
                mel = self._window(self._start, len(self._tokens))
                out.append(self._emit_mel(mel, mel.size(1)))
            out.append(self._vocoder.finish())
        self.finished = True
        return _join(out)

    def _window(self, a: int, b: int) -> torch.Tensor:
        """Flow over tokens [a, b) on the absolute frame grid -> mel [80, F(b) - F(a)] float32."""
        flow_cfg = self.model.cfg.flow
        fa, fb = flow_cfg.mel_frames(a), flow_cfg.mel_frames(b)
        tokens = torch.tensor(self._tokens[a:b], dtype=torch.int64)
        return self._flow(FlowJob(self.model, tokens, self.prompt, fb - fa, self.seed, fa))

    def _emit_mel(self, mel: torch.Tensor, n_final: int) -> np.ndarray:
        """Cross-fade the head of `mel` with the pending tail, send its first n_final frames to the vocoder."""
        if self._tail is not None:
            x = min(self._tail.size(1), mel.size(1))
            fade_in, fade_out = crossfade_weights(x)
            mel = mel.clone()
            mel[:, :x] = mel[:, :x] * fade_in.to(mel.device) + self._tail[:, :x] * fade_out.to(mel.device)
        self._tail = mel[:, n_final:] if n_final < mel.size(1) else None
        return self._vocoder.push_mel(mel[:, :n_final])


def steady_windows(flow_cfg: FlowConfig, config: StreamingDecoderConfig | None = None) -> list[tuple[int, int]]:
    """(tokens, mel frames) of every window push() runs, for utterances of any length (finish()'s last window has
    an arbitrary length and is not among them). Windows of one token count differ in mel frames by at most one,
    depending on where they start on the frame grid, so the max-hop windows come in (at most) two shapes."""
    cfg = config or StreamingDecoderConfig()
    ov, shapes = cfg.overlap_tokens, set()
    start, hop = 0, cfg.first_chunk_tokens - ov
    for _ in range(300):  # push()'s windows: the hops reach their maximum in a few, then 256+ starts meet both lengths
        shapes.add((hop + ov, flow_cfg.mel_frames(start + hop + ov) - flow_cfg.mel_frames(start)))
        start, hop = start + hop, min(2 * hop, cfg.max_hop_tokens)
    return sorted(shapes)


def vocoder_pushes(flow_cfg: FlowConfig, config: StreamingDecoderConfig | None = None) -> list[int]:
    """Mel frames push() hands the vocoder, window by window, until the hop is at its maximum; then each frame count
    a maximum hop can have (as steady_windows). Pushed in this order into a new HiFTStream they meet every length of
    window a stream's non-final vocoder steps run."""
    cfg = config or StreamingDecoderConfig()
    pushes, steady = [], set()
    start, hop = 0, cfg.first_chunk_tokens - cfg.overlap_tokens
    for _ in range(300):
        frames = flow_cfg.mel_frames(start + hop) - flow_cfg.mel_frames(start)
        if hop < cfg.max_hop_tokens:
            pushes.append(frames)
        else:
            steady.add(frames)
        start, hop = start + hop, min(2 * hop, cfg.max_hop_tokens)
    return pushes + sorted(steady)


def warm_up(model: CosyVoiceModel, prompt: SpeakerPrompt, config: StreamingDecoderConfig | None = None) -> int:
    """Runs every steady window shape (steady_windows) of this voice twice, so that a model with CUDA graphs has
    captured them (a shape is captured the second time it is seen) before the first reply needs its first chunk,
    and restricts graphs to those window lengths: finish()'s windows have arbitrary lengths, and capturing them while
    serving would stall every session's flow for the capture. The vocoder's window lengths likewise (two streams of
    vocoder_pushes). Returns the flow windows run; 0 for a model without graphs."""
    graphs = model.flow_graphs
    if graphs is None:
        return 0
    cfg = config or StreamingDecoderConfig()
    shapes = steady_windows(model.cfg.flow, cfg)
    graphs.window_tokens = frozenset(n for n, _ in shapes)
    for n, frames in shapes:
        job = FlowJob(model, torch.zeros(n, dtype=torch.int64), prompt, frames, 0, 0)
        for _ in range(2):
            run_flow_jobs([job])
    vocoder = model.hift_graphs
    if vocoder is not None:
        with model.on_stream():
            for _ in range(2):
                stream = HiFTStream(model.hift, 0, cfg.vocoder_context, cfg.vocoder_lookahead, vocoder)
                for frames in vocoder_pushes(model.cfg.flow, cfg):
                    stream.push_mel(torch.full((model.cfg.hift.in_channels, frames), -5.0, device=model.device))
        vocoder.window_lengths = frozenset(shape[0] for shape in vocoder.keys())
    return 2 * len(shapes)


def _run_alone(job: FlowJob) -> torch.Tensor:
    return run_flow_jobs([job])[0]


def _join(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if p.size]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)
