"""kernels.gemv: the references against float64 maths, the Triton kernel against them (natively on CUDA, under the
interpreter in CI: see conftest.py), the dispatcher's routing and, on a GPU, its timed choice."""
from __future__ import annotations

import os

import pytest
import torch

from kernels import gemv as G

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def test_references_are_the_linear_and_swiglu_maths() -> None:
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(3, 40, generator=g), torch.randn(24, 20, generator=g), torch.randn(24, generator=g)
    gate, up = x[:, :20].double(), x[:, 20:].double()
    want = (gate * torch.sigmoid(gate) * up) @ w.double().T + b.double()
    torch.testing.assert_close(G.swiglu_gemv_ref(x, w, b).double(), want, rtol=0, atol=1e-5)
    torch.testing.assert_close(G.gemv_ref(x[:, :20], w, b).double(), gate @ w.double().T + b.double(),
                               rtol=0, atol=1e-5)


def test_dispatchers_reject_bad_inputs() -> None:
    x, w = torch.randn(2, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="do not fit"):
        G.gemv(torch.randn(2, 7), w)
    with pytest.raises(ValueError, match="do not fit"):
        G.swiglu_gemv(x, w)  # [gate | up] must be twice K wide
    with pytest.raises(ValueError, match="bias must be"):
        G.gemv(x, w, torch.randn(3))
    with pytest.raises(ValueError, match="one float dtype"):
        G.gemv(x.half(), w)
    with pytest.raises(ValueError, match="must be \\[M, K\\]"):
        G.gemv(x[None], w)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter routes CPU calls to the kernel")
def test_cpu_calls_are_the_torch_ops() -> None:
    """Without CUDA (and outside the interpreter) the dispatchers are the unfused torch ops, bit for bit."""
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(5, 64, generator=g), torch.randn(12, 32, generator=g)
    assert torch.equal(G.swiglu_gemv(x, w), torch.nn.functional.linear(G.silu_and_mul_ref(x), w))
    assert torch.equal(G.gemv(x[:, :32], w), torch.nn.functional.linear(x[:, :32], w))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows,n,k", [(1, 16, 32), (3, 40, 48), (16, 100, 96)])
@pytest.mark.parametrize("bias", [False, True])
def test_triton_gemv(triton_modules, dtype, rows, n, k, bias) -> None:  # type: ignore[no-untyped-def]
    """Partial column and K blocks (40 of 16-wide, 48 of 32-deep), 1 to 16 rows, with and without bias and SwiGLU."""
    dev = triton_modules.device
    g = torch.Generator().manual_seed(rows * n + k)
    x = (torch.randn(rows, 2 * k, generator=g) / 2).to(dtype).to(dev)
    w = (torch.randn(n, k, generator=g) / k ** 0.5).to(dtype).to(dev)
    b = torch.randn(n, generator=g).to(dtype).to(dev) if bias else None
    got = triton_modules.gemv.gemv_triton(x[:, :k], w, b, False)
    torch.testing.assert_close(got.float(), G.gemv_ref(x[:, :k].float(), w.float(), None if b is None else b.float()),
                               rtol=0, atol=TOL[dtype] * 4)
    got = triton_modules.gemv.gemv_triton(x, w, b, True)
    want = G.swiglu_gemv_ref(x.float(), w.float(), None if b is None else b.float())
    if dtype != torch.float32:  # the activation is rounded to the model dtype before the product, as in torch
        want = G.gemv_ref(G.silu_and_mul_ref(x).float(), w.float(), None if b is None else b.float())
    torch.testing.assert_close(got.float(), want, rtol=0, atol=TOL[dtype] * 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows,n,k", [(1, 16, 32), (3, 40, 48), (16, 24, 5000)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_triton_gemv_with_the_rms_norm_before_it(triton_modules, dtype, rows, n, k,  # type: ignore[no-untyped-def]
                                                 with_residual) -> None:
    """The residual add and RMSNorm in the product's prologue: 1 to 16 rows, K past one statistics block (5000 >
    4096 columns), the residual stream returned (written by one program of several)."""
    dev = triton_modules.device
    g = torch.Generator().manual_seed(rows + n + k)
    x = (3 * torch.randn(rows, k, generator=g)).to(dtype).to(dev)
    r = (torch.randn(rows, k, generator=g) + 1).to(dtype).to(dev) if with_residual else None
    nw = (1 + 0.3 * torch.randn(k, generator=g)).to(dtype).to(dev)
    w = (torch.randn(n, k, generator=g) / k ** 0.5).to(dtype).to(dev)
    b = torch.randn(n, generator=g).to(dtype).to(dev)
    got, h = triton_modules.gemv.gemv_triton(x, w, b, False, norm=(r, nw, 1e-5))
    want, want_h = G.rms_norm_gemv_ref(x, r, nw, 1e-5, w, b)
    assert torch.equal(h, want_h)
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=TOL[dtype] * 4)


def test_rms_norm_gemv_checks_and_cpu_route() -> None:
    x, r, nw, w = torch.randn(2, 8), torch.randn(2, 8), torch.ones(8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="residual must match"):
        G.rms_norm_gemv(x, r[:1], nw, 1e-5, w)
    with pytest.raises(ValueError, match=r"norm_weight must be \[8\]"):
        G.rms_norm_gemv(x, r, nw[:4], 1e-5, w)
    if os.environ.get("TRITON_INTERPRET") != "1":  # on the CPU: the unfused torch ops, bit for bit
        y, h = G.rms_norm_gemv(x, r, nw, 1e-5, w)
        assert torch.equal(h, r + x) and torch.equal(y, torch.nn.functional.linear(G.rms_norm_ref(r + x, nw, 1e-5), w))


def test_triton_gemv_reads_strided_rows(triton_modules) -> None:  # type: ignore[no-untyped-def]
    """x as a column slice of a wider tensor (a fused projection's output): rows strided, columns contiguous."""
    dev = triton_modules.device
    wide = torch.randn(4, 80).to(dev)
    w = torch.randn(24, 32).to(dev)
    torch.testing.assert_close(triton_modules.gemv.gemv_triton(wide[:, 8:40], w, None, False),
                               G.gemv_ref(wide[:, 8:40], w), rtol=0, atol=1e-4)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@gpu
def test_gpu_dispatcher_times_both_and_keeps_the_faster() -> None:
    """TTS-3B's down projection at batch 1 in bf16: the dispatcher's result matches the reference whichever
    implementation won, the choice is recorded once per shape, and a shape first met inside a CUDA-graph capture
    runs on cuBLAS (timing cannot run there) and is not recorded."""
    x = torch.randn(1, 2 * 8192, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(3072, 8192, device="cuda", dtype=torch.bfloat16) / 90
    G.timings.clear()
    got = G.swiglu_gemv(x, w)
    torch.testing.assert_close(got.float(), G.swiglu_gemv_ref(x, w).float(), rtol=0, atol=3e-2)
    assert list(G.timings) == [(x.device, torch.bfloat16, 1, 3072, 8192, False, "swiglu")]
    y = torch.randn(2, 3072, device="cuda", dtype=torch.bfloat16)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = G.gemv(y, w[:, :3072].contiguous())
    graph.replay()
    torch.cuda.synchronize()
    assert len(G.timings) == 1
    torch.testing.assert_close(out.float(), G.gemv_ref(y, w[:, :3072]).float(), rtol=0, atol=3e-2)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("n,k", [(3584, 3072), (1000, 3070)])
def test_gpu_gemv_with_its_l2_prefetch(n: int, k: int) -> None:
    """The Triton GEMV as a decode step launches it on sm_90 (PDL, weights prefetched into L2 before the wait; rows
    of 3070 bf16 are not 16-byte multiples, so that one prefetches nothing) equals the reference."""
    from kernels import _gemv_triton as T

    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / 60
    torch.testing.assert_close(T.gemv_triton(x, w, None, False).float(), G.gemv_ref(x, w).float(), rtol=0, atol=3e-2)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("rows", [1, 8])
def test_gpu_rms_norm_gemv_at_tts3b_dims(rows: int) -> None:
    """The q/k/v projection of a TTS-3B decode step with the residual add and RMSNorm in its prologue (as the GPU
    launches it: PDL, L2 prefetch), and through the dispatcher (whichever it picks), against the reference."""
    from kernels import _gemv_triton as T

    g = torch.Generator().manual_seed(rows)
    x, r = (torch.randn(rows, 3072, generator=g).to("cuda", torch.bfloat16) for _ in range(2))
    nw = (1 + 0.2 * torch.randn(3072, generator=g)).to("cuda", torch.bfloat16)
    w = (torch.randn(3584, 3072, generator=g) / 60).to("cuda", torch.bfloat16)
    want, want_h = G.rms_norm_gemv_ref(x, r, nw, 1e-5, w)
    for y, h in (T.gemv_triton(x, w, None, False, norm=(r, nw, 1e-5)), G.rms_norm_gemv(x, r, nw, 1e-5, w)):
        assert torch.equal(h, want_h)
        torch.testing.assert_close(y.float(), want.float(), rtol=0, atol=3e-2)
