"""Triton kernels behind kernels.lm_ops (imported only by its dispatchers and by tests). One program per row."""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels._pdl import begin
from kernels.launch import use_pdl


@triton.jit
def _rms_norm_kernel(X, R, W, O, H, eps, D, stride_x, stride_r, stride_o, stride_h,
                     HAS_RES: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
    begin(PDL)
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    ok = offs < D
    x = tl.load(X + row * stride_x + offs, mask=ok, other=0.0)
    if HAS_RES:
        # the sum is rounded to the model dtype first, as `residual + x` in torch is
        x = (x.to(tl.float32) + tl.load(R + row * stride_r + offs, mask=ok, other=0.0).to(tl.float32)).to(x.dtype)
        tl.store(H + row * stride_h + offs, x, mask=ok)
    xf = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt_rn(tl.sum(xf * xf, 0) / D + eps)
    y = (xf * rstd).to(x.dtype).to(tl.float32)
    w = tl.load(W + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(O + row * stride_o + offs, (w * y).to(O.dtype.element_ty), mask=ok)


def rms_norm_triton(x: Tensor, residual: Tensor | None, weight: Tensor, eps: float) -> tuple[Tensor, Tensor | None]:
    x = x if x.stride(1) == 1 else x.contiguous()
    residual = residual if residual is None or residual.stride(1) == 1 else residual.contiguous()
    rows, d = x.shape
    out = torch.empty_like(x)
    h = torch.empty_like(x) if residual is not None else None
    if rows == 0:
        return out, h
    block = triton.next_power_of_2(d)
    r = residual if residual is not None else x
    hh = h if h is not None else out
    pdl = use_pdl(x)
    _rms_norm_kernel[(rows,)](x, r, weight, out, hh, eps, d, x.stride(0), r.stride(0), out.stride(0), hh.stride(0),
                              HAS_RES=residual is not None, BLOCK=block, PDL=pdl, launch_pdl=pdl,
                              num_warps=min(16, max(1, block // 256)))
    return out, h


@triton.jit
def _silu_and_mul_kernel(X, O, I, stride_x, stride_o, BLOCK: tl.constexpr, PDL: tl.constexpr):
    begin(PDL)
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < I
    g = tl.load(X + row * stride_x + offs, mask=ok, other=0.0)
    u = tl.load(X + row * stride_x + I + offs, mask=ok, other=0.0)
    gf = g.to(tl.float32)
    # silu rounded to the model dtype before the product, as F.silu(gate) * up is in torch
    s = (gf / (1.0 + tl.exp(-gf))).to(g.dtype).to(tl.float32)
    tl.store(O + row * stride_o + offs, (s * u.to(tl.float32)).to(O.dtype.element_ty), mask=ok)


def silu_and_mul_triton(x: Tensor) -> Tensor:
    x = x if x.stride(1) == 1 else x.contiguous()
    rows, two_i = x.shape
    inter = two_i // 2
    out = torch.empty((rows, inter), dtype=x.dtype, device=x.device)
    if rows == 0:
        return out
    block = min(4096, triton.next_power_of_2(inter))
    pdl = use_pdl(x)
    _silu_and_mul_kernel[(rows, triton.cdiv(inter, block))](x, out, inter, x.stride(0), out.stride(0), BLOCK=block,
                                                           PDL=pdl, launch_pdl=pdl, num_warps=4)
    return out
