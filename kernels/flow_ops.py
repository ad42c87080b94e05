"""Fused ops of the CosyVoice flow estimator (a 1-D U-Net with transformer blocks, run 10 times per window under a
CUDA graph): LayerNorm after the residual add, GroupNorm + Mish (+ the add that follows it), and the transformer
blocks' linear layers with what follows them (GELU; the residual add and the next LayerNorm).

A first streaming window is launch-bound. Each transformer block did add, LayerNorm twice over; each ResNet half did
GroupNorm, Mish and an add, after a convolution whose bias torch adds in a kernel of its own on CUDA. These ops make
each of those groups one launch. Counted with bench/flow_kernel_count.py (CPU, CosyVoice-300M dims, a first window
of 125 + 25 tokens, T = 516, CFG batch 2, 10 Euler steps; aten ops that launch a kernel, a convolution's bias as
one more, a fused op as one), together with the time conditioning computed once per window
(speech_decoder.flow.flow): 9,473 launches per window before (909 per estimator call), 6,785 after (638).
On CUDA GroupNorm alone is more than one kernel, so the kernel count falls by more than that.
The linear ops then take a transformer block from 8 launches to 5: its output projection and its second
feed-forward projection each end in the residual add and the LayerNorm after it (a row of the estimator is 256 wide,
one tile: the GEMM's epilogue holds whole rows; the last block of a stack has no LayerNorm after it: the add
alone), its first feed-forward projection in the GELU: 4,865 launches per window (446 per estimator call). The
GEMMs are Triton's then, not cuBLAS's: at a window's sizes (~1000 rows, 256-1024 wide) either is a few microseconds
and a launch saved is worth more (bench.kernels times both ways).
Each op: `<op>_ref` (PyTorch, fp32 statistics: the spec), Triton kernel (kernels._flow_ops_triton), dispatcher
`<op>` (CUDA or the interpreter -> Triton, otherwise the reference).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels._dispatch import triton_module

_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


def _triton_for(t: Tensor):  # -> kernels._flow_ops_triton | None
    return triton_module("_flow_ops_triton", t)


def add_layer_norm_ref(x: Tensor, residual: Tensor, weight: Tensor, bias: Tensor,
                       eps: float) -> tuple[Tensor, Tensor]:
    """(layer_norm(residual + x), residual + x) over the last dim. The sum is rounded to x.dtype (as `residual + x`
    is in torch), the statistics and affine map run in fp32, the output is rounded once to x.dtype."""
    h = residual + x
    out = F.layer_norm(h.float(), (h.shape[-1],), weight.float(), bias.float(), eps)
    return out.to(x.dtype), h


def group_norm_mish_ref(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float,
                        add: Tensor | None = None, *, x_bias: Tensor | None = None,
                        add_bias: Tensor | None = None) -> Tensor:
    """mish(group_norm(x + x_bias)) (+ add + add_bias) for x [B, C, T], in fp32, rounded once to x.dtype. add
    broadcasts to x: [B or 1, C, 1] (a per-channel time term) or [B, C, T] (a residual branch). x_bias / add_bias
    [C]: the biases of the convolutions that produced x and add, added here (each sum rounded to x.dtype first, as
    the convolution's own bias add is) so that the convolutions run without theirs: on CUDA a convolution's bias
    is a kernel of its own."""
    if x_bias is not None:
        x = x + x_bias[:, None]
    y = F.mish(F.group_norm(x.float(), groups, weight.float(), bias.float(), eps))
    if add is not None:
        y = y + (add if add_bias is None else add + add_bias[:, None]).float()
    return y.to(x.dtype)


def linear_gelu_ref(x: Tensor, weight: Tensor, bias: Tensor | None, approximate: str = "none") -> Tensor:
    """gelu(x @ weight^T + bias): a feed-forward's first projection and its activation. The product is rounded to
    x.dtype before the GELU, as F.gelu(F.linear(...)) rounds it."""
    return F.gelu(F.linear(x, weight, bias), approximate=approximate)


def linear_add_ref(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor) -> Tensor:
    """residual + (x @ weight^T + bias): a projection added into the residual stream (the product rounded to x.dtype
    first, as F.linear's output is)."""
    return residual + F.linear(x, weight, bias)


def linear_add_layer_norm_ref(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor,
                              ln_weight: Tensor, ln_bias: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """add_layer_norm_ref(x @ weight^T + bias, residual, ...): a projection back into the residual stream, the add
    and the LayerNorm after it. Returns (the normalised stream, the stream)."""
    return add_layer_norm_ref(F.linear(x, weight, bias), residual, ln_weight, ln_bias, eps)


def _check(name: str, x: Tensor, *others: Tensor) -> None:
    if x.dtype not in _FLOATS:
        raise ValueError(f"{name}: x must be float16, bfloat16 or float32, got {x.dtype}")
    for t in others:
        if t.device != x.device:
            raise ValueError(f"{name}: all tensors must be on one device, got {t.device} and {x.device}")


def _check_linear(name: str, x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    _check(name, x, weight, *(() if bias is None else (bias,)))
    k = x.shape[-1] if x.dim() else -1
    if x.dim() < 1 or weight.dim() != 2 or weight.shape[1] != k or weight.dtype != x.dtype:
        raise ValueError(f"{name}: weight must be [N, {k}] {x.dtype} for x {tuple(x.shape)}, "
                         f"got {tuple(weight.shape)} {weight.dtype}")
    if bias is not None and (bias.shape != (weight.shape[0],) or bias.dtype != x.dtype):
        raise ValueError(f"{name}: bias must be [{weight.shape[0]}] {x.dtype}, got {tuple(bias.shape)} {bias.dtype}")


def linear_gelu(x: Tensor, weight: Tensor, bias: Tensor | None, approximate: str = "none") -> Tensor:
    """gelu(x @ weight^T + bias) in one launch (see linear_gelu_ref). x [..., K], weight [N, K], bias [N] or None;
    approximate: "none" (erf) or "tanh", as F.gelu."""
    _check_linear("linear_gelu", x, weight, bias)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"linear_gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    tri = _triton_for(x)
    if tri is None:
        return linear_gelu_ref(x, weight, bias, approximate)
    y = tri.linear_triton(x.reshape(-1, x.shape[-1]), weight, bias, gelu=approximate)
    return y.view(*x.shape[:-1], weight.shape[0])


def _check_residual(name: str, x: Tensor, weight: Tensor, residual: Tensor) -> None:
    want = (*x.shape[:-1], weight.shape[0])
    if residual.shape != want or residual.dtype != x.dtype or residual.device != x.device:
        raise ValueError(f"{name}: residual must be {want} {x.dtype}, got {tuple(residual.shape)} {residual.dtype}")


def linear_add(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor) -> Tensor:
    """residual + (x @ weight^T + bias) in one launch (see linear_add_ref). x [..., K], weight [N, K], bias [N] or
    None, residual [..., N]."""
    _check_linear("linear_add", x, weight, bias)
    _check_residual("linear_add", x, weight, residual)
    tri = _triton_for(x)
    if tri is None:
        return linear_add_ref(x, weight, bias, residual)
    n = weight.shape[0]
    return tri.linear_triton(x.reshape(-1, x.shape[-1]), weight, bias, residual=residual.reshape(-1, n)).view(
        residual.shape)


def linear_add_layer_norm(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor, ln_weight: Tensor,
                          ln_bias: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(layer_norm(residual + x @ weight^T + bias), residual + x @ weight^T + bias) in one launch while the output
    width N fits one tile and K is short (see linear_add_layer_norm_ref and _flow_ops_triton.MAX_NORM_K; else the
    product, then add_layer_norm). x [..., K], weight [N, K], bias [N] or None, residual [..., N], ln_weight and
    ln_bias [N]."""
    _check_linear("linear_add_layer_norm", x, weight, bias)
    _check_residual("linear_add_layer_norm", x, weight, residual)
    n = weight.shape[0]
    if ln_weight.shape != (n,) or ln_bias.shape != (n,):
        raise ValueError(f"linear_add_layer_norm: ln_weight and ln_bias must be [{n}], "
                         f"got {tuple(ln_weight.shape)}, {tuple(ln_bias.shape)}")
    _check("linear_add_layer_norm", x, ln_weight, ln_bias)
    tri = _triton_for(x)
    if tri is None or n > tri.MAX_NORM_WIDTH or (x.is_cuda and weight.shape[1] > tri.MAX_NORM_K):
        return add_layer_norm(F.linear(x, weight, bias), residual, ln_weight, ln_bias, eps)
    out, h = tri.linear_triton(x.reshape(-1, x.shape[-1]), weight, bias, residual=residual.reshape(-1, n),
                               norm=(ln_weight, ln_bias, eps))
    return out.view(residual.shape), h.view(residual.shape)


def add_layer_norm(x: Tensor, residual: Tensor, weight: Tensor, bias: Tensor,
                   eps: float) -> tuple[Tensor, Tensor]:
    """(layer_norm(residual + x), residual + x) in one pass (see add_layer_norm_ref). x, residual [..., D];
    weight, bias [D]."""
    _check("add_layer_norm", x, residual, weight, bias)
    d = x.shape[-1] if x.dim() else 0
    if x.dim() < 1 or residual.shape != x.shape or residual.dtype != x.dtype:
        raise ValueError(f"add_layer_norm: residual must match x {tuple(x.shape)} {x.dtype}, "
                         f"got {tuple(residual.shape)} {residual.dtype}")
    if weight.shape != (d,) or bias.shape != (d,):
        raise ValueError(f"add_layer_norm: weight and bias must be [{d}], "
                         f"got {tuple(weight.shape)}, {tuple(bias.shape)}")
    tri = _triton_for(x)
    if tri is None:
        return add_layer_norm_ref(x, residual, weight, bias, eps)
    out, h = tri.add_layer_norm_triton(x.reshape(-1, d), residual.reshape(-1, d), weight, bias, eps)
    return out.view(x.shape), h.view(x.shape)


def group_norm_mish(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float,
                    add: Tensor | None = None, *, x_bias: Tensor | None = None,
                    add_bias: Tensor | None = None) -> Tensor:
    """mish(group_norm(x + x_bias)) (+ add + add_bias) in one launch (see group_norm_mish_ref). x [B, C, T];
    weight, bias, x_bias, add_bias [C]; add [B or 1, C, 1 or T] in x's dtype."""
    extra = tuple(t for t in (add, x_bias, add_bias) if t is not None)
    _check("group_norm_mish", x, weight, bias, *extra)
    if x.dim() != 3 or groups < 1 or x.shape[1] % groups:
        raise ValueError(f"group_norm_mish: x must be [B, C, T] with C divisible by groups={groups}, "
                         f"got {tuple(x.shape)}")
    b, c, t = x.shape
    if weight.shape != (c,) or bias.shape != (c,):
        raise ValueError(f"group_norm_mish: weight and bias must be [{c}], "
                         f"got {tuple(weight.shape)}, {tuple(bias.shape)}")
    if add is not None and (add.dim() != 3 or add.shape[0] not in (1, b) or add.shape[1] != c
                            or add.shape[2] not in (1, t) or add.dtype != x.dtype):
        raise ValueError(f"group_norm_mish: add must be [1 or {b}, {c}, 1 or {t}] {x.dtype}, "
                         f"got {tuple(add.shape)} {add.dtype}")
    for name, v in (("x_bias", x_bias), ("add_bias", add_bias)):
        if v is not None and (v.shape != (c,) or v.dtype != x.dtype):
            raise ValueError(f"group_norm_mish: {name} must be [{c}] {x.dtype}, got {tuple(v.shape)} {v.dtype}")
    if add_bias is not None and add is None:
        raise ValueError("group_norm_mish: add_bias needs add")
    tri = _triton_for(x)
    if tri is None:
        return group_norm_mish_ref(x, weight, bias, groups, eps, add, x_bias=x_bias, add_bias=add_bias)
    return tri.group_norm_mish_triton(x, weight, bias, groups, eps, None if add is None else add.expand(b, c, t),
                                      x_bias, add_bias)
