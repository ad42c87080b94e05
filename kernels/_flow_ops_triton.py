"""Triton kernels behind kernels.flow_ops (imported only by its dispatchers and by tests). LayerNorm: one program
per row. GroupNorm: one program per (batch, group), looping over time in tiles. Linear: one program per output tile,
its epilogue (GELU, or the residual add and LayerNorm over whole rows) applied to the accumulator before it is
stored. fp32 maths; nothing is allocated but the outputs and nothing synchronises, so all can be captured in a CUDA
graph."""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton import knobs

from kernels._pdl import begin
from kernels._shared_memory import fitting_stages, shared_memory_limit
from kernels.launch import use_pdl

_TILE = 4096  # elements of a GroupNorm tile (channels of a group x time steps)
# The widest row linear_triton normalises in its epilogue: one program holds BLOCK_M whole rows of fp32 sums
# (the estimator's 256: 32 rows x 256 in 4 warps is 64 registers a thread).
MAX_NORM_WIDTH = 256
# The longest K it takes the add + LayerNorm epilogue for: whole rows make every program stream all of W (N x K) from
# L2, and at K = 1024 (the second feed-forward projection, 512 KB a program) that cost more than it saved: H100 run4,
# 1032 rows under a CUDA graph, 12.6 us fused against 7.1 us for cuBLAS + the add_layer_norm kernel. K = 256 (the
# attention output projection, 128 KB a program) keeps the epilogue (unmeasured alone; bench.kernels times both).
MAX_NORM_K = 256
# linear_triton's EPILOGUE by its gelu argument (None, no GELU, goes with a residual); 3 is the add + LayerNorm, 4 the
# add alone
_GELU: dict[str | None, int] = {"none": 1, "tanh": 2}


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
    out = torch.empty_like(x)  # in x's layout: the estimator's channels-last convolution outputs stay so
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


@triton.jit
def _linear_kernel(X, W, BIAS, Y, R, LW, LB, H, M, N, K, eps, stride_xm, stride_wn, stride_ym, stride_rm, stride_hm,
                   HAS_BIAS: tl.constexpr, EPILOGUE: tl.constexpr, DOT: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr):
    begin(PDL)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok, n_ok = offs_m < M, offs_n < N
    rows = offs_m.to(tl.int64)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        x = tl.load(X + rows[:, None] * stride_xm + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(W + offs_n[:, None] * stride_wn + offs_k[None, :], mask=n_ok[:, None] & k_ok[None, :],
                    other=0.0)
        acc += tl.dot(x, tl.trans(w), input_precision=DOT)
    if HAS_BIAS:
        acc += tl.load(BIAS + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    ok = m_ok[:, None] & n_ok[None, :]
    y = acc.to(Y.dtype.element_ty)  # rounded as F.linear's output is, before what follows it
    if EPILOGUE >= 3:  # the residual add, rounded as `residual + x` in torch is: the stream
        r = tl.load(R + rows[:, None] * stride_rm + offs_n[None, :], mask=ok, other=0.0)
        h = (y.to(tl.float32) + r.to(tl.float32)).to(y.dtype)
    if EPILOGUE == 4:
        out = h.to(tl.float32)
    elif EPILOGUE == 3:  # the stream stored, and LayerNorm over each (whole) row
        tl.store(H + rows[:, None] * stride_hm + offs_n[None, :], h, mask=ok)
        hf = tl.where(ok, h.to(tl.float32), 0.0)
        mean = tl.sum(hf, 1) / N
        dev = tl.where(ok, hf - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt_rn(tl.sum(dev * dev, 1) / N + eps)
        lw = tl.load(LW + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        lb = tl.load(LB + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        out = dev * rstd[:, None] * lw[None, :] + lb[None, :]
    else:
        yf = y.to(tl.float32)
        if EPILOGUE == 1:
            out = 0.5 * yf * (1.0 + tl.math.erf(yf * 0.7071067811865476))
        else:  # tanh(u) = 1 - 2 / (e^(2u) + 1); tanh(20) is 1 in fp32, so e^(2u) is kept finite
            u = 0.7978845608028654 * (yf + 0.044715 * yf * yf * yf)
            out = 0.5 * yf * (2.0 - 2.0 / (tl.exp(2.0 * tl.minimum(u, 20.0)) + 1.0))
    tl.store(Y + rows[:, None] * stride_ym + offs_n[None, :], out.to(Y.dtype.element_ty), mask=ok)


def linear_triton(x: Tensor, weight: Tensor, bias: Tensor | None, *, gelu: str | None = None,
                  residual: Tensor | None = None, norm: tuple[Tensor, Tensor, float] | None = None,
                  ) -> Tensor | tuple[Tensor, Tensor]:
    """y = x [M, K] @ weight [N, K]^T (+ bias), then one of: gelu(y) with gelu="none" / "tanh"; residual + y with
    residual [M, N]; with residual and norm=(ln_weight, ln_bias, eps) the pair (layer_norm(residual + y),
    residual + y), N at most MAX_NORM_WIDTH. Inputs are validated by the dispatchers."""
    x = x if x.stride(1) == 1 else x.contiguous()
    weight = weight if weight.stride(1) == 1 else weight.contiguous()
    m, k = x.shape
    n = weight.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    h, r, lw, lb, eps = y, y, y, y, 0.0
    if residual is not None:
        r = residual if residual.stride(1) == 1 else residual.contiguous()
    if norm is not None:
        lw, lb, eps = norm
        h = torch.empty_like(y)
    if m == 0:
        return y if norm is None else (y, h)
    interpreting = bool(knobs.runtime.interpret)
    tile = linear_tile(m, n, norm is not None, interpreting, x.element_size(),
                       None if interpreting else shared_memory_limit(x.device))
    pdl = use_pdl(x)
    _linear_kernel[(triton.cdiv(m, tile.kwargs["BLOCK_M"]), triton.cdiv(n, tile.kwargs["BLOCK_N"]))](
        x, weight, bias if bias is not None else weight, y, r, lw, lb, h, m, n, k, eps,
        x.stride(0), weight.stride(0), y.stride(0), r.stride(0), h.stride(0),
        HAS_BIAS=bias is not None, EPILOGUE=_GELU[gelu] if residual is None else 4 if norm is None else 3,
        DOT="ieee" if x.dtype == torch.float32 else "tf32", **tile.kwargs, PDL=pdl, launch_pdl=pdl,
        num_warps=tile.num_warps, num_stages=tile.num_stages)
    return y if norm is None else (y, h)


def linear_tile(m: int, n: int, norm: bool, interpreting: bool, elem_bytes: int = 2,
                smem_limit: int | None = None) -> triton.Config:
    """linear_triton's tile (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) for an [m, n] output of elem_bytes-wide
    values, with no more pipeline stages than smem_limit bytes of shared memory hold. A streaming window's
    products are small (~1000 rows, K and N 256-1024): tiles are sized for enough programs to spread over the SMs,
    not for peak tensor-core rates."""
    if interpreting:  # small tiles: the interpreter's time grows with the tile, and tests use small shapes
        bm, bn, bk, warps, stages = 16, triton.next_power_of_2(n) if norm else 32, 32, 4, 1
    elif norm:  # whole rows in a tile. A window's ~1000 rows in 32-row tiles (mma.sync) still make ~30 programs,
        # each reading the whole weight from L2; batched windows fill the GPU with 64-row tiles (wgmma, 8 warps)
        bm, bn, bk, warps, stages = (32, triton.next_power_of_2(n), 64, 4, 3) if m <= 4096 else \
            (64, triton.next_power_of_2(n), 64, 8, 3)
    else:
        bm, bn, bk, warps, stages = 64, 128, 64, 8, 3
    if smem_limit is not None:
        stages = fitting_stages(stages, bk * (bm + bn) * elem_bytes, smem_limit)
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=warps, num_stages=stages)
