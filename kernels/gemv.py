"""Linear layers for the few rows of a decode step: y = x @ w^T (+ bias), and the same after SwiGLU's activation.

At batch 1 a decode step streams every weight of the model once (TTS-3B: 7 GB, 2.35 ms at an H100's copy bandwidth;
run3 measured 3.64 ms a step), so how close each matrix-vector product comes to the bandwidth is most of a step's
time. A Triton kernel (kernels._gemv_triton, autotuned tiles) competes with cuBLAS: the first time a shape is met
outside a CUDA-graph capture, both are timed on the device (triton.testing.do_bench, L2 flushed between runs, so
weights that would fit in the 50 MB L2 are not timed from it) and the faster one serves that shape from then on.
Each is timed right after an RMSNorm kernel, as it runs in a decode step, less that kernel's own time: on sm_90 our
kernel starts during the one before it (kernels.launch) and asks L2 for its weights meanwhile, which a GEMV timed
alone would not show.
A capture uses the choice its warm-up run made; a shape first met inside a capture runs on cuBLAS; an engine without
CUDA graphs (enforce_eager) times a shape when a step first needs it (tens of ms, once). The kernel serves
only the shapes where it measured faster than cuBLAS on this device; its fused form also saves the activation's
own launch, so it competes with both kernels together.

Each op: `<op>_ref` (PyTorch, the spec), the Triton kernel, dispatcher `<op>` (CUDA and at most MAX_ROWS rows ->
the faster of the two; under Triton's interpreter -> the kernel, so tests run it; otherwise the reference).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels._dispatch import triton_module
from kernels.lm_ops import rms_norm, silu_and_mul, silu_and_mul_ref

logger = logging.getLogger(__name__)

MAX_ROWS = 16  # the kernel's one tensor-core tile of rows; a bigger batch is cuBLAS's matrix-matrix case
_FLOATS = (torch.float16, torch.bfloat16, torch.float32)
# (device, dtype, rows bucket, N, K, bias?, fused?) -> (Triton us, cuBLAS us) as timed (after an RMSNorm, its time
# subtracted); the Triton kernel serves the key when it was faster. Benchmarks report it.
timings: dict[tuple, tuple[float, float]] = {}


def gemv_ref(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """x [M, K], w [N, K], bias [N] -> [M, N] (F.linear)."""
    return F.linear(x, w, bias)


def swiglu_gemv_ref(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """x [M, 2K] = [gate | up], w [N, K] -> silu(gate) * up @ w^T (+ bias): [M, N] (an MLP's down projection)."""
    return F.linear(silu_and_mul_ref(x), w, bias)


def _check(name: str, x: Tensor, w: Tensor, bias: Tensor | None, k_in: int) -> None:
    if x.dim() != 2 or w.dim() != 2 or x.dtype not in _FLOATS or w.dtype != x.dtype:
        raise ValueError(f"{name}: x must be [M, K] and w [N, K], one float dtype; got {tuple(x.shape)} {x.dtype}, "
                         f"{tuple(w.shape)} {w.dtype}")
    if k_in != w.shape[1]:
        raise ValueError(f"{name}: x's {x.shape[1]} columns do not fit w [N={w.shape[0]}, K={w.shape[1]}]")
    if bias is not None and (bias.shape != (w.shape[0],) or bias.dtype != x.dtype):
        raise ValueError(f"{name}: bias must be [{w.shape[0]}] {x.dtype}, got {tuple(bias.shape)} {bias.dtype}")
    if w.device != x.device or (bias is not None and bias.device != x.device):
        raise ValueError(f"{name}: all tensors must be on one device")


def _time_both(key: tuple, x: Tensor, ours, theirs) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from triton.testing import do_bench

    ours()  # compiles and autotunes the kernel outside the timing
    weight = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)

    def before() -> None:  # the latency-bound kernel a decode step's GEMV follows (RMSNorm or attention)
        rms_norm(x, weight, 1e-6)

    def us(fn) -> float:  # type: ignore[no-untyped-def]
        return do_bench(fn, warmup=2, rep=10, return_mode="median") * 1e3

    alone = us(before)
    t = (us(lambda: (before(), ours())) - alone, us(lambda: (before(), theirs())) - alone)
    logger.info("gemv %d x %d x %d%s%s: Triton %.1f us, cuBLAS %.1f us -> %s", key[2], key[3], key[4],
                " +bias" if key[5] else "", " swiglu" if key[6] else "", *t, "Triton" if t[0] < t[1] else "cuBLAS")
    return t


def _run(x: Tensor, w: Tensor, bias: Tensor | None, fused: bool) -> Tensor:
    def theirs() -> Tensor:  # without the kernel: cuBLAS (after the activation's own kernel, fused); the reference
        return F.linear(silu_and_mul(x) if fused else x, w, bias)  # ops on the CPU

    tri = triton_module("_gemv_triton", x) if 0 < x.shape[0] <= MAX_ROWS and w.stride(1) == 1 else None
    if tri is None:
        return theirs()

    def ours() -> Tensor:
        return tri.gemv_triton(x, w, bias, fused)
    if not x.is_cuda:  # the interpreter: the kernel itself is what is under test
        return ours()
    # Rows bucketed to the engine's CUDA-graph batch sizes (1, 2, 4, 8, 16), whose warm-up runs at load time them
    # all: an eager step of another row count never stalls on a timing.
    key = (x.device, x.dtype, 1 << (x.shape[0] - 1).bit_length(), *w.shape, bias is not None, fused)
    t = timings.get(key)
    if t is None:
        if torch.cuda.is_current_stream_capturing():
            return theirs()
        t = timings[key] = _time_both(key, x, ours, theirs)
    return ours() if t[0] < t[1] else theirs()


def gemv(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ w^T (+ bias) for x [M, K], w [N, K] -> [M, N] (see gemv_ref)."""
    _check("gemv", x, w, bias, x.shape[-1] if x.dim() == 2 else -1)
    return _run(x, w, bias, fused=False)


def swiglu_gemv(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """silu(gate) * up @ w^T (+ bias) for x [M, 2K] = [gate | up], w [N, K] -> [M, N] (see swiglu_gemv_ref)."""
    _check("swiglu_gemv", x, w, bias, x.shape[-1] // 2 if x.dim() == 2 and x.shape[-1] % 2 == 0 else -1)
    return _run(x, w, bias, fused=True)
