"""Qwen2 (the embedded Qwen2.5-0.5B-Instruct): pre-norm decoder, RoPE, q/k/v biases, SwiGLU, tied head.

Same block as Step-1 except the attention: q, k get RoPE at their absolute positions before the cache write, and
the score has no bias (causal only).
"""
from __future__ import annotations

import torch
from torch import nn

from lm_engine.layers.attention import PagedAttention
from lm_engine.layers.linear import QKVParallelLinear, RowParallelLinear
from lm_engine.layers.rotary import RotaryEmbedding
from lm_engine.models.config import ModelConfig
from lm_engine.models.decoder import DecoderForCausalLM


class Qwen2Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, rope: RotaryEmbedding) -> None:
        super().__init__()
        self.qkv_proj = QKVParallelLinear(cfg.hidden_size, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads,
                                          bias=cfg.attention_bias)
        self.num_heads, self.num_kv_heads = self.qkv_proj.num_heads, self.qkv_proj.num_kv_heads
        self.head_dim = cfg.head_dim
        self.o_proj = RowParallelLinear(cfg.num_heads * cfg.head_dim, cfg.hidden_size)
        self.rope = rope
        self.attn = PagedAttention(self.num_heads, self.num_kv_heads, self.head_dim, "none", None)

    def forward(self, positions: torch.Tensor, qkv: torch.Tensor) -> torch.Tensor:
        q_n, kv_n = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = qkv.split([q_n, kv_n, kv_n], dim=-1)
        q, k = self.rope(positions, q.view(-1, self.num_heads, self.head_dim),
                         k.view(-1, self.num_kv_heads, self.head_dim))
        o = self.attn(q, k, v.view(-1, self.num_kv_heads, self.head_dim))
        return self.o_proj(o.reshape(-1, q_n))


class Qwen2ForCausalLM(DecoderForCausalLM):
    def __init__(self, cfg: ModelConfig) -> None:
        rope = RotaryEmbedding(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)  # one table shared by all layers
        super().__init__(cfg, lambda: Qwen2Attention(cfg, rope))
