"""Fused elementwise ops of the LM decoder layer: RMSNorm (optionally after the residual add) and SwiGLU.

At batch 1 a decode step is launch-bound, not bandwidth-bound: eager RMSNorm is seven kernels and the residual add
one more, so each layer spent ~25 launches on ~10 pieces of work. These ops make each of them one launch.
Each op: `<op>_ref` (PyTorch, the spec), Triton kernel (kernels._lm_ops_triton), dispatcher `<op>` (CUDA -> Triton,
otherwise the reference).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels._dispatch import triton_module

_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


def _triton_for(t: Tensor):  # -> kernels._lm_ops_triton | None
    return triton_module("_lm_ops_triton", t)


def rms_norm_ref(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """Step-1 / Qwen2 RMSNorm: weight * (x / sqrt(mean(x^2) + eps)) with the statistics in fp32, the normalised
    value rounded to x.dtype before the weight multiply (as the HF modules do)."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def add_rms_norm_ref(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(rms_norm(residual + x), residual + x): the pre-norm block's residual add and the next norm."""
    h = residual + x
    return rms_norm_ref(h, weight, eps), h


def silu_and_mul_ref(x: Tensor) -> Tensor:
    """x = [gate | up] along the last dim -> silu(gate) * up."""
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


def _check_rows(name: str, *tensors: Tensor) -> None:
    x = tensors[0]
    if x.dim() < 1 or x.dtype not in _FLOATS:
        raise ValueError(f"{name}: x must be a float tensor [..., dim], got {tuple(x.shape)} {x.dtype}")
    for t in tensors[1:]:
        if t.device != x.device:
            raise ValueError(f"{name}: all tensors must be on one device, got {t.device} and {x.device}")


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm over the last dim (see rms_norm_ref). x [..., D], weight [D] (x's dtype)."""
    _check_rows("rms_norm", x, weight)
    if weight.shape != (x.shape[-1],):
        raise ValueError(f"rms_norm: weight must be [{x.shape[-1]}], got {tuple(weight.shape)}")
    tri = _triton_for(x)
    if tri is None:
        return rms_norm_ref(x, weight, eps)
    return tri.rms_norm_triton(x.reshape(-1, x.shape[-1]), None, weight, eps)[0].view(x.shape)


def add_rms_norm(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(rms_norm(residual + x), residual + x) in one pass (see add_rms_norm_ref). x, residual [..., D]."""
    _check_rows("add_rms_norm", x, residual, weight)
    if residual.shape != x.shape or residual.dtype != x.dtype or weight.shape != (x.shape[-1],):
        raise ValueError(f"add_rms_norm: residual must match x {tuple(x.shape)} {x.dtype} and weight be "
                         f"[{x.shape[-1]}], got {tuple(residual.shape)} {residual.dtype}, {tuple(weight.shape)}")
    tri = _triton_for(x)
    if tri is None:
        return add_rms_norm_ref(x, residual, weight, eps)
    d = x.shape[-1]
    out, h = tri.rms_norm_triton(x.reshape(-1, d), residual.reshape(-1, d), weight, eps)
    assert h is not None
    return out.view(x.shape), h.view(x.shape)


def silu_and_mul(x: Tensor) -> Tensor:
    """silu(gate) * up for x = [gate | up] [..., 2I] -> [..., I]."""
    _check_rows("silu_and_mul", x)
    if x.shape[-1] % 2:
        raise ValueError(f"silu_and_mul: last dim must be even, got {x.shape[-1]}")
    tri = _triton_for(x)
    if tri is None:
        return silu_and_mul_ref(x)
    out = tri.silu_and_mul_triton(x.reshape(-1, x.shape[-1]))
    return out.view(*x.shape[:-1], x.shape[-1] // 2)
