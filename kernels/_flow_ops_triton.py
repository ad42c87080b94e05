"""Triton kernels behind kernels.flow_ops (imported only by its dispatchers and by tests). LayerNorm: one program
per row. GroupNorm: one program per (batch, group), looping over time in tiles. fp32 maths; nothing is allocated but
the outputs and nothing synchronises, so both can be captured in a CUDA graph."""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels._pdl import begin
from kernels.launch import use_pdl

_TILE = 4096  # elements of a GroupNorm tile (channels of a group x time steps)


@triton.jit
def _add_layer_norm_kernel(X, R, W, B, O, H, eps, D, stride_x, stride_r, stride_o, stride_h, BLOCK: tl.constexpr,
                           PDL: tl.constexpr):
    begin(PDL)
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    ok = offs < D
    x = tl.load(X + row * stride_x + offs, mask=ok, other=0.0)
    # the sum is rounded to the model dtype first, as `residual + x` in torch is; it is the residual stream
    h = (x.to(tl.float32) + tl.load(R + row * stride_r + offs, mask=ok, other=0.0).to(tl.float32)).to(x.dtype)
    tl.store(H + row * stride_h + offs, h, mask=ok)
    hf = h.to(tl.float32)
    mean = tl.sum(hf, 0) / D
    dev = tl.where(ok, hf - mean, 0.0)  # two-pass variance: no cancellation of E[x^2] - mean^2
    rstd = 1.0 / tl.sqrt_rn(tl.sum(dev * dev, 0) / D + eps)
    w = tl.load(W + offs, mask=ok, other=0.0).to(tl.float32)
    b = tl.load(B + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(O + row * stride_o + offs, (dev * rstd * w + b).to(O.dtype.element_ty), mask=ok)


def add_layer_norm_triton(x: Tensor, residual: Tensor, weight: Tensor, bias: Tensor,
                          eps: float) -> tuple[Tensor, Tensor]:
    x = x if x.stride(1) == 1 else x.contiguous()
    residual = residual if residual.stride(1) == 1 else residual.contiguous()
    rows, d = x.shape
    out, h = torch.empty_like(x), torch.empty_like(x)
    if rows == 0:
        return out, h
    block = triton.next_power_of_2(d)
    pdl = use_pdl(x)
    _add_layer_norm_kernel[(rows,)](x, residual, weight, bias, out, h, eps, d, x.stride(0), residual.stride(0),
                                    out.stride(0), h.stride(0), BLOCK=block, PDL=pdl, launch_pdl=pdl,
                                    num_warps=min(16, max(1, block // 256)))
    return out, h


@triton.jit
def _mish(y):
    # mish(y) = y tanh(softplus(y)) = y n / (n + 2) with n = e^y (e^y + 2), since tanh(log(1 + e^y)) =
    # ((1 + e^y)^2 - 1) / ((1 + e^y)^2 + 1). Above 20 torch's softplus returns y and tanh is 1 in fp32.
    e = tl.exp(tl.minimum(y, 20.0))
    n = e * (e + 2.0)
    return tl.where(y > 20.0, y, y * n / (n + 2.0))


@triton.jit
def _group_x(ptrs, ok, xb, HAS_XB: tl.constexpr):
    """A tile of the group's x in fp32, its convolution's bias added (the sum rounded to x's dtype, as torch's
    bias add is), 0 where masked."""
    x = tl.load(ptrs, mask=ok, other=0.0)
    if HAS_XB:
        x = (x.to(tl.float32) + xb[:, None]).to(x.dtype)
    return tl.where(ok, x.to(tl.float32), 0.0)


@triton.jit
def _finish(x, scale, shift, ok, a_ptrs, ab, o_ptrs, HAS_ADD: tl.constexpr, HAS_AB: tl.constexpr):
    """Normalised (x * scale + shift per channel), Mish, the add (+ its convolution's bias), stored."""
    y = _mish(x * scale[:, None] + shift[:, None])
    if HAS_ADD:
        a = tl.load(a_ptrs, mask=ok, other=0.0)
        if HAS_AB:
            a = (a.to(tl.float32) + ab[:, None]).to(a.dtype)
        y += a.to(tl.float32)
    tl.store(o_ptrs, y.to(o_ptrs.dtype.element_ty), mask=ok)


@triton.jit
def _group_norm_mish_kernel(X, W, B, A, XB, AB, O, eps, C, T, G, CPG,
                            stride_xb, stride_xc, stride_xt, stride_ab, stride_ac, stride_at,
                            stride_ob, stride_oc, stride_ot,
                            HAS_ADD: tl.constexpr, HAS_XB: tl.constexpr, HAS_AB: tl.constexpr,
                            BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr, PDL: tl.constexpr):
    begin(PDL)
    pid = tl.program_id(0)
    bi = (pid // G).to(tl.int64)
    ch = (pid % G) * CPG + tl.arange(0, BLOCK_C)  # this group's channels
    c_ok = ch < (pid % G) * CPG + CPG
    x_base = X + bi * stride_xb + ch[:, None] * stride_xc
    a_base = A + bi * stride_ab + ch[:, None] * stride_ac
    o_base = O + bi * stride_ob + ch[:, None] * stride_oc
    xb = tl.load(XB + ch, mask=c_ok, other=0.0).to(tl.float32) if HAS_XB else tl.zeros([BLOCK_C], tl.float32)
    ab = tl.load(AB + ch, mask=c_ok, other=0.0).to(tl.float32) if HAS_AB else tl.zeros([BLOCK_C], tl.float32)
    w = tl.load(W + ch, mask=c_ok, other=0.0).to(tl.float32)
    b = tl.load(B + ch, mask=c_ok, other=0.0).to(tl.float32)
    n = CPG * T
    # pass 1: mean; pass 2: variance around it (no E[x^2] - mean^2 cancellation); pass 3: normalise, mish, add.
    # Passes 2 and 3 re-read the group from L2 (a window's group: 32 channels x ~500 frames, 33 KB).
    acc = tl.zeros([BLOCK_C, BLOCK_T], dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        acc += _group_x(x_base + ts[None, :] * stride_xt, c_ok[:, None] & (ts < T)[None, :], xb, HAS_XB)
    mean = tl.sum(tl.sum(acc, 1), 0) / n
    acc = tl.zeros([BLOCK_C, BLOCK_T], dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        ok = c_ok[:, None] & (ts < T)[None, :]
        dev = tl.where(ok, _group_x(x_base + ts[None, :] * stride_xt, ok, xb, HAS_XB) - mean, 0.0)
        acc += dev * dev
    rstd = 1.0 / tl.sqrt_rn(tl.sum(tl.sum(acc, 1), 0) / n + eps)
    scale = w * rstd
    shift = b - mean * scale
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        ok = c_ok[:, None] & (ts < T)[None, :]
        _finish(_group_x(x_base + ts[None, :] * stride_xt, ok, xb, HAS_XB), scale, shift, ok,
                a_base + ts[None, :] * stride_at, ab, o_base + ts[None, :] * stride_ot, HAS_ADD, HAS_AB)


def group_norm_mish_triton(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float,
                           add: Tensor | None, x_bias: Tensor | None = None,
                           add_bias: Tensor | None = None) -> Tensor:
    """add: None or already expanded to x's shape (broadcast dims have stride 0)."""
    b, c, t = x.shape
    out = torch.empty((b, c, t), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    cpg = c // groups
    block_c = triton.next_power_of_2(cpg)
    block_t = max(1, min(triton.next_power_of_2(t), _TILE // block_c))
    a = add if add is not None else x
    # 8 elements a thread: every pointer is 64 bits wide, and 32 a thread (4 warps on a full tile) spill on sm_90
    # (ptxas: 360 bytes a thread); 8 use 119 registers and none.
    warps = max(1, min(16, block_c * block_t // 256))
    pdl = use_pdl(x)
    _group_norm_mish_kernel[(b * groups,)](
        x, weight, bias, a, x if x_bias is None else x_bias, x if add_bias is None else add_bias, out, eps, c, t,
        groups, cpg, *x.stride(), *a.stride(), *out.stride(),
        HAS_ADD=add is not None, HAS_XB=x_bias is not None, HAS_AB=add_bias is not None,
        BLOCK_C=block_c, BLOCK_T=block_t, PDL=pdl, launch_pdl=pdl, num_warps=warps)
    return out
