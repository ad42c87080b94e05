"""The prefill kernel's sqrt-ALiBi for far tiles (kernels._attention_triton: a cubic Taylor polynomial per row,
used where every key of a tile lies at least far_distance before every query) against sqrt in float64."""
from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from kernels._attention_triton import FAR_ERROR, _far_sqrt_alibi_scores, far_distance  # noqa: E402


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


@triton.jit
def _probe(OUT, SLOPE2, POS, start, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    qk = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    s = _far_sqrt_alibi_scores(qk, tl.load(SLOPE2 + rows), tl.load(POS + rows), start, 1.0, BLOCK_N)
    tl.store(OUT + rows[:, None] * BLOCK_N + cols[None, :], s)


@pytest.mark.parametrize("block_n", [16, 64])
def test_far_scores_equal_exact_sqrt_alibi(triton_modules, block_n: int) -> None:  # type: ignore[no-untyped-def]
    """-slope2 * sqrt(pos - key) over a tile at far_distance and far beyond it, for steep and shallow slopes:
    within FAR_ERROR * slope2 plus float32 rounding of the value."""
    dev = triton_modules.device
    start = 4096
    far = far_distance(block_n)
    # rows from the nearest allowed (the tile's last key exactly far before) to 20k positions away
    pos = torch.tensor([start + block_n - 1 + far + d for d in (0, 1, 5, 100, 1000, 5000, 12000, 20000)] * 2,
                       dtype=torch.int32)
    slope2 = torch.tensor([1.4427] * 8 + [1.4427 * 2 ** -8] * 8, dtype=torch.float32)
    out = torch.empty(16, block_n, dtype=torch.float32, device=dev)
    _probe[(1,)](out, slope2.to(dev), pos.to(dev), start, BLOCK_M=16, BLOCK_N=block_n)
    keys = start + torch.arange(block_n, dtype=torch.float64)
    want = -slope2.double()[:, None] * (pos.double()[:, None] - keys[None, :]).sqrt()
    tol = FAR_ERROR * slope2.double()[:, None] + want.abs() * 2.0 ** -22
    assert ((out.double().cpu() - want).abs() <= tol).all(), (out.double().cpu() - want).abs().max()
