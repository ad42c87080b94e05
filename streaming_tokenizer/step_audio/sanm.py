"""vq02 encoder: FunASR's streaming Paraformer SANM encoder (SANMEncoderChunkOpt.forward_chunk) with per-session state.

Parameter names equal FunASR's state-dict keys under `encoder.`:
    encoders0.0.*  (560 -> 512, no attention residual)   encoders.{0..N-2}.*   after_norm.{weight,bias}
    per layer: self_attn.linear_q_k_v, self_attn.fsmn_block (depthwise Conv1d, no bias), self_attn.linear_out,
               feed_forward.w_1, feed_forward.w_2 (ReLU), norm1, norm2 (LayerNorm eps 1e-12, pre-norm)

One streaming step (chunk_size [0, S, P], look-back B), exactly as upstream's infer_encoder drives it:
    x = feats * sqrt(d_model) + sinusoid(positions counted from the utterance start, from 1)   [1, L, 560]
    window = cat(overlap, x); overlap = window[-P:]          (overlap starts as P zero frames)
    per layer: q, k, v of the window; keys/values = cat(cache, window); FSMN memory on the window alone
               (zero-padded, so it never sees the cache); cache += window[:-P], trimmed to the last B*S frames
    output = after_norm(window)[-L:]
So each output frame sees at most S-1 future frames. Upstream's "offline" path is this same loop over the
whole utterance, therefore streaming and whole-utterance encodings are identical by construction.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .config import SanmConfig, TokenizerConfigError


def sinusoid_positions(start: int, length: int, depth: int) -> torch.Tensor:
    """FunASR StreamSinusoidalPositionEncoder: positions start+1 .. start+length -> [1, length, depth] f32."""
    pos = torch.arange(start + 1, start + length + 1, dtype=torch.float32)
    inc = torch.log(torch.tensor([10000.0])) / (depth / 2 - 1)
    inv = torch.exp(torch.arange(depth // 2, dtype=torch.float32) * -inc)
    t = pos[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)[None]


class SanmAttention(nn.Module):
    def __init__(self, n_head: int, in_feat: int, n_feat: int, kernel_size: int, shift: int) -> None:
        super().__init__()
        self.h, self.d_k = n_head, n_feat // n_head
        self.linear_q_k_v = nn.Linear(in_feat, 3 * n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.fsmn_block = nn.Conv1d(n_feat, n_feat, kernel_size, groups=n_feat, bias=False)
        left = (kernel_size - 1) // 2 + shift
        self.pad = (left, kernel_size - 1 - left)

    def forward(
        self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None, keep: int, limit: int
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        # x: [1, W, in_feat]; cache k/v: [1, h, <=limit, d_k]
        b, w, _ = x.shape
        q, k, v = self.linear_q_k_v(x).split(self.h * self.d_k, dim=-1)
        qh, kh, vh = (t.reshape(b, w, self.h, self.d_k).transpose(1, 2) for t in (q, k, v))
        new = (kh[:, :, :keep], vh[:, :, :keep])
        if cache is not None:
            kh, vh = torch.cat([cache[0], kh], dim=2), torch.cat([cache[1], vh], dim=2)
            new = (torch.cat([cache[0], new[0]], dim=2)[:, :, -limit:],
                   torch.cat([cache[1], new[1]], dim=2)[:, :, -limit:])
        # FSMN memory: depthwise conv over time, written as unfold + weighted sum (oneDNN's depthwise conv1d is
        # slow for these tiny per-chunk windows). fsmn_block.weight: [d, 1, kernel].
        taps = nn.functional.pad(v.transpose(1, 2), self.pad).unfold(2, self.fsmn_block.kernel_size[0], 1)
        mem = (taps * self.fsmn_block.weight[None, :, :, :]).sum(-1).transpose(1, 2) + v  # [1, W, d]
        scores = (qh * self.d_k**-0.5) @ kh.transpose(-2, -1)  # [1, h, W, cache + W]
        att = (torch.softmax(scores, dim=-1) @ vh).transpose(1, 2).reshape(b, w, self.h * self.d_k)
        return self.linear_out(att) + mem, new


class FeedForward(nn.Module):
    def __init__(self, d: int, units: int) -> None:
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(d, units), nn.Linear(units, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(torch.relu(self.w_1(x)))


class SanmLayer(nn.Module):
    def __init__(self, cfg: SanmConfig, in_size: int) -> None:
        super().__init__()
        d = cfg.output_size
        self.residual = in_size == d
        self.self_attn = SanmAttention(cfg.attention_heads, in_size, d, cfg.kernel_size, cfg.sanm_shift)
        self.feed_forward = FeedForward(d, cfg.linear_units)
        self.norm1 = nn.LayerNorm(in_size, eps=1e-12)
        self.norm2 = nn.LayerNorm(d, eps=1e-12)

    def forward(self, x, cache, keep: int, limit: int):  # type: ignore[no-untyped-def]
        att, cache = self.self_attn(self.norm1(x), cache, keep, limit)
        x = x + att if self.residual else att
        return x + self.feed_forward(self.norm2(x)), cache


@dataclasses.dataclass(slots=True)
class SanmState:
    """Per-session encoder state (upstream cache["encoder"]: start_idx, feats, opt)."""

    position: int
    overlap: torch.Tensor  # [1, P, input_size] embedded frames (zeros before the first chunk)
    kv: list[tuple[torch.Tensor, torch.Tensor] | None]


class SanmEncoder(nn.Module):
    """The encoder; `state_dict()` keys match FunASR's model.pt keys without the `encoder.` prefix."""

    def __init__(self, cfg: SanmConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoders0 = nn.ModuleList([SanmLayer(cfg, cfg.input_size)])
        self.encoders = nn.ModuleList([SanmLayer(cfg, cfg.output_size) for _ in range(cfg.num_blocks - 1)])
        self.after_norm = nn.LayerNorm(cfg.output_size, eps=1e-12)

    def new_state(self, overlap: int) -> SanmState:
        return SanmState(0, torch.zeros(1, overlap, self.cfg.input_size), [None] * self.cfg.num_blocks)

    @torch.inference_mode()
    def step(self, feats: torch.Tensor, state: SanmState, stride: int, look_back: int) -> torch.Tensor:
        """feats: [1, L, input_size] CMVN'd LFR frames (L <= stride) -> [1, L, output_size]; updates `state`."""
        length = feats.shape[1]
        x = feats * math.sqrt(self.cfg.output_size) + sinusoid_positions(state.position, length, self.cfg.input_size)
        state.position += length
        window = torch.cat([state.overlap, x], dim=1)  # [1, P + L, input_size]
        overlap = state.overlap.shape[1]
        state.overlap = window[:, -overlap:]
        keep = window.shape[1] - overlap  # frames that leave the overlap join the KV cache
        for i, layer in enumerate([*self.encoders0, *self.encoders]):
            window, state.kv[i] = layer(window, state.kv[i], keep, look_back * stride)
        return self.after_norm(window)[:, -length:]

    def load_funasr(self, state: dict[str, torch.Tensor]) -> None:
        """Loads the `encoder.*` keys of a FunASR model.pt state dict (other keys are ignored)."""
        enc = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        mine = self.state_dict()
        missing = sorted(set(mine) - set(enc))
        if missing:
            raise TokenizerConfigError(f"model.pt lacks encoder keys, e.g. encoder.{missing[0]}")
        for name, value in mine.items():
            if enc[name].shape != value.shape:
                raise TokenizerConfigError(f"encoder.{name}: shape {tuple(enc[name].shape)} != {tuple(value.shape)}")
        self.load_state_dict({k: enc[k].float() for k in mine})
