"""kernels.lm_ops: the references against the eager decoder maths, the Triton kernels against the references
(natively on CUDA, under the interpreter in CI: see conftest.py)."""
from __future__ import annotations

import pytest
import torch

from kernels import lm_ops as L

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def test_reference_is_the_hf_rmsnorm_and_swiglu() -> None:
    x = torch.randn(5, 48, dtype=torch.float64).to(torch.bfloat16)
    w = (1 + 0.1 * torch.randn(48)).to(torch.bfloat16)
    var = x.float().pow(2).mean(-1, keepdim=True)
    want = w * (x.float() / torch.sqrt(var + 1e-5)).to(torch.bfloat16)
    torch.testing.assert_close(L.rms_norm_ref(x, w, 1e-5), want, rtol=0, atol=1e-2)
    r = torch.randn(5, 48).to(torch.bfloat16)
    out, h = L.add_rms_norm_ref(x, r, w, 1e-5)
    assert torch.equal(h, r + x) and torch.equal(out, L.rms_norm_ref(r + x, w, 1e-5))
    g = torch.randn(3, 64)
    torch.testing.assert_close(L.silu_and_mul_ref(g), g[:, :32] * torch.sigmoid(g[:, :32]) * g[:, 32:])


def test_dispatchers_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="weight must be"):
        L.rms_norm(torch.randn(2, 8), torch.ones(7), 1e-6)
    with pytest.raises(ValueError, match="residual must match"):
        L.add_rms_norm(torch.randn(2, 8), torch.randn(3, 8), torch.ones(8), 1e-6)
    with pytest.raises(ValueError, match="even"):
        L.silu_and_mul(torch.randn(2, 7))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows,dim", [(1, 48), (7, 96), (3, 200)])
def test_triton_rms_norm_and_add(triton_modules, dtype, rows, dim) -> None:
    dev = triton_modules.device
    x = torch.randn(rows, dim, device=dev).to(dtype)
    r = torch.randn(rows, dim, device=dev).to(dtype)
    w = (1 + 0.1 * torch.randn(dim, device=dev)).to(dtype)
    out, none = triton_modules.lm_ops.rms_norm_triton(x, None, w, 1e-6)
    assert none is None
    torch.testing.assert_close(out.float(), L.rms_norm_ref(x, w, 1e-6).float(), rtol=TOL[dtype], atol=TOL[dtype])
    out, h = triton_modules.lm_ops.rms_norm_triton(x, r, w, 1e-6)
    want_out, want_h = L.add_rms_norm_ref(x, r, w, 1e-6)
    assert torch.equal(h, want_h)
    torch.testing.assert_close(out.float(), want_out.float(), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows,inter", [(1, 40), (5, 128), (2, 5000)])
def test_triton_silu_and_mul(triton_modules, dtype, rows, inter) -> None:
    x = torch.randn(rows, 2 * inter, device=triton_modules.device).to(dtype)
    got = triton_modules.lm_ops.silu_and_mul_triton(x)
    torch.testing.assert_close(got.float(), L.silu_and_mul_ref(x).float(), rtol=0, atol=TOL[dtype] * 4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bf16_at_tts3b_width() -> None:
    x, r = torch.randn(2, 32, 3072, device="cuda", dtype=torch.bfloat16)
    w = (1 + 0.1 * torch.randn(3072, device="cuda")).to(torch.bfloat16)
    out, h = L.add_rms_norm(x, r, w, 1e-5)
    want_out, want_h = L.add_rms_norm_ref(x, r, w, 1e-5)
    assert torch.equal(h, want_h)
    # 1/sqrt_rn vs torch's rsqrt may move a bf16 rounding by one ulp (2^-8 relative): compare relatively
    torch.testing.assert_close(out.float(), want_out.float(), rtol=1e-2, atol=1e-3)
    g = torch.randn(32, 16384, device="cuda", dtype=torch.bfloat16)
    torch.testing.assert_close(L.silu_and_mul(g).float(), L.silu_and_mul_ref(g).float(), rtol=1e-2, atol=1e-3)
