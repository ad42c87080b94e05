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
from lm_engine.layers.activation import SiluAndMul
from lm_engine.layers.attention import PagedAttention
from lm_engine.layers.embed_head import ParallelLMHead, VocabParallelEmbedding
from lm_engine.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from lm_engine.layers.norm import RMSNorm
from lm_engine.layers.tp import tp_rank
from lm_engine.models.config import ModelConfig


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

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        del positions  # ALiBi: positions come from the context lengths
        q_n, kv_n = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = self.qkv_proj(x).split([q_n, kv_n, kv_n], dim=-1)
        o = self.attn(q.view(-1, self.num_heads, self.head_dim), k.view(-1, self.num_kv_heads, self.head_dim),
                      v.view(-1, self.num_kv_heads, self.head_dim))
        return self.o_proj(o.reshape(-1, q_n))


class GatedMLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(hidden, [intermediate, intermediate])
        self.act = SiluAndMul()
        self.down_proj = RowParallelLinear(intermediate, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(x)))


class Step1DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Step1Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, positions: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h = h + self.self_attn(positions, self.input_layernorm(h))
        return h + self.mlp(self.post_attention_layernorm(h))


class Step1Model(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([Step1DecoderLayer(cfg) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(input_ids)
        for layer in self.layers:
            h = layer(positions, h)
        return self.norm(h)


class Step1ForCausalLM(nn.Module):
    # checkpoint name fragment -> (our fused parameter fragment, shard id)
    packed_modules_mapping = {
        "q_proj": ("qkv_proj", "q"), "k_proj": ("qkv_proj", "k"), "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = Step1Model(cfg)
        self.lm_head = ParallelLMHead(cfg.vocab_size, cfg.hidden_size)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """input_ids, positions: [T] int64 (packed over sequences) -> hidden [T, hidden]."""
        return self.model(input_ids, positions)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [n, hidden] -> logits [n, vocab] float32 (full vocab on every rank)."""
        return self.lm_head(hidden)

    def attention_layers(self) -> list[PagedAttention]:
        return [layer.self_attn.attn for layer in self.model.layers]
