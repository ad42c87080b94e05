"""kernels.flow_ops: the references against torch's nn.LayerNorm / nn.GroupNorm + nn.Mish compositions, the Triton
kernels against the references (natively on CUDA, under the interpreter in CI: see conftest.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from kernels import flow_ops as FO

TOL = {torch.float32: 2e-5, torch.float16: 2e-3}


def _affine(n: int, dtype: torch.dtype, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return ((1 + 0.2 * torch.randn(n, generator=g)).to(device, dtype),
            (0.3 * torch.randn(n, generator=g)).to(device, dtype))


def test_add_layer_norm_ref_is_the_residual_add_then_nn_layernorm() -> None:
    ln = nn.LayerNorm(40)
    ln.weight.data, ln.bias.data = _affine(40, torch.float32)
    x, r = torch.randn(2, 7, 40), torch.randn(2, 7, 40)
    out, h = FO.add_layer_norm_ref(x, r, ln.weight, ln.bias, ln.eps)
    assert torch.equal(h, r + x) and torch.equal(out, ln(r + x))
    # bf16: the sum rounds like `r + x` in bf16; the output is within one bf16 rounding of the exact norm
    xb, rb = x.bfloat16(), r.bfloat16()
    out, h = FO.add_layer_norm_ref(xb, rb, ln.weight.bfloat16(), ln.bias.bfloat16(), ln.eps)
    assert h.dtype == out.dtype == torch.bfloat16 and torch.equal(h, rb + xb)
    want = nn.functional.layer_norm(h.double(), (40,), ln.weight.bfloat16().double(), ln.bias.bfloat16().double())
    torch.testing.assert_close(out.double(), want, rtol=2 ** -8, atol=1e-6)


@pytest.mark.parametrize("add_shape", [None, "time", "full"])
def test_group_norm_mish_ref_is_nn_groupnorm_then_mish_then_add(add_shape) -> None:
    gn = nn.GroupNorm(4, 24)
    gn.weight.data, gn.bias.data = _affine(24, torch.float32)
    x = 3 * torch.randn(3, 24, 11) + 1
    add = {None: None, "time": torch.randn(3, 24, 1), "full": torch.randn(3, 24, 11)}[add_shape]
    want = nn.Mish()(gn(x)) + (0 if add is None else add)
    assert torch.equal(FO.group_norm_mish_ref(x, gn.weight, gn.bias, 4, gn.eps, add), want)
    got = FO.group_norm_mish_ref(x.bfloat16(), gn.weight.bfloat16(), gn.bias.bfloat16(), 4, gn.eps,
                                 None if add is None else add.bfloat16())
    exact = (nn.Mish()(nn.functional.group_norm(x.bfloat16().double(), 4, gn.weight.bfloat16().double(),
                                                gn.bias.bfloat16().double(), gn.eps))
             + (0 if add is None else add.bfloat16().double()))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), exact, rtol=2 ** -8, atol=1e-6)


def test_dispatchers_reject_bad_inputs() -> None:
    w, b = torch.ones(8), torch.zeros(8)
    with pytest.raises(ValueError, match="residual must match"):
        FO.add_layer_norm(torch.randn(2, 8), torch.randn(3, 8), w, b, 1e-5)
    with pytest.raises(ValueError, match="weight and bias must be"):
        FO.add_layer_norm(torch.randn(2, 8), torch.randn(2, 8), torch.ones(7), b, 1e-5)
    with pytest.raises(ValueError, match="float16, bfloat16 or float32"):
        FO.add_layer_norm(torch.ones(2, 8, dtype=torch.int32), torch.ones(2, 8, dtype=torch.int32), w, b, 1e-5)
    with pytest.raises(ValueError, match="divisible by groups"):
        FO.group_norm_mish(torch.randn(2, 8, 5), w, b, 3, 1e-5)
    with pytest.raises(ValueError, match=r"must be \[B, C, T\]"):
        FO.group_norm_mish(torch.randn(8, 5), w, b, 2, 1e-5)
    with pytest.raises(ValueError, match="weight and bias must be"):
        FO.group_norm_mish(torch.randn(2, 8, 5), torch.ones(4), b, 2, 1e-5)
    for bad in (torch.randn(2, 8, 3), torch.randn(3, 8, 1), torch.randn(2, 8, 5, dtype=torch.float64)):
        with pytest.raises(ValueError, match="add must be"):
            FO.group_norm_mish(torch.randn(2, 8, 5), w, b, 2, 1e-5, bad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows,dim", [(1, 40), (7, 96), (300, 200)])
def test_triton_add_layer_norm(triton_modules, dtype, rows, dim) -> None:
    dev = triton_modules.device
    x = torch.randn(rows, dim, device=dev).to(dtype)
    r = (2 * torch.randn(rows, dim, device=dev) + 1).to(dtype)
    w, b = _affine(dim, dtype, dev)
    out, h = triton_modules.flow_ops.add_layer_norm_triton(x, r, w, b, 1e-5)
    want_out, want_h = FO.add_layer_norm_ref(x, r, w, b, 1e-5)
    assert torch.equal(h, want_h)
    torch.testing.assert_close(out.float(), want_out.float(), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("b,c,groups,t", [(1, 24, 8, 1), (3, 24, 8, 7), (3, 40, 8, 300), (1, 6, 1, 300),
                                          (1, 64, 1, 600)])
@pytest.mark.parametrize("add_shape", [None, "time", "time_one", "full"])
def test_triton_group_norm_mish(triton_modules, dtype, b, c, groups, t, add_shape) -> None:
    dev = triton_modules.device
    x = (4 * torch.randn(b, c, t, device=dev) + 2).to(dtype)  # large values reach mish's y > 20 branch
    w, bias = _affine(c, dtype, dev)
    add = {None: None, "time": torch.randn(b, c, 1), "time_one": torch.randn(1, c, 1),
           "full": torch.randn(b, c, t)}[add_shape]
    add = None if add is None else add.to(dev, dtype)
    got = triton_modules.flow_ops.group_norm_mish_triton(x, w, bias, groups, 1e-5,
                                                         None if add is None else add.expand(b, c, t))
    want = FO.group_norm_mish_ref(x, w, bias, groups, 1e-5, add)
    torch.testing.assert_close(got.float(), want.float(), rtol=TOL[dtype], atol=TOL[dtype])


def test_ref_folds_the_convolution_biases() -> None:
    """x_bias / add_bias: the convolutions that make x and add run without their biases, added here instead."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 16, 30, generator=g)
    conv, res, gn = torch.nn.Conv1d(16, 24, 3, padding=1), torch.nn.Conv1d(16, 24, 1), torch.nn.GroupNorm(8, 24)
    with torch.no_grad():
        gn.weight.normal_(), gn.bias.normal_()
        want = torch.nn.functional.mish(gn(conv(x))) + res(x)
        got = FO.group_norm_mish_ref(torch.nn.functional.conv1d(x, conv.weight, None, padding=1), gn.weight,
                                     gn.bias, 8, gn.eps, torch.nn.functional.conv1d(x, res.weight),
                                     x_bias=conv.bias, add_bias=res.bias)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="add_bias needs add"):
        FO.group_norm_mish(x[:, :8], gn.weight[:8], gn.bias[:8], 4, 1e-5, add_bias=conv.bias[:8])
    with pytest.raises(ValueError, match="x_bias must be"):
        FO.group_norm_mish(x[:, :8], gn.weight[:8], gn.bias[:8], 4, 1e-5, x_bias=conv.bias)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("b,c,groups,t", [(2, 24, 8, 50), (1, 64, 1, 600)])  # one tile; several
def test_triton_group_norm_mish_folds_conv_biases(triton_modules, dtype, b, c, groups, t) -> None:  # type: ignore[no-untyped-def]
    dev = triton_modules.device
    x = (2 * torch.randn(b, c, t, device=dev)).to(dtype)
    add = torch.randn(b, c, t, device=dev).to(dtype)
    w, bias = _affine(c, dtype, dev)
    xb, ab = (torch.randn(c, device=dev).to(dtype) for _ in range(2))
    got = triton_modules.flow_ops.group_norm_mish_triton(x, w, bias, groups, 1e-5, add, xb, ab)
    want = FO.group_norm_mish_ref(x, w, bias, groups, 1e-5, add, x_bias=xb, add_bias=ab)
    torch.testing.assert_close(got.float(), want.float(), rtol=TOL[dtype], atol=TOL[dtype])


def test_triton_group_norm_mish_reads_strided_input(triton_modules) -> None:
    """The estimator hands over conv outputs; a transposed view must be read through its strides."""
    dev = triton_modules.device
    x = torch.randn(2, 9, 16, device=dev).transpose(1, 2)  # [2, 16, 9], channel stride 1
    w, b = _affine(16, torch.float32, dev)
    got = triton_modules.flow_ops.group_norm_mish_triton(x, w, b, 4, 1e-5, None)
    torch.testing.assert_close(got, FO.group_norm_mish_ref(x, w, b, 4, 1e-5), rtol=TOL[torch.float32],
                               atol=TOL[torch.float32])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bf16_at_flow_dims_and_under_a_cuda_graph() -> None:
    x = torch.randn(2, 256, 516, device="cuda", dtype=torch.bfloat16)
    term = torch.randn(1, 256, 1, device="cuda", dtype=torch.bfloat16)
    w, b = _affine(256, torch.bfloat16, "cuda")
    rows, r = x.transpose(1, 2).contiguous(), torch.randn(2, 516, 256, device="cuda", dtype=torch.bfloat16)
    FO.group_norm_mish(x, w, b, 8, 1e-5, term), FO.add_layer_norm(rows, r, w, b, 1e-5)  # compile outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        gn = FO.group_norm_mish(x, w, b, 8, 1e-5, term)
        ln, h = FO.add_layer_norm(rows, r, w, b, 1e-5)
    graph.replay()
    torch.testing.assert_close(gn.float(), FO.group_norm_mish_ref(x, w, b, 8, 1e-5, term).float(),
                               rtol=1e-2, atol=2e-2)
    want_ln, want_h = FO.add_layer_norm_ref(rows, r, w, b, 1e-5)
    assert torch.equal(h, want_h)
    torch.testing.assert_close(ln.float(), want_ln.float(), rtol=1e-2, atol=2e-2)
