"""SwiGLU: x = [gate | up] -> silu(gate) * up (one kernel on CUDA: kernels.lm_ops)."""
from __future__ import annotations

import torch
from torch import nn

from kernels import lm_ops


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lm_ops.silu_and_mul(x)
