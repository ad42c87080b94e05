"""The prefill kernel's sqrt-ALiBi for far tiles (kernels._attention_triton: a cubic Taylor polynomial per row,
used where every key of a tile lies at least far_distance before every query, its non-constant part computed as a
small tensor-core dot) against sqrt in float64."""
from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from kernels._attention_triton import FAR_ERROR, _far_bias_powers, _far_bias_rows, far_distance  # noqa: E402


def _taylor(e: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sqrt(e - w) to third order in w, from the formula."""
    return e.sqrt() - w / (2 * e.sqrt()) - w ** 2 / (8 * e ** 1.5) - w ** 3 / (16 * e ** 2.5)


@pytest.mark.parametrize("block_n", [16, 32, 64, 128])
def test_far_distance_bounds_the_taylor_error(block_n: int) -> None:
    """Within FAR_ERROR for every key of every tile whose nearest key is at far_distance or beyond; and tight: a
    tile at half that distance exceeds it."""
    far = far_distance(block_n)
    h = (block_n - 1) / 2
    w = torch.arange(block_n, dtype=torch.float64)[None, :] - h
    e = torch.arange(far, far + 20000, 7, dtype=torch.float64)[:, None] + h  # row distance to the tile's centre
    assert (_taylor(e, w) - (e - w).sqrt()).abs().max().item() <= FAR_ERROR
    e = torch.tensor([[far / 2 + h]], dtype=torch.float64)
    assert (_taylor(e, w) - (e - w).sqrt()).abs().max().item() > FAR_ERROR


def _term_bounds(block_n: int) -> tuple[float, float, float]:
    """Largest |c1 w|, |c2 w^2|, |c3 w^3| per unit slope2 over far tiles: at |w| = h and the smallest row distance
    to the tile's centre, far_distance + h."""
    h = (block_n - 1) / 2
    e = far_distance(block_n) + h
    return 0.5 * h / e ** 0.5, 0.125 * h ** 2 / e ** 1.5, 0.0625 * h ** 3 / e ** 2.5


def _eps(dtype: torch.dtype, interpret: bool) -> float:
    """Relative error of one cast of a float32 into the dot's input dtype: half an ulp when rounding to nearest;
    the interpreter truncates to bfloat16 (a whole ulp)."""
    if dtype == torch.float32:
        return 0.0
    mantissa = {torch.float16: 10, torch.bfloat16: 7}[dtype]
    return 2.0 ** -mantissa if (interpret and dtype == torch.bfloat16) else 2.0 ** -(mantissa + 1)


def far_bias_error_bound(block_n: int, dtype: torch.dtype, scale_log2: float, interpret: bool) -> float:
    """Rounding error of the bias dot per unit slope2, in log2 units (module docstring): the split u coefficient
    (hi exact, lo within eps * eps of it) against the exact u row; the u^2, u^3 terms with one rounding in A and one
    in B each; float16 underflow in A of at most 2^-25 absolute in each of 4 columns, scaled back by scale_log2."""
    eps = _eps(dtype, interpret)
    t1, t2, t3 = _term_bounds(block_n)
    underflow = 4 * 2.0 ** -25 * scale_log2 if dtype == torch.float16 else 0.0
    return eps * eps * t1 + 2 * eps * (t2 + t3) + underflow


@triton.jit
def _probe(OUT, QK, SLOPE2, POS, start, scale_log2, DTYPE: tl.constexpr, DOT: tl.constexpr, BLOCK_M: tl.constexpr,
           BLOCK_N: tl.constexpr):
    """The log2-domain scores a far tile's exp2 sees (the kernel folds c0 into its shift instead of adding it)."""
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    qk = tl.load(QK + rows[:, None] * BLOCK_N + cols[None, :])
    b = _far_bias_powers(DTYPE, BLOCK_N)
    c0, a = _far_bias_rows(tl.load(SLOPE2 + rows), tl.load(POS + rows), start, scale_log2, DTYPE, BLOCK_N)
    s = tl.dot(a, b, qk, input_precision=DOT) * scale_log2 + c0[:, None]
    tl.store(OUT + rows[:, None] * BLOCK_N + cols[None, :], s)


TL_DTYPE = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}
SCALE_LOG2 = 64 ** -0.5 * 1.4426950408889634  # head dim 64


def _probe_case(dev: str, block_n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                     torch.Tensor]:
    """Rows from the nearest allowed (the tile's last key exactly far before) to 20k positions away, for a slope
    steeper than any ALiBi head's (1) and a shallow one; random dot products. Returns the kernel's scores, float64's,
    slope2 and |qk * scale_log2| (float64)."""
    start = 4096
    far = far_distance(block_n)
    pos = torch.tensor([start + block_n - 1 + far + d for d in (0, 1, 5, 100, 1000, 5000, 12000, 20000)] * 2,
                       dtype=torch.int32)
    slope2 = torch.tensor([1.4427] * 8 + [1.4427 * 2 ** -8] * 8, dtype=torch.float32)
    qk = torch.randn(16, block_n, generator=torch.Generator().manual_seed(block_n)) * 8
    out = torch.empty(16, block_n, dtype=torch.float32, device=dev)
    _probe[(1,)](out, qk.to(dev), slope2.to(dev), pos.to(dev), start, SCALE_LOG2, DTYPE=TL_DTYPE[dtype],
                 DOT="ieee" if dtype == torch.float32 else "tf32", BLOCK_M=16, BLOCK_N=block_n)
    keys = start + torch.arange(block_n, dtype=torch.float64)
    dot = qk.double() * SCALE_LOG2
    want = dot - slope2.double()[:, None] * (pos.double()[:, None] - keys[None, :]).sqrt()
    return out.double().cpu(), want, slope2.double()[:, None], dot.abs()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("block_n", [16, 64, 128])
def test_far_scores_equal_exact_sqrt_alibi(triton_modules, bf16_dot, block_n: int,
                                           dtype: torch.dtype) -> None:  # type: ignore[no-untyped-def]
    """Within slope2 * (FAR_ERROR + the bias dot's rounding bound) plus 2^-21 of |qk * scale_log2| + |bias| + 1: the
    float32 roundings of the dot product, of c0 and of the bias dot's part (below 1 in log2 units) on their way to
    the score, a few ulps each.

    The 16-bit cases fail with the u coefficient in one column (checked by breaking the kernel: bfloat16 exceeds
    this tolerance 12-28x, float16 5-11x); the last assertion keeps the rows steep and near enough for that."""
    got, want, slope2, dot = _probe_case(triton_modules.device, block_n, dtype)
    bound = far_bias_error_bound(block_n, dtype, SCALE_LOG2, triton_modules.interpret)
    tol = slope2 * (FAR_ERROR + bound) + (dot + (want - dot).abs() + 1) * 2.0 ** -21
    err = (got - want).abs()
    assert (err <= tol).all(), ((err - tol).max().item(), err.max().item())
    if dtype == torch.float32:  # as exact as the per-score polynomial was
        assert (err <= slope2 * FAR_ERROR + (dot + (want - dot).abs()) * 2.0 ** -21).all()
    else:  # one rounding (to nearest) of A's u coefficient, at the tile's end key (|u| = (block_n - 1) / block_n)
        far, h = far_distance(block_n), (block_n - 1) / 2
        e = torch.tensor([far + h + d for d in (0, 1, 5, 100)], dtype=torch.float64)
        a1 = 0.5 * slope2[0, 0] * (block_n // 2) / SCALE_LOG2 / e.sqrt()
        one_column = (a1.float().to(dtype).double() - a1).abs() * SCALE_LOG2 * (block_n - 1) / block_n
        assert (one_column > 2 * tol[:4, -1]).any(), (one_column, tol[:4, -1])
