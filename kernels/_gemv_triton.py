"""Triton kernel behind kernels.gemv (imported only by its dispatchers and by tests).

y[M, N] = x[M, K] @ w[N, K]^T (+ bias) for the few rows of a decode step. One program per BLOCK_N output columns
streams its [BLOCK_N, K] slice of w through shared memory (Triton's software pipeline: num_stages tiles in flight)
against the matching slice of x. The M <= 16 rows sit in one tensor-core tile (rows past M masked, never read), so
the multiply costs nothing beside the weight bytes and the kernel's time is those bytes over the bandwidth.
NORM: the product runs on rms_norm(x) (1) or rms_norm(residual + x) (2), the pre-norm block's residual add and
RMSNorm that a decode step otherwise runs as a kernel of its own before the q/k/v and gate/up projections. Every
program computes the rows' statistics itself (a few KB from L2) and normalises each tile as it loads it (rounded
as kernels.lm_ops rounds); the first program also writes residual + x, the residual stream.
SWIGLU: w is [gate; up] (2N rows) and y = silu(x @ gate^T) * (x @ up^T): each program multiplies its N-slice of
both halves and applies SwiGLU to its own outputs in the epilogue (rounded as kernels.lm_ops.silu_and_mul_ref
after F.linear), so the activation's kernel and its [M, 2N] round trip disappear at the cost of BLOCK_N outputs'
work a program. (Fused into the next projection's prologue instead, it ran on every K tile of x: ~2000
instructions a thread per 16 x 256 tile in the sm_90 SASS, three times the tile's load time.)
SPLIT > 1 (split-K): the programs of one column block share K out in SPLIT ranges and store fp32 partial sums; a
second kernel adds them up in a fixed order and applies the bias and SwiGLU. For the narrow products of a decode
step (3072 outputs: 192 programs of 16 columns on 132 SMs, some SMs streaming twice the bytes of others) the extra
programs keep more of the weight in flight; what it costs is the partials' round trip and a second launch, so
kernels.gemv times it against one pass and cuBLAS.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton import knobs

from kernels._pdl import begin, prefetch_l2
from kernels._precompile import precompile
from kernels._shared_memory import fitting_stages, shared_memory_limit
from kernels.launch import use_pdl

BLOCK_M = 16  # the tensor cores' smallest row count; also the most rows kernels.gemv sends here
# How much of a weight matrix a PDL launch asks into L2 before its wait: half an H100's 50 MB L2, so that the
# prefetched part is still there when the loop reaches it (a 100 MB MLP matrix gets its first quarter).
L2_PREFETCH_BYTES = 24 << 20


def _interpreting() -> bool:
    return bool(knobs.runtime.interpret)


@triton.jit
def _normed(X, R, NW, H, offs_k, ok, x_row, r_row, rstd, NORM: tl.constexpr):
    """The product's left operand over offs_k (a row vector, or a tile with x_row / r_row broadcast over rows): x,
    or rms_norm(x (+ residual)) given its rstd, rounded as kernels.lm_ops rounds it. With a residual the first
    program stores residual + x (the residual stream) to H."""
    x = tl.load(X + x_row + offs_k, mask=ok, other=0.0)
    if NORM:
        if NORM == 2:
            x = (x.to(tl.float32) + tl.load(R + r_row + offs_k, mask=ok, other=0.0).to(tl.float32)).to(x.dtype)
            if tl.program_id(0) == 0:
                tl.store(H + r_row + offs_k, x, mask=ok)
        nw = tl.load(NW + offs_k, mask=ok, other=0.0).to(tl.float32)
        x = ((x.to(tl.float32) * rstd).to(x.dtype).to(tl.float32) * nw).to(x.dtype)
    return x


@triton.jit
def _finish(acc, acc_up, B, Y, offs_n, n_ok, N, HAS_BIAS: tl.constexpr, SWIGLU: tl.constexpr):
    """The product's fp32 sums (each half's with SwiGLU) -> the output in Y's dtype: the bias added, then silu(gate) *
    up with F.linear's output rounding, then silu's, then the product's (kernels.lm_ops.silu_and_mul_ref after
    F.linear). offs_n / n_ok are shaped to broadcast against acc."""
    if HAS_BIAS:
        acc += tl.load(B + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        if SWIGLU:
            acc_up += tl.load(B + N + offs_n, mask=n_ok, other=0.0).to(tl.float32)
    out = acc
    if SWIGLU:
        g = acc.to(Y.dtype.element_ty).to(tl.float32)
        s = (g / (1.0 + tl.exp(-g))).to(Y.dtype.element_ty).to(tl.float32)
        out = s * acc_up.to(Y.dtype.element_ty).to(tl.float32)
    return out.to(Y.dtype.element_ty)


@triton.jit
def _gemv_kernel(X, W, B, Y, R, NW, H, P, M, N, K, eps, stride_xm, stride_wn, stride_ym, stride_rm, PF_PER_ROW,
                 HAS_BIAS: tl.constexpr, SWIGLU: tl.constexpr, NORM: tl.constexpr, DOT: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, NORM_BLOCK: tl.constexpr,
                 ONE_ROW: tl.constexpr, SPLIT: tl.constexpr, PDL: tl.constexpr):
    row0 = tl.program_id(0) * BLOCK_N
    # this program's K range: whole BLOCK_K tiles, the last range shorter (or, for a few K, empty: zeros stored)
    k_per = tl.cdiv(tl.cdiv(K, SPLIT), BLOCK_K) * BLOCK_K
    k_lo = tl.program_id(1) * k_per
    k_hi = tl.minimum(K, k_lo + k_per)
    if PDL:
        # No kernel writes the weights: this program's slice (its first PF_PER_ROW elements a row's worth) starts
        # on its way into L2 while the kernel before this one still runs; the loop below then reads it from there.
        rows = tl.minimum(N - row0, BLOCK_N)
        prefetch_l2(W + row0.to(tl.int64) * stride_wn, rows * PF_PER_ROW, 16)
        if SWIGLU:  # the up half's rows
            prefetch_l2(W + (N + row0).to(tl.int64) * stride_wn, rows * PF_PER_ROW, 16)
    begin(PDL)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = row0 + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    rstd = tl.zeros([BLOCK_M], dtype=tl.float32)
    if NORM:
        # RMSNorm statistics of each row first (one row at a time, NORM_BLOCK columns a load: a decode step's few
        # rows cost one or two wide loads each, from L2), then the loop normalises each tile as it loads it.
        offs = tl.arange(0, NORM_BLOCK)
        for m in range(0, M):
            ss = tl.zeros([NORM_BLOCK], dtype=tl.float32)
            for k0 in range(0, K, NORM_BLOCK):
                ok = k0 + offs < K
                v = tl.load(X + m * stride_xm + k0 + offs, mask=ok, other=0.0)
                if NORM == 2:
                    v = (v.to(tl.float32) + tl.load(R + m * stride_rm + k0 + offs, mask=ok, other=0.0)
                         .to(tl.float32)).to(v.dtype)
                v = v.to(tl.float32)
                ss += v * v
            rstd = tl.where(offs_m == m, 1.0 / tl.sqrt_rn(tl.sum(ss, 0) / K + eps), rstd)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < k_hi
        if ONE_ROW:
            # One row (batch-1 decode) with a norm: it runs on that row, which then fills the tile's rows (only
            # row 0 is stored). On the padded [BLOCK_M, BLOCK_K] tile the work was BLOCK_M rows' worth: 785 -> 445
            # instructions a thread per 16 x 256 tile in the sm_90 SASS (the tile's 8 KB of weights take ~710
            # cycles of an SM's share of the bandwidth).
            xr = _normed(X, R, NW, H, offs_k, k_ok, 0, 0, tl.sum(rstd, 0), NORM)  # rstd is 0 past row 0
            x = tl.broadcast_to(xr[None, :], (BLOCK_M, BLOCK_K))
        else:
            x = _normed(X, R, NW, H, offs_k[None, :], m_ok[:, None] & k_ok[None, :], offs_m[:, None] * stride_xm,
                        offs_m[:, None] * stride_rm, rstd[:, None], NORM)
        w_ok = n_ok[:, None] & k_ok[None, :]
        w = tl.load(W + offs_n[:, None] * stride_wn + offs_k[None, :], mask=w_ok, other=0.0)
        acc += tl.dot(x, tl.trans(w), input_precision=DOT)
        if SWIGLU:
            w_up = tl.load(W + (N + offs_n)[:, None] * stride_wn + offs_k[None, :], mask=w_ok, other=0.0)
            acc_up += tl.dot(x, tl.trans(w_up), input_precision=DOT)
    ok = m_ok[:, None] & n_ok[None, :]
    if SPLIT == 1:
        out = _finish(acc, acc_up, B, Y, offs_n[None, :], n_ok[None, :], N, HAS_BIAS, SWIGLU)
        tl.store(Y + offs_m[:, None] * stride_ym + offs_n[None, :], out, mask=ok)
    else:  # partials [halves, SPLIT, M, N] in fp32, for _gemv_reduce_kernel
        part = P + (tl.program_id(1) * M + offs_m[:, None]).to(tl.int64) * N + offs_n[None, :]
        tl.store(part, acc, mask=ok)
        if SWIGLU:
            tl.store(part + SPLIT * M * N, acc_up, mask=ok)


@triton.jit
def _gemv_reduce_kernel(P, B, Y, M, N, stride_ym, HAS_BIAS: tl.constexpr, SWIGLU: tl.constexpr,
                        SPLIT: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
    """Row program_id(1), BLOCK output columns: the SPLIT partial sums added in order, then _finish."""
    begin(PDL)
    m = tl.program_id(1)
    offs_n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    n_ok = offs_n < N
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK], dtype=tl.float32)
    for s in tl.static_range(SPLIT):
        part = P + (s * M + m).to(tl.int64) * N + offs_n
        acc += tl.load(part, mask=n_ok, other=0.0)
        if SWIGLU:
            acc_up += tl.load(part + SPLIT * M * N, mask=n_ok, other=0.0)
    tl.store(Y + m * stride_ym + offs_n, _finish(acc, acc_up, B, Y, offs_n, n_ok, N, HAS_BIAS, SWIGLU), mask=n_ok)


def _configs() -> list[triton.Config]:
    if _interpreting():  # the interpreter cannot autotune over several configs
        return [triton.Config({"BLOCK_N": 16, "BLOCK_K": 32}, num_warps=4, num_stages=1)]
    # Narrow column blocks give enough programs to fill the GPU when N is small (3072 columns: 192 programs of 16);
    # long K blocks and deep pipelines keep enough bytes in flight per program.
    # (16, 1024) in 8 warps was dropped: with SwiGLU fused into its prologue it spilled 10 KB a thread on sm_90.
    tiles = [(16, 256, 4, 4), (16, 512, 4, 3), (32, 256, 4, 4), (32, 512, 8, 3), (64, 256, 8, 3)]
    return [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s) for bn, bk, w, s in tiles]


def _fitting(configs: list[triton.Config], elem_bytes: int, swiglu: bool, norm: int,
             limit: int) -> list[triton.Config]:
    """The configs with as many pipeline stages as fit in `limit` bytes of shared memory: each stage holds a K
    tile of w (both halves with SwiGLU) and of the left operand (x, and the residual with NORM 2). Duplicates
    dropped."""
    out: dict[tuple, triton.Config] = {}
    for cfg in configs:
        bn, bk = cfg.kwargs["BLOCK_N"], cfg.kwargs["BLOCK_K"]
        stage = bk * elem_bytes * (bn * (2 if swiglu else 1) + BLOCK_M * (2 if norm == 2 else 1))
        stages = fitting_stages(cfg.num_stages, stage, limit)
        out.setdefault((bn, bk, cfg.num_warps, stages), triton.Config(cfg.kwargs, num_warps=cfg.num_warps,
                                                                       num_stages=stages))
    return list(out.values())


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:  # type: ignore
    """The autotuner's early_config_prune: the candidates, each as deep as fits for this call's operands."""
    x = named_args["X"]
    return _fitting(configs, x.element_size(), kwargs["SWIGLU"], kwargs["NORM"], shared_memory_limit(x.device))


_launcher = None


def _get_launcher():  # type: ignore[no-untyped-def]
    global _launcher
    if _launcher is None:
        _launcher = _gemv_kernel if _interpreting() else triton.autotune(
            configs=_configs(),
            key=["N", "K", "SWIGLU", "NORM", "ONE_ROW", "HAS_BIAS", "DOT", "SPLIT"],
            prune_configs_by={"early_config_prune": _prune},
            cache_results=True,  # the choice persists on disk (Triton's cache dir): a restart times nothing
        )(_gemv_kernel)
    return _launcher


def gemv_triton(x: Tensor, w: Tensor, bias: Tensor | None, swiglu: bool = False,
                norm: tuple[Tensor | None, Tensor, float] | None = None, split: int = 1
                ) -> Tensor | tuple[Tensor, Tensor]:
    """x [M, K], w [N, K] with unit K stride -> x @ w^T [M, N] in x's dtype; with swiglu, w = [gate; up] [2N, K]
    -> silu(x @ gate^T) * (x @ up^T) [M, N]. With norm=(residual [M, K] or None, norm_weight [K], eps) the product
    runs on rms_norm(residual + x) (or rms_norm(x)) and the pair (y, residual + x) is returned (x itself without a
    residual). split > 1: K shared out among that many programs per column block, their partial sums added by a
    second kernel (module docstring). Inputs are validated by the dispatcher."""
    x = x if x.stride(1) == 1 else x.contiguous()
    m, k = x.shape
    n = w.shape[0] // 2 if swiglu else w.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    r, nw, eps, h = x, w, 0.0, x
    if norm is not None:
        r, nw, eps = norm[0] if norm[0] is not None else x, norm[1], norm[2]
        r = r if r.stride(1) == 1 else r.contiguous()
        h = torch.empty_like(x) if norm[0] is not None else x
    if m == 0:
        return y if norm is None else (y, h)
    pdl = use_pdl(x)
    kwargs = dict(HAS_BIAS=bias is not None, SWIGLU=swiglu, NORM=0 if norm is None else 1 if norm[0] is None else 2,
                  DOT="ieee" if x.dtype == torch.float32 else "tf32", BLOCK_M=BLOCK_M,
                  NORM_BLOCK=min(triton.next_power_of_2(k), 4096), ONE_ROW=m == 1 and norm is not None,
                  SPLIT=split, PDL=pdl, launch_pdl=pdl)
    launcher = _get_launcher()

    def grid(meta):  # type: ignore[no-untyped-def]
        return (triton.cdiv(n, meta["BLOCK_N"]), split)

    # The prefetch takes each program's rows as one contiguous run of 16-byte aligned pieces: the start of the
    # rows, which split programs other than the first do not read.
    aligned = w.is_contiguous() and w.data_ptr() % 16 == 0 and k * w.element_size() % 16 == 0
    pf_per_row = min(k, L2_PREFETCH_BYTES // (w.shape[0] * w.element_size())) if pdl and aligned and split == 1 else 0
    partials = torch.empty((2 if swiglu else 1, split, m, n), dtype=torch.float32, device=x.device) if split > 1 \
        else y
    args = (x, w, bias if bias is not None else w, y, r, nw, h, partials, m, n, k, eps, x.stride(0), w.stride(0),
            y.stride(0), r.stride(0), pf_per_row)
    if _interpreting():
        cfg = _configs()[0]
        kwargs.update(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    else:
        precompile("gemv", ("gemv", x.dtype, n, k, *kwargs.values()), launcher,
                   lambda: _fitting(launcher.configs, x.element_size(), swiglu, kwargs["NORM"],
                                    shared_memory_limit(x.device)), grid, args, kwargs)
    launcher[grid](*args, **kwargs)
    if split > 1:
        block = 256 if _interpreting() else 1024
        _gemv_reduce_kernel[(triton.cdiv(n, block), m)](
            partials, bias if bias is not None else w, y, m, n, y.stride(0), HAS_BIAS=bias is not None,
            SWIGLU=swiglu, SPLIT=split, BLOCK=block, PDL=pdl, launch_pdl=pdl, num_warps=4)
    return y if norm is None else (y, h)


__all__ = ["BLOCK_M", "gemv_triton"]
