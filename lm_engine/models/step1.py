"""Step-1 (Step-Audio-Chat 130B, Step-Audio-TTS-3B): pre-norm decoder, no RoPE, sqrt-ALiBi attention.

    h = embed(ids)
    per layer: h += o_proj(attn(input_layernorm(h)));  h += down(silu(gate(x)) * up(x)), x = post_attention_layernorm(h)
    logits = lm_head(norm(h))   (untied head)
attention score(i, j) = q_i.k_j / sqrt(head_dim) - slope_h * sqrt(i - j) for j <= i; GQA with contiguous groups:
query head h reads KV group h // (H / G). No biases anywhere.
"""
from __future__ import annotations

import torch
from torch import nn

from kernels.attention import alibi_slopes
from lm_engine.layers.attention import PagedAttention
from lm_engine.layers.linear import QKVParallelLinear, RowParallelLinear
from lm_engine.layers.tp import tp_rank
from lm_engine.models.config import ModelConfig
from lm_engine.models.decoder import DecoderForCausalLM


class Step1Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.qkv_proj = QKVParallelLinear(cfg.hidden_size, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads)
        self.num_heads, self.num_kv_heads = self.qkv_proj.num_heads, self.qkv_proj.num_kv_heads
        self.head_dim = cfg.head_dim
        self.o_proj = RowParallelLinear(cfg.num_heads * cfg.head_dim, cfg.hidden_size)
        start = tp_rank() * self.num_heads
        slopes = alibi_slopes(cfg.num_heads)[start:start + self.num_heads].contiguous()
        self.attn = PagedAttention(self.num_heads, self.num_kv_heads, self.head_dim, "sqrt_alibi", slopes)

    def forward(self, positions: torch.Tensor, qkv: torch.Tensor) -> torch.Tensor:
        del positions  # ALiBi: positions come from the context lengths
        q_n, kv_n = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = qkv.split([q_n, kv_n, kv_n], dim=-1)
        o = self.attn(q.view(-1, self.num_heads, self.head_dim), k.view(-1, self.num_kv_heads, self.head_dim),
                      v.view(-1, self.num_kv_heads, self.head_dim))
        return self.o_proj(o.reshape(-1, q_n))


class Step1ForCausalLM(DecoderForCausalLM):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg, lambda: Step1Attention(cfg))
