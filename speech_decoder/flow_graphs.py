"""CUDA graphs of flow windows: a MaskedDiffWithXvec.inference captured per window shape (shape_graphs).

A flow window is about 18,500 small torch ops at CosyVoice-300M dims (counted on the CPU for a first window: 10 Euler
steps of a CFG-doubled U-Net with 16 ResNet and 64 transformer blocks, plus the conformer). Launched one by one from
Python each costs host time whatever its size, which is why a first window took 418 ms on an H200 (bench/RESULTS.md)
for work the GPU does in a fraction of that. Replaying a captured graph launches all of them at once.

Rows are bucketed to powers of two (padded rows repeat row 0 and are dropped: rows never interact). The time axis
cannot be padded, because the flow normalises over the whole sequence, so each window length is its own graph.
StreamingDecoder's windows come in few lengths (the first window, then hops that double up to a maximum), so a small
set covers a conversation. Capturing stalls the GPU for every session, so once `window_tokens` is set
(streaming_decoder.warm_up sets it to the steady window lengths) other lengths, such as the arbitrary last window of
an utterance, always run eagerly.
"""
from __future__ import annotations

import torch

from speech_decoder.flow.flow import MaskedDiffWithXvec
from speech_decoder.shape_graphs import ShapeGraphs

# (rows, target tokens, prompt tokens, prompt frames, target frames)
ShapeKey = tuple[int, int, int, int, int]


def row_bucket(rows: int) -> int:
    """The power of two a batch of `rows` windows is padded to."""
    return 1 << (rows - 1).bit_length()


class FlowGraphs(ShapeGraphs[ShapeKey, torch.Tensor]):
    """Drop-in for `flow.inference(token, prompt_token, prompt_feat, embedding, noise=, mel_len2=)` on CUDA."""

    def __init__(self, flow: MaskedDiffWithXvec, max_graphs: int = 64, max_rows: int = 64) -> None:
        super().__init__(flow.input_embedding.weight.device, "flow window", max_graphs)
        self.flow, self.max_rows = flow, max_rows
        self.window_tokens: frozenset[int] | None = None  # target token counts worth a graph (None: all)

    @torch.inference_mode()
    def __call__(self, token: torch.Tensor, prompt_token: torch.Tensor,  # type: ignore[override]
                 prompt_feat: torch.Tensor, embedding: torch.Tensor, *, noise: torch.Tensor,
                 mel_len2: int) -> torch.Tensor:
        """mel [B, 80, mel_len2] in the flow's dtype, as flow.inference returns it."""
        b = token.size(0)
        rows = row_bucket(b)
        key: ShapeKey = (rows, token.size(1), prompt_token.size(1), prompt_feat.size(1), mel_len2)
        inputs = tuple(_pad_rows(x, rows) for x in (token, prompt_token, prompt_feat, embedding, noise))

        def window(token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat: torch.Tensor, embedding: torch.Tensor,
                   noise: torch.Tensor) -> torch.Tensor:
            return self.flow.inference(token, prompt_token, prompt_feat, embedding, noise=noise, mel_len2=mel_len2)

        capture = rows <= self.max_rows and (self.window_tokens is None or key[1] in self.window_tokens)
        out = super().__call__(key, window, inputs, lambda: window(token, prompt_token, prompt_feat, embedding, noise),
                               capture)
        return out[:b]


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    extra = rows - x.size(0)
    return x if extra == 0 else torch.cat([x, x[:1].expand(extra, *x.shape[1:])])
