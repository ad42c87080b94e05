"""Conformer token encoder of MaskedDiffWithXvec (CosyVoice ConformerEncoder, rel_pos_espnet, no conv module).

State-dict names match upstream's flow.pt under `encoder.`:
  embed.out.0 (Linear in->d), embed.out.1 (LayerNorm), after_norm,
  encoders.{i}.self_attn.{linear_q,linear_k,linear_v,linear_out,linear_pos,pos_bias_u,pos_bias_v},
  encoders.{i}.feed_forward.{w_1,w_2}, encoders.{i}.norm_mha, encoders.{i}.norm_ff.
The relative position encoding (`pe`) is not a parameter upstream either; we compute it on the fly.
Attention is full (non-causal) over prompt + target tokens, as upstream inference runs it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from speech_decoder.cosyvoice_config import ConformerConfig


def rel_position_embedding(length: int, d_model: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """ESPnet relative PE for relative positions (length-1) ... -(length-1): [1, 2*length-1, d_model].

    Row n encodes position p = length-1-n as interleaved [sin(p*w_k), cos(p*w_k)], w_k = 10000^(-2k/d).
    """
    pos = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    pe = torch.zeros(2 * length - 1, d_model, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)
    return pe.unsqueeze(0).to(dtype)


def rel_shift(bd: torch.Tensor) -> torch.Tensor:
    """[B, H, T, 2T-1] scores against PE rows -> [B, H, T, T] with out[i, j] at relative position i - j."""
    t = bd.size(2)
    # PE row n is position t-1-n, so position i-j sits at row t-1-i+j.
    idx = (t - 1 - torch.arange(t, device=bd.device)[:, None] + torch.arange(t, device=bd.device)[None, :])
    return bd.gather(-1, idx.expand(bd.size(0), bd.size(1), t, t))


class RelPositionAttention(nn.Module):
    def __init__(self, n_head: int, n_feat: int, key_bias: bool = True) -> None:
        super().__init__()
        self.h, self.d_k = n_head, n_feat // n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat, bias=key_bias)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_head, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_head, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        # x: [B, T, D]; pos_emb: [1, 2T-1, D]; key_mask: [B, 1, 1, T] bool (True = keep) or None
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.d_k)
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos_emb).view(1, -1, self.h, self.d_k).transpose(1, 2)  # [1, H, 2T-1, dk]
        ac = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))  # content + global bias
        bd = rel_shift(torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1)))
        scores = (ac + bd) / math.sqrt(self.d_k)  # [B, H, T, T]
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask, float("-inf"))
            attn = torch.softmax(scores, dim=-1).masked_fill(~key_mask, 0.0)
        else:
            attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, self.h * self.d_k)
        return self.linear_out(out)


class FeedForward(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d, hidden)
        self.w_2 = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))  # "swish", ConformerEncoder's default activation


class ConformerLayer(nn.Module):
    """Pre-norm block: x + MHA(norm_mha(x)); x + FFN(norm_ff(x)). No macaron FFN, no conv module."""

    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        d = cfg.output_size
        self.self_attn = RelPositionAttention(cfg.attention_heads, d, cfg.key_bias)
        self.feed_forward = FeedForward(d, cfg.linear_units)
        self.norm_ff = nn.LayerNorm(d, eps=1e-5)
        self.norm_mha = nn.LayerNorm(d, eps=1e-5)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), pos_emb, key_mask)
        return x + self.feed_forward(self.norm_ff(x))


class _LinearEmbed(nn.Module):
    """LinearNoSubsampling: `out` = Sequential(Linear, LayerNorm, Dropout); the x*sqrt(d) scale of the PE."""

    def __init__(self, idim: int, odim: int) -> None:
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=1e-5), nn.Dropout(0.0))
        self.xscale = math.sqrt(odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x) * self.xscale


class ConformerEncoder(nn.Module):
    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = _LinearEmbed(cfg.input_size, cfg.output_size)
        self.encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.num_blocks))
        self.after_norm = nn.LayerNorm(cfg.output_size, eps=1e-5)

    def forward(self, xs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """xs: [B, T, input_size] -> [B, T, output_size]; lengths [B] masks padded keys (None = all valid)."""
        t = xs.size(1)
        x = self.embed(xs)
        pos_emb = rel_position_embedding(t, self.cfg.output_size, xs.device, x.dtype)
        key_mask = None
        if lengths is not None:
            key_mask = (torch.arange(t, device=xs.device)[None, :] < lengths[:, None])[:, None, None, :]
        for layer in self.encoders:
            x = layer(x, pos_emb, key_mask)
        return self.after_norm(x)
