"""CUDA graphs of flow windows: one captured MaskedDiffWithXvec.inference per window shape.

A flow window is about 18,500 small torch ops at CosyVoice-300M dims (counted on the CPU for a first window: 10 Euler
steps of a CFG-doubled U-Net with 16 ResNet and 64 transformer blocks, plus the conformer). Launched one by one from
Python each costs host time whatever its size, which is why a first window took 418 ms on an H200 (bench/RESULTS.md)
for work the GPU does in a fraction of that. Replaying a captured graph launches all of them at once.

A graph is fixed to its shapes. Rows are bucketed to powers of two (padded rows repeat row 0 and are dropped: rows
never interact). The time axis cannot be padded, because the flow normalises over the whole sequence, so each
window length is its own graph. StreamingDecoder's windows come in few lengths (the first window, then hops that
double up to a maximum), so a small set covers a conversation. A shape is captured the second time it is seen, not
the first, and at most `max_graphs` are kept (LRU). Capturing stalls the GPU for every session, so once
`window_tokens` is set (streaming_decoder.warm_up sets it to the steady window lengths) other lengths, such as the
arbitrary last window of an utterance, always run eagerly. A capture that fails turns graphs off for good: the
flow then runs eagerly, as it would without a GPU.

All graphs share one memory pool; a graph's output is valid only until the next replay of any of them, so the
output is copied out under the lock that also serialises replays.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from kernels.launch import pdl_off_after_failed_capture
from speech_decoder.flow.flow import MaskedDiffWithXvec

logger = logging.getLogger(__name__)

# (rows, target tokens, prompt tokens, prompt frames, target frames)
ShapeKey = tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]  # token, prompt_token, prompt_feat, embedding, noise
    output: torch.Tensor


def row_bucket(rows: int) -> int:
    """The power of two a batch of `rows` windows is padded to."""
    return 1 << (rows - 1).bit_length()


class FlowGraphs:
    """Drop-in for `flow.inference(token, prompt_token, prompt_feat, embedding, noise=, mel_len2=)` on CUDA."""

    def __init__(self, flow: MaskedDiffWithXvec, max_graphs: int = 64, max_rows: int = 64) -> None:
        device = flow.input_embedding.weight.device
        if device.type != "cuda":
            raise ValueError(f"FlowGraphs needs a flow on a CUDA device, not {device}")
        self.flow, self.device = flow, device
        self.max_graphs, self.max_rows = max_graphs, max_rows
        self.window_tokens: frozenset[int] | None = None  # target token counts worth a graph (None: all)
        self.captures = 0
        self.replays = 0
        self.failed = False
        self._graphs: OrderedDict[ShapeKey, _Captured] = OrderedDict()
        self._seen: OrderedDict[ShapeKey, None] = OrderedDict()  # shapes run once, eagerly
        self._pool: tuple[int, int] | None = None
        self._lock = threading.Lock()

    @torch.inference_mode()
    def __call__(self, token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat: torch.Tensor,
                 embedding: torch.Tensor, *, noise: torch.Tensor, mel_len2: int) -> torch.Tensor:
        """mel [B, 80, mel_len2] in the flow's dtype, as flow.inference returns it."""
        b = token.size(0)
        rows = row_bucket(b)
        key = (rows, token.size(1), prompt_token.size(1), prompt_feat.size(1), mel_len2)
        inputs = tuple(_pad_rows(x, rows) for x in (token, prompt_token, prompt_feat, embedding, noise))
        with self._lock:
            captured = self._graphs.get(key)
            if captured is None and self._worth_capturing(key):
                captured = self._capture_or_none(key, inputs, mel_len2)
            if captured is None:
                return self.flow.inference(token, prompt_token, prompt_feat, embedding, noise=noise,
                                           mel_len2=mel_len2)
            self._graphs.move_to_end(key)
            for static, x in zip(captured.inputs, inputs):
                static.copy_(x)
            captured.graph.replay()
            self.replays += 1
            return captured.output[:b].clone()

    def _worth_capturing(self, key: ShapeKey) -> bool:
        if self.failed or key[0] > self.max_rows:
            return False
        if self.window_tokens is not None and key[1] not in self.window_tokens:
            return False
        return self._seen_before(key)

    def _seen_before(self, key: ShapeKey) -> bool:
        if key in self._seen:
            del self._seen[key]
            return True
        self._seen[key] = None
        while len(self._seen) > 4 * self.max_graphs:
            self._seen.popitem(last=False)
        return False

    def _capture_or_none(self, key: ShapeKey, inputs: tuple[torch.Tensor, ...], mel_len2: int) -> _Captured | None:
        try:
            try:
                return self._capture(key, inputs, mel_len2)
            except Exception:
                if not pdl_off_after_failed_capture(self.device):
                    raise
                logger.exception("capturing a flow window failed with programmatic dependent launch; again without")
                return self._capture(key, inputs, mel_len2)
        except Exception:  # out of memory, an op that cannot be captured, ...
            logger.exception("capturing a flow window failed; flow windows run eagerly from now on")
            self.failed = True
            self._graphs.clear()
            return None

    def _capture(self, key: ShapeKey, inputs: tuple[torch.Tensor, ...], mel_len2: int) -> _Captured:
        static = tuple(x.clone() for x in inputs)

        def run() -> torch.Tensor:
            return self.flow.inference(*static[:4], noise=static[4], mel_len2=mel_len2)

        # One run outside the capture, on a side stream, as CUDA graphs require: cuBLAS / cuDNN set up lazily.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            run()
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: the LM engine keeps launching (and syncing) on its own thread while this one captures.
        with torch.cuda.device(self.device), torch.cuda.graph(graph, pool=self._pool,
                                                              capture_error_mode="thread_local"):
            output = run()
        captured = _Captured(graph, static, output)
        self._graphs[key] = captured
        self.captures += 1
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return captured


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    extra = rows - x.size(0)
    return x if extra == 0 else torch.cat([x, x[:1].expand(extra, *x.shape[1:])])
