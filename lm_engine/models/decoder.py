"""The pre-norm decoder both families share; a family supplies only its attention module.

    h = embed(ids)
    per layer: h += attn(input_layernorm(h));  h += down(silu(gate(x)) * up(x)), x = post_attention_layernorm(h)
    logits = lm_head(norm(h))
Each residual add and the RMSNorm after it run inside the projection that follows them (q/k/v, gate/up:
ColumnParallelLinear.forward_norm; in a decode step one kernel, kernels.gemv), and SwiGLU's activation inside the
gate/up projection.

Module names follow the HF checkpoints (model.layers.N.self_attn..., lm_head), so loaders map keys 1:1.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar, Protocol, cast

import torch
from torch import nn

from lm_engine.layers.attention import PagedAttention
from lm_engine.layers.embed_head import ParallelLMHead, VocabParallelEmbedding
from lm_engine.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from lm_engine.layers.norm import RMSNorm
from lm_engine.models.config import ModelConfig

class Attention(Protocol):
    """A family's attention module: (positions [T] int64, qkv [T, (H + 2G) * head_dim], its qkv_proj's output)
    -> [T, hidden], with its q/k/v projection at `.qkv_proj` (DecoderLayer runs it), its PagedAttention at
    `.attn` and its output projection at `.o_proj` (bench.engine's upstream-style baseline reads its weight)."""

    qkv_proj: QKVParallelLinear
    attn: PagedAttention
    o_proj: RowParallelLinear

    def __call__(self, positions: torch.Tensor, qkv: torch.Tensor) -> torch.Tensor: ...


AttentionFactory = Callable[[], Attention]


class GatedMLP(nn.Module):
    """down(silu(gate(x)) * up(x)); DecoderLayer runs its two projections (gate_up_proj with the norm before it and
    the activation after it fused, then down_proj)."""

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(hidden, [intermediate, intermediate])
        self.down_proj = RowParallelLinear(intermediate, hidden)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, attention: Attention) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = attention
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, positions: torch.Tensor, x: torch.Tensor, residual: torch.Tensor | None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: the previous block's output, not yet added to the residual stream (which is None before layer 0).
        Returns (this layer's MLP output, the residual stream)."""
        qkv, residual = self.self_attn.qkv_proj.forward_norm(x, residual, self.input_layernorm)
        act, residual = self.mlp.gate_up_proj.forward_norm(self.self_attn(positions, qkv), residual,
                                                           self.post_attention_layernorm, swiglu=True)
        return self.mlp.down_proj(act), residual


class DecoderModel(nn.Module):
    def __init__(self, cfg: ModelConfig, make_attention: AttentionFactory) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg, make_attention()) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            x, residual = layer(positions, x, residual)
        return self.norm(x) if residual is None else self.norm.forward_add(x, residual)[0]


class DecoderForCausalLM(nn.Module):
    # checkpoint name fragment -> (our fused parameter fragment, shard id)
    packed_modules_mapping: ClassVar[dict[str, tuple[str, str | int]]] = {
        "q_proj": ("qkv_proj", "q"), "k_proj": ("qkv_proj", "k"), "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, cfg: ModelConfig, make_attention: AttentionFactory) -> None:
        super().__init__()
        self.config = cfg
        self.model = DecoderModel(cfg, make_attention)
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
        layers = cast(Iterable[DecoderLayer], self.model.layers)  # an nn.ModuleList yields untyped Modules
        return [layer.self_attn.attn for layer in layers]
