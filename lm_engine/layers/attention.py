"""Paged attention layer: stores this step's k/v in the cache and attends, in one kernels.attention call.

The caches are assigned by the model runner (k_cache/v_cache, [num_blocks, block_size, kv_heads_local, head_dim]);
the step's metadata comes from the forward context.
"""
from __future__ import annotations

import torch
from torch import nn

from kernels import attention as attn_kernels
from lm_engine.engine.forward_context import get_forward_context


class PagedAttention(nn.Module):
    alibi_slopes: torch.Tensor | None  # a buffer: declared, as nn.Module's attributes are untyped

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, bias: str,
                 alibi_slopes: torch.Tensor | None) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.bias = bias
        self.scale = head_dim ** -0.5
        # [num_heads_local] fp32; this rank's slice of the model's slopes.
        self.register_buffer("alibi_slopes", alibi_slopes, persistent=False)
        self.k_cache = torch.empty(0)
        self.v_cache = torch.empty(0)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q [T, H, D], k/v [T, G, D] -> [T, H, D]
        ctx = get_forward_context()
        return attn_kernels.paged_attention(
            q, self.k_cache, self.v_cache, ctx.block_tables, ctx.cu_seqlens_q, ctx.context_lens,
            alibi_slopes=self.alibi_slopes, bias=self.bias, scale=self.scale, max_seqlen_q=ctx.max_seqlen_q,
            new_kv=(k, v, ctx.slot_mapping),
        )
