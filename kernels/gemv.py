"""Linear layers for the few rows of a decode step: y = x @ w^T (+ bias), and the same after a pre-norm block's
residual add and RMSNorm, optionally followed by SwiGLU's activation (an MLP's gate and up projections).

At batch 1 a decode step streams every weight of the model once (TTS-3B: 7 GB, 2.35 ms at an H100's copy bandwidth;
run3 measured 3.64 ms a step), so how close each matrix-vector product comes to the bandwidth is most of a step's
time. A Triton kernel (kernels._gemv_triton, autotuned tiles; in one pass, or with K split among several programs
a column block where the grid would be small: split_candidates) competes with cuBLAS: the first time a shape is met
outside a CUDA-graph capture, both are timed as a CUDA graph replays them (kernels._timing: the decode step is a
graph, so host launch costs, which dominate a Python-launched timing of a 10 us op, are left out; L2 flushed before
each call, so weights that would fit in the 50 MB L2 are not timed from it) and the faster one serves that shape
from then on. Each is timed right after an RMSNorm kernel, as it runs in a decode step, less that kernel's own time:
on sm_90 our kernel starts during the one before it (kernels.launch) and asks L2 for its weights meanwhile, which a
GEMV timed alone would not show.
A capture uses the choice its warm-up run made; a shape first met inside a capture runs on cuBLAS; an engine without
CUDA graphs (enforce_eager) times a shape when a step first needs it (tens of ms, once). The kernel serves
only the shapes where it measured faster than cuBLAS on this device; its fused forms also save the norm's and the
activation's own launches, so each competes with those kernels and gemv's own choice together.
A whole step may still favour another mix than the per-shape timings pick (PDL overlap and L2 prefetch reach across
many kernels; run4's step, more of it on Triton, made 277 tok/s, run5's timed mix 273): within serve_all_by(side)
every timed shape is served by one side, and the engine captures a step each way and keeps the fastest graph.

Each op: `<op>_ref` (PyTorch, the spec), the Triton kernel, dispatcher `<op>` (CUDA and at most MAX_ROWS rows ->
the faster of the two; under Triton's interpreter -> the kernel, so tests run it; otherwise the reference).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels._dispatch import triton_module
from kernels._timing import graph_us
from kernels.lm_ops import add_rms_norm, add_rms_norm_ref, rms_norm, rms_norm_ref, silu_and_mul, silu_and_mul_ref

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ROWS = 16  # the kernel's one tensor-core tile of rows; a bigger batch is cuBLAS's matrix-matrix case
_FLOATS = (torch.float16, torch.bfloat16, torch.float32)
# (device, dtype, rows bucket, N, K, bias?, what is fused) -> (Triton us, cuBLAS us, Triton's split) as timed (after
# an RMSNorm, its time subtracted; Triton's figure the best of its K splits); the Triton kernel, with that split,
# serves the key when it was faster. Benchmarks report it. What is fused: "" (a plain product), "rms_norm" /
# "add_rms_norm" (the residual add and the norm before it), "+swiglu" after that.
timings: dict[tuple, tuple[float, float, int]] = {}
SIDES = ("triton", "library")
# None: each shape by its timing; else every timed shape by that side. A context variable, not a global: another
# thread (a second engine, the speech path) may be launching meanwhile and keeps its own choice.
_side: contextvars.ContextVar[str | None] = contextvars.ContextVar("gemv_side", default=None)


def gemv_ref(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """x [M, K], w [N, K], bias [N] -> [M, N] (F.linear)."""
    return F.linear(x, w, bias)


def rms_norm_gemv_ref(x: Tensor, residual: Tensor | None, norm_weight: Tensor, eps: float, w: Tensor,
                      bias: Tensor | None = None, swiglu: bool = False) -> tuple[Tensor, Tensor]:
    """(rms_norm(h) @ w^T (+ bias), h) with h = residual + x, or h = x without a residual: a pre-norm block's
    residual add, its RMSNorm and the projection after them (kernels.lm_ops' rounding). With swiglu, w (and bias)
    are [gate; up] and the product is followed by silu(gate) * up."""
    normed, h = (rms_norm_ref(x, norm_weight, eps), x) if residual is None else \
        add_rms_norm_ref(x, residual, norm_weight, eps)
    y = F.linear(normed, w, bias)
    return (silu_and_mul_ref(y) if swiglu else y), h


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


def split_candidates(n_out: int, k: int, device: torch.device) -> list[int]:
    """The K splits worth timing for a product with n_out output columns: 1, and those that leave each program at
    least 512 of K and the grid within 16 programs an SM (at the kernel's narrowest column block, 16)."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    blocks = -(-n_out // 16)
    return [1] + [s for s in (2, 4, 8) if k // s >= 512 and blocks * s <= 16 * sms]


@contextlib.contextmanager
def serve_all_by(side: str | None) -> Iterator[None]:
    """Within it (on this thread) every shape that has a timing is served by `side`: "triton" (the kernel at the
    shape's fastest K split; not where the kernel could not be timed), "library" (cuBLAS after the fused ops' own
    kernels), or None (each shape by its timing, the default)."""
    if side is not None and side not in SIDES:
        raise ValueError(f"serve_all_by: side must be None or one of {SIDES}, got {side!r}")
    token = _side.set(side)
    try:
        yield
    finally:
        _side.reset(token)


def _surviving(key: tuple, what: str, calls: dict[int, Callable[[], T]]) -> dict[int, T]:
    """Each K split's call(), keyed by split; a split whose call raises is logged and left out. One split the
    kernel cannot run on this device or Triton (shared memory, a compile error) must cost that split, not the
    shape: raised from _time_all, the graph warm-up failed and every eager step timed the shape again and raised."""
    done: dict[int, T] = {}
    for split, call in calls.items():
        try:
            done[split] = call()
        except Exception:
            logger.exception("gemv %d x %d x %d: Triton split %d failed (%s); it is left out", *key[2:5], split, what)
    return done


def _time_all(key: tuple, x: Tensor, ours: dict[int, Callable[[], object]],
              theirs: Callable[[], object]) -> tuple[float, float, int]:
    """(the best Triton split's us, cuBLAS's us, that split), each timed as a CUDA graph replays it; (inf, ., 1)
    when no split could be timed."""
    theirs()  # compiles and autotunes the kernels outside the timing, as _surviving's first run does for ours
    ran = _surviving(key, "its first run", ours)
    weight = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)

    def before() -> None:  # the latency-bound kernel a decode step's GEMV follows (RMSNorm or attention)
        rms_norm(x, weight, 1e-6)

    by_split = _surviving(key, "timing under a CUDA graph",
                          {s: functools.partial(graph_us, ours[s], before, x.device) for s in ran})
    try:
        lib = graph_us(theirs, before, x.device)
    except Exception:  # a capture refused (an op that synchronises, say): the library op is the safe choice
        logger.exception("gemv %d x %d x %d: timing cuBLAS under a CUDA graph failed; cuBLAS serves it", *key[2:5])
        return float("inf"), 0.0, 1
    if not by_split:
        return float("inf"), lib, 1
    split = min(by_split, key=by_split.__getitem__)
    logger.info("gemv %d x %d x %d%s%s: Triton %s us, cuBLAS %.1f us -> %s", key[2], key[3], key[4],
                " +bias" if key[5] else "", f" {key[6]}" if key[6] else "",
                ", ".join(f"{us:.1f} (split {s})" for s, us in by_split.items()), lib,
                f"Triton, split {split}" if by_split[split] < lib else "cuBLAS")
    return by_split[split], lib, split


def _run(x: Tensor, w: Tensor, bias: Tensor | None, fused: str, ours: Callable[[ModuleType, int], T],
         theirs: Callable[[], T]) -> T:
    """ours(the Triton module, a K split) or theirs() (without the kernel: cuBLAS after the fused op's own kernel;
    the reference ops on the CPU), whichever serves this call (module docstring)."""
    tri = triton_module("_gemv_triton", x) if 0 < x.shape[0] <= MAX_ROWS and w.stride(1) == 1 else None
    if tri is None:
        return theirs()
    if not x.is_cuda:  # the interpreter: the kernel itself is what is under test, unless the library is asked for
        return theirs() if _side.get() == "library" else ours(tri, 1)
    # Rows bucketed to the engine's CUDA-graph batch sizes (1, 2, 4, 8, 16), whose warm-up runs at load time them
    # all: an eager step of another row count never stalls on a timing.
    key = (x.device, x.dtype, 1 << (x.shape[0] - 1).bit_length(), *w.shape, bias is not None, fused)
    t = timings.get(key)
    if t is None:
        if torch.cuda.is_current_stream_capturing():
            return theirs()
        n_out = w.shape[0] // 2 if fused.endswith("swiglu") else w.shape[0]
        splits = split_candidates(n_out, w.shape[1], x.device)
        t = timings[key] = _time_all(key, x, {s: functools.partial(ours, tri, s) for s in splits}, theirs)
    side = _side.get() or ("triton" if t[0] < t[1] else "library")
    return ours(tri, t[2]) if side == "triton" and t[0] != float("inf") else theirs()


def gemv(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ w^T (+ bias) for x [M, K], w [N, K] -> [M, N] (see gemv_ref)."""
    _check("gemv", x, w, bias, x.shape[-1] if x.dim() == 2 else -1)
    return _run(x, w, bias, "", lambda tri, split: tri.gemv_triton(x, w, bias, split=split),
                lambda: F.linear(x, w, bias))


def rms_norm_gemv(x: Tensor, residual: Tensor | None, norm_weight: Tensor, eps: float, w: Tensor,
                  bias: Tensor | None = None, swiglu: bool = False) -> tuple[Tensor, Tensor]:
    """(rms_norm(h) @ w^T (+ bias), h), h = residual + x (x without a residual), for x [M, K], residual [M, K] or
    None, norm_weight [K], w [N, K]; with swiglu, w = [gate; up] (N even) and the result silu(gate) * up [M, N/2]
    (see rms_norm_gemv_ref). Without the kernel: the norm's kernel, gemv, the activation's kernel."""
    _check("rms_norm_gemv", x, w, bias, x.shape[-1] if x.dim() == 2 else -1)
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype
                                 or residual.device != x.device):
        raise ValueError(f"rms_norm_gemv: residual must match x {tuple(x.shape)} {x.dtype}, "
                         f"got {tuple(residual.shape)} {residual.dtype}")
    if norm_weight.shape != (w.shape[1],) or norm_weight.device != x.device:
        raise ValueError(f"rms_norm_gemv: norm_weight must be [{w.shape[1]}], got {tuple(norm_weight.shape)}")
    if swiglu and w.shape[0] % 2:
        raise ValueError(f"rms_norm_gemv: swiglu needs w = [gate; up] with an even row count, got {w.shape[0]}")

    def theirs() -> tuple[Tensor, Tensor]:
        normed, h = (rms_norm(x, norm_weight, eps), x) if residual is None else \
            add_rms_norm(x, residual, norm_weight, eps)
        y = gemv(normed, w, bias)
        return (silu_and_mul(y) if swiglu else y), h

    fused = ("rms_norm" if residual is None else "add_rms_norm") + ("+swiglu" if swiglu else "")
    return _run(x, w, bias, fused,
                lambda tri, split: tri.gemv_triton(x, w, bias, swiglu, norm=(residual, norm_weight, eps), split=split),
                theirs)
