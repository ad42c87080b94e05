"""Vocab-parallel embedding and LM head: rank r holds vocab rows [r*V/tp, (r+1)*V/tp)."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from kernels.gemv import gemv
from lm_engine.layers.tp import all_reduce, divide, tp_rank, tp_size


class VocabParallelEmbedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = tp_rank(), tp_size()
        self.vocab_local = divide(vocab_size, self.tp_size)
        self.start = self.tp_rank * self.vocab_local
        self.weight = nn.Parameter(torch.empty(self.vocab_local, dim), requires_grad=False)
        self.weight.weight_loader = self.weight_loader  # type: ignore[attr-defined]

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        param.data.copy_(loaded.narrow(0, self.start, self.vocab_local))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return F.embedding(ids, self.weight)
        # Ids outside this rank's range read row 0 and are zeroed; the all_reduce fills them from their owner.
        mask = (ids >= self.start) & (ids < self.start + self.vocab_local)
        y = F.embedding((ids - self.start) * mask, self.weight) * mask.unsqueeze(-1).to(self.weight.dtype)
        return all_reduce(y)


class ParallelLMHead(VocabParallelEmbedding):
    """Logits for the rows given; every rank returns the full [n, vocab] float32 (all_gather over ranks)."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        logits = gemv(hidden, self.weight).float()
        if self.tp_size == 1:
            return logits
        parts = [torch.empty_like(logits) for _ in range(self.tp_size)]
        dist.all_gather(parts, logits.contiguous())
        return torch.cat(parts, dim=-1)
