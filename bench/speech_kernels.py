"""bench.kernels' speech cases: the HiFT vocoder and the flow estimator at CosyVoice-300M-25Hz dims (random
weights), kernels.vocoder's and kernels.flow_ops' fused ops vs their torch references."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from bench.cuda_timing import attempt, bench, graphed
from kernels import flow_ops as KF
from kernels import vocoder as KV
from speech_decoder.checkpoint import profile_config
from speech_decoder.flow.estimator import ConditionalDecoder
from speech_decoder.hift.generator import HiFTGenerator


def vocoder_case(seconds: float, dev: str, iters: int) -> dict:
    """The HiFTGenerator the speech path runs (CosyVoice-300M-25Hz dims, random weights, fp32): f0 predictor, NSF
    source and decoder, with kernels.vocoder's fused ops vs their torch references (the upstream op sequence)."""
    torch.manual_seed(0)
    model = HiFTGenerator(profile_config("full-random").hift).to(dev).eval()
    frames = int(round(seconds * 22050 / 256))
    mel = torch.randn(1, 80, frames, device=dev) * 2 - 5

    def eager() -> torch.Tensor:
        with KV.reference_ops():
            return model.inference(mel)

    def fused() -> torch.Tensor:
        return model.inference(mel)

    row: dict = {"case": f"hift_{seconds:g}s", "frames": frames}
    with torch.inference_mode():
        out = fused()
        row["samples"] = int(out.shape[-1])
        row["max_abs_diff_fused_vs_eager"] = float((out - eager()).abs().max())
        row["ms"] = {"eager": bench(eager, iters=iters), "fused": bench(fused, iters=iters)}
        if dev == "cuda":  # both under CUDA graphs too: what is left is the kernels' own time
            row["ms"]["eager_cuda_graph"] = attempt(lambda: graphed(eager, iters))
            row["ms"]["fused_cuda_graph"] = attempt(lambda: graphed(fused, iters))
    return row


def flow_case(frames: int, dev: str, dtype: torch.dtype, iters: int) -> dict:
    torch.manual_seed(0)
    est = ConditionalDecoder(profile_config("full-random").flow.estimator).to(dev, dtype).eval()
    x, mu, cond = (torch.randn(2, 80, frames, device=dev, dtype=dtype) for _ in range(3))
    t, spks = torch.rand(2, device=dev), torch.randn(2, 80, device=dev, dtype=dtype)

    def fused() -> torch.Tensor:
        return est(x, mu, t, spks, cond)

    def eager() -> torch.Tensor:
        with KV.reference_ops():
            return est(x, mu, t, spks, cond)

    def many(fn: Callable[[], object], n: int = 20) -> Callable[[], None]:
        def run() -> None:
            for _ in range(n):
                fn()
        return run

    dim, rows = 256, 2 * frames
    h, h4, r = (torch.randn(rows, w, device=dev, dtype=dtype) for w in (dim, 4 * dim, dim))
    w_up, w_down = (torch.randn(a, b, device=dev, dtype=dtype) / b ** 0.5 for a, b in ((4 * dim, dim), (dim, 4 * dim)))
    b_up, b_down, lw, lb = (torch.randn(n, device=dev, dtype=dtype) for n in (4 * dim, dim, dim, dim))
    w_out = torch.randn(dim, dim, device=dev, dtype=dtype) / dim ** 0.5
    if dev == "cuda":
        from kernels import _flow_ops_triton as TF

    def fused_add_norm(a: torch.Tensor, w: torch.Tensor) -> Callable[[], object]:
        return lambda: TF.linear_triton(a, w, b_down, residual=r, norm=(lw, lb, 1e-5))

    def cublas_then_add_norm(a: torch.Tensor, w: torch.Tensor) -> Callable[[], object]:
        return lambda: KF.add_layer_norm(F.linear(a, w, b_down), r, lw, lb, 1e-5)

    ops: dict[str, Callable[[], object]] = {
        "linear_gelu": lambda: KF.linear_gelu(h, w_up, b_up),
        "cublas_then_gelu": lambda: F.gelu(F.linear(h, w_up, b_up)),
    }
    for k, a, w in ((256, h, w_out), (1024, h4, w_down)):  # the kernel itself: the dispatcher picks by K
        ops[f"linear_add_layer_norm_k{k}"] = fused_add_norm(a, w)
        ops[f"cublas_then_add_layer_norm_k{k}"] = cublas_then_add_norm(a, w)
    row: dict = {"case": f"flow_estimator_T{frames}", "frames": frames}
    with torch.inference_mode():
        row["max_abs_diff_fused_vs_eager"] = float((fused() - eager()).abs().max())
        row["ms"] = {"eager": bench(eager, iters=iters), "fused": bench(fused, iters=iters)}
        if dev == "cuda":
            row["ms"]["eager_cuda_graph"] = attempt(lambda: graphed(eager, iters))
            row["ms"]["fused_cuda_graph"] = attempt(lambda: graphed(fused, iters))
            op_ms = {name: attempt(partial(graphed, many(fn), iters)) for name, fn in ops.items()}
            row["op_ms_cuda_graph"] = {name: ms / 20 if isinstance(ms, float) else ms for name, ms in op_ms.items()}
    return row
