"""RMSNorm with the variance in fp32 (Step-1 and Qwen2): w * (x / sqrt(mean(x^2) + eps)).to(x.dtype).

forward_add fuses the pre-norm block's residual add into the norm (one kernel on CUDA: kernels.lm_ops)."""
from __future__ import annotations

import torch
from torch import nn

from kernels import lm_ops


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)
        self.weight.weight_loader = self.weight_loader  # type: ignore[attr-defined]

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        param.data.copy_(loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lm_ops.rms_norm(x, self.weight, self.eps)

    def forward_add(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(residual + x), residual + x)."""
        return lm_ops.add_rms_norm(x, residual, self.weight, self.eps)
