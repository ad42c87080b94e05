"""Chunked HiFT vocoding whose output equals offline `HiFTGenerator.inference` sample for sample.

HiFT is convolutional with a finite receptive field, except for two things that we carry as state:
  * the NSF source: its phase is a running sum over all past samples (kept as float64 fractional cycles) and its
    f0 comes from a 5-layer k3 conv stack (exact only >= 5 frames from a window edge), so the source is built
    once per sample from exact f0 and cached (the "source cache");
  * left context: each window re-runs `context` already-emitted mel frames (the "mel cache").
A window ends at the newest mel frame; audio is emitted only up to `lookahead` frames before it, where neither the
window's right edge nor the provisional source of the last 5 frames can reach (the receptive field of the real
HiFT is about +-13 frames; tests check that outputs beyond `lookahead` do not change).
Timeline, in mel frames: |--- emitted ---|e .......... M-lookahead|.. lookahead ..|M   (window = [e-context, M))
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from speech_decoder.hift.generator import HiFTGenerator
from speech_decoder.hift.source import harmonic_phase_offsets
from speech_decoder.shape_graphs import ShapeGraphs

F0_EDGE = 5  # ConvRNNF0Predictor: five k=3 convs -> f0 is exact 5 frames away from a window edge


class VocoderGraphs(ShapeGraphs[tuple[int, ...], tuple[torch.Tensor, ...]]):
    """HiFTStream's CUDA graphs: one vocoder step (f0 predictor, NSF source, decoder) per window shape. A stream's
    windows come in few shapes (context + lookahead + the frames of one of the streaming decoder's hops), the same
    for every utterance; the last ones of an utterance are arbitrary and run eagerly (a final step always does;
    once `window_lengths` is set, by streaming_decoder.warm_up, so does every length outside it: capturing while
    serving would stall every session's vocoder). A stream's seed, phase state and sample position are inputs, so
    one graph serves every session."""

    def __init__(self, device: torch.device, max_graphs: int = 64) -> None:
        super().__init__(device, "HiFT window", max_graphs)
        self.window_lengths: frozenset[int] | None = None  # mel frames worth a graph (None: all)

    def run(self, shape: tuple[int, ...], fn: Callable[..., tuple[torch.Tensor, ...]],
            inputs: tuple[torch.Tensor, ...], final: bool) -> tuple[torch.Tensor, ...]:
        """fn(*inputs) for a window of shape[0] mel frames, replayed where it has a graph."""
        capture = not final and (self.window_lengths is None or shape[0] in self.window_lengths)
        return self(shape, fn, inputs, lambda: fn(*inputs), capture)


class HiFTStream:
    """Per-session vocoder state: push final mel frames, get the audio that can no longer change."""

    def __init__(self, hift: HiFTGenerator, seed: int = 0, context: int = 16, lookahead: int = 16,
                 graphs: VocoderGraphs | None = None) -> None:
        """`graphs` (CUDA): the f0 predictor and the decoder replay CUDA graphs (VocoderGraphs)."""
        if context < F0_EDGE or lookahead < 2 * F0_EDGE:
            raise ValueError("context must be >= 5 and lookahead >= 10 mel frames")
        self.hift, self.seed, self.context, self.lookahead, self.graphs = hift, seed, context, lookahead, graphs
        self.spf = hift.cfg.samples_per_frame
        dev = next(hift.parameters()).device
        self._mel = torch.zeros(1, hift.cfg.in_channels, 0, device=dev)  # frames [mel_start, total)
        self._mel_start = 0
        self._source = torch.zeros(0, device=dev)  # exact source for frames [src_start, src_end)
        self._src_start = self._src_end = 0
        self._cycles = torch.zeros(hift.cfg.nb_harmonics + 1, dtype=torch.float64, device=dev)
        self._phase_offsets = harmonic_phase_offsets(seed, hift.cfg.nb_harmonics, dev)  # fixed per stream
        self._seed = torch.full((), seed, dtype=torch.int64, device=dev)  # a graph input, as the phases are
        self.emitted_frames = 0
        self.finished = False

    @property
    def total_frames(self) -> int:
        return self._mel_start + self._mel.size(2)

    def push_mel(self, mel: torch.Tensor) -> np.ndarray:
        """mel [80, n] (or [1, 80, n]) final frames -> newly final audio (float32, multiple of 256 samples)."""
        if self.finished:
            raise RuntimeError("HiFTStream.push_mel after finish()")
        m = mel if mel.dim() == 3 else mel[None]
        self._mel = torch.cat([self._mel, m.to(self._mel.device, torch.float32)], dim=2)
        return self._step(final=False)

    def finish(self) -> np.ndarray:
        """Vocode everything left (the utterance's right edge is real now, as offline)."""
        out = self._step(final=True)
        self.finished = True
        return out

    @torch.inference_mode()
    def _step(self, final: bool) -> np.ndarray:
        total = self.total_frames
        end = total if final else total - self.lookahead
        if end <= self.emitted_frames:
            return np.zeros(0, dtype=np.float32)
        w0 = max(0, self.emitted_frames - self.context)
        # The window's source: cached exact frames [w0, src_end), exact from exact f0 up to exact_end, then a
        # provisional tail, which only feeds outputs inside the lookahead (never emitted).
        exact_end = max(self._src_end, total if final else total - F0_EDGE)
        lo, n_exact, n_tail = self._src_end - w0, exact_end - self._src_end, total - exact_end
        if n_exact and w0 > 0 and lo < F0_EDGE:
            raise RuntimeError("HiFTStream: source cache fell behind the window")
        first = torch.full((), self._src_end * self.spf, dtype=torch.int64, device=self._mel.device)
        inputs = (self._mel[:, :, w0 - self._mel_start:], self._source[(w0 - self._src_start) * self.spf:],
                  self._cycles, first, self._seed, self._phase_offsets)
        step = self._vocoder_step(lo, n_exact, n_tail)
        audio, src, cycles = step(*inputs) if self.graphs is None else \
            self.graphs.run((total - w0, lo, n_exact, n_tail), step, inputs, final)
        if n_exact:
            self._source = torch.cat([self._source, src])
            self._src_end, self._cycles = exact_end, cycles
        out = audio[(self.emitted_frames - w0) * self.spf: (end - w0) * self.spf]
        self.emitted_frames = end
        self._trim()
        return out.cpu().numpy().astype(np.float32)

    def _vocoder_step(self, lo: int, n_exact: int, n_tail: int) -> Callable[..., tuple[torch.Tensor, ...]]:
        """One window's vocoding for a window shape: (mel [1, 80, L], cached source [lo * spf], cycles, first
        sample of the new source, seed, phase offsets) -> (audio [L * spf], new exact source [n_exact * spf],
        cycles after it). Only tensors vary between windows of one shape: a CUDA graph can replay it."""
        hift, spf = self.hift, self.spf

        def step(mel: torch.Tensor, cached: torch.Tensor, cycles: torch.Tensor, first: torch.Tensor,
                 seed: torch.Tensor, phase: torch.Tensor) -> tuple[torch.Tensor, ...]:
            f0 = hift.predict_f0(mel)[0]  # [L]
            src = cached[:0]
            if n_exact:
                src, cycles = hift.make_source(f0[lo: lo + n_exact], cycles, first, seed, phase)
            parts = [cached, src]
            if n_tail:
                parts.append(hift.make_source(f0[lo + n_exact:], cycles, first + n_exact * spf, seed, phase)[0])
            return hift.decode(mel, torch.cat(parts)[None])[0], src, cycles

        return step

    def _trim(self) -> None:
        keep_from = max(0, self.emitted_frames - self.context)
        if keep_from > self._mel_start:
            self._mel = self._mel[:, :, keep_from - self._mel_start:]
            self._mel_start = keep_from
        if keep_from > self._src_start:
            self._source = self._source[(keep_from - self._src_start) * self.spf:]
            self._src_start = keep_from
