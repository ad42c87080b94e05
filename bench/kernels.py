"""Kernel benchmark: sqrt-ALiBi prefill and paged decode (kernels.attention) and the fused HiFT vocoder
(kernels.vocoder) against the alternatives, on one GPU. Prints a table and writes JSON.

    python -m bench.kernels                      # GPU: everything below, ~2-4 minutes on an H100
    python -m bench.kernels --smoke              # CPU: tiny shapes through the references, checks the plumbing only

Measured (CUDA events after warm-up, medians):
* prefill, causal, one sequence of S = 8192 and 16384 tokens, bf16:
  d128 "chat-tp8": 12 query heads / 1 kv head (Step-Audio-Chat's 96/8 heads split over 8 GPUs);
  d64  "tts3b":    48 query heads / 4 kv heads (Step-Audio-TTS-3B on one GPU);
  ours (paged, page 256), also with no bias and with its K/V tiles by TMA | SDPA + dense sqrt-ALiBi bias (upstream
  fallback; bias built once, outside the timing)
  | FlexAttention (torch.compile) with a sqrt-ALiBi score_mod | SDPA causal without bias (flash and cuDNN).
  TFLOP/s = 2 * S^2 * H * D (causal: half of 4 S^2 H D) / time, the same count for every row.
* device copy bandwidth: 2 * bytes / time of a 2 GiB device-to-device copy.
* paged decode, q_len 1, context 16384, batch 1 and 32, chat (96/8, d128) and tts3b (48/4, d64): TB/s = K+V bytes
  read / time, and the fraction of the copy bandwidth.
* HiFT vocoder: speech_decoder's HiFTGenerator at CosyVoice-300M-25Hz dims (random weights, fp32), 1 s and 10 s of
  audio at batch 1, f0 predictor + NSF source + decoder: the torch references of kernels.vocoder's ops (the upstream
  op sequence) vs the fused ops, each also under a CUDA graph; max |difference|.
* flow estimator (speech_decoder's ConditionalDecoder, CosyVoice-300M-25Hz dims, random weights, bf16), one call on
  a first streaming window (CFG batch 2, T = 516 frames) under a CUDA graph: kernels.flow_ops' fused ops vs their
  torch references; and each linear epilogue alone at the window's widths (1032 rows, 256 <-> 1024), fused vs
  cuBLAS and the op after it, 20 calls in one graph (ms per call).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench import RESULTS, HelpFormatter, commit, count, exit_without_torch, write_json

if __name__ == "__main__":  # before torch is imported: without it, one line that says what to install
    exit_without_torch("bench.kernels")

import torch
import torch.nn.functional as F

from bench.cuda_timing import attempt, bench, graphed
from bench.failure import failure
from bench.speech_kernels import flow_case, vocoder_case
from kernels import attention as KA


# ----------------------------------------------------------------------------------------------- attention

def copy_bandwidth(dev: str, gib: float) -> float:
    n = int(gib * 2**30) // 4
    a = torch.empty(n, dtype=torch.float32, device=dev)
    b = torch.empty_like(a)
    ms = bench(lambda: b.copy_(a), warmup=3, iters=10)
    return 2 * a.numel() * 4 / (ms * 1e-3) / 1e12


def contiguous_paged(k: torch.Tensor, v: torch.Tensor, page: int):  # type: ignore[no-untyped-def]
    """[S, G, D] -> caches [S/page, page, G, D] and a one-sequence block table."""
    s, g, d = k.shape
    nb = s // page
    return (k.view(nb, page, g, d), v.view(nb, page, g, d),
            torch.arange(nb, dtype=torch.int32, device=k.device)[None])


def tuned_config() -> str:
    """The tile the prefill autotuner chose for the shape it ran last (which candidates win tells which to keep)."""
    from kernels import _attention_triton

    return str(getattr(_attention_triton._get_prefill_launcher(), "best_config", "not tuned (no GPU)"))


def prefill_case(name: str, seq: int, heads: int, kv_heads: int, dim: int, dev: str, dtype: torch.dtype,
                 page: int, iters: int) -> dict:
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(seq, heads, dim, device=dev, dtype=dtype, generator=g)
    k = torch.randn(seq, kv_heads, dim, device=dev, dtype=dtype, generator=g)
    v = torch.randn(seq, kv_heads, dim, device=dev, dtype=dtype, generator=g)
    slopes = KA.alibi_slopes(heads).to(dev)
    scale = dim ** -0.5
    flops = 2.0 * seq * seq * heads * dim
    row: dict = {"case": name, "S": seq, "H": heads, "G": kv_heads, "D": dim, "flops": flops}
    kc, vc, bt = contiguous_paged(k, v, page)
    cu = torch.tensor([0, seq], dtype=torch.int32, device=dev)
    ctx = torch.tensor([seq], dtype=torch.int32, device=dev)

    def ours(bias: str = "sqrt_alibi") -> Callable[[], float]:
        return lambda: bench(lambda: KA.paged_attention(q, kc, vc, bt, cu, ctx, alibi_slopes=slopes, bias=bias,
                                                        scale=scale, max_seqlen_q=seq), iters=iters)

    def ours_tma() -> float:  # the kernel with its unmasked K/V tiles by TMA (kernels._attention_triton.PREFILL_TMA)
        from kernels._attention_triton import paged_attention_triton, tma_fits

        if not tma_fits(kc, vc, dim):
            raise RuntimeError("these caches do not fit the TMA path (tma_fits)")
        return bench(lambda: paged_attention_triton(q, kc, vc, bt, cu, ctx, alibi_slopes=slopes, bias="sqrt_alibi",
                                                    scale=scale, max_seqlen_q=seq, tma=True), iters=iters)

    qh, kh, vh = q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None]  # [1, H|G, S, D]
    group = heads // kv_heads
    kx, vx = kh.repeat_interleave(group, 1), vh.repeat_interleave(group, 1)

    def sdpa_dense_bias() -> float:
        pos = torch.arange(seq, device=dev)
        dist = (pos[:, None] - pos[None, :]).float()
        dense = (-slopes[:, None, None] * dist.clamp(min=0).sqrt()).masked_fill(dist < 0, float("-inf"))
        bias: torch.Tensor | None = dense.to(dtype)[None]  # None once timed (finally below)
        del dist, dense
        try:
            return bench(lambda: F.scaled_dot_product_attention(qh, kx, vx, attn_mask=bias, scale=scale),
                         iters=max(3, iters // 4))
        finally:
            bias = None  # the dense [H, S, S] bias is the largest tensor of the run: gone before the next case
            torch.cuda.empty_cache()

    def flex() -> float:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def score_mod(score, b, h, q_idx, kv_idx):  # type: ignore[no-untyped-def]
            return score - slopes[h] * torch.sqrt((q_idx - kv_idx).clamp(min=0).to(torch.float32))

        def causal(b, h, q_idx, kv_idx):  # type: ignore[no-untyped-def]
            return q_idx >= kv_idx

        mask = create_block_mask(causal, None, None, seq, seq, device=dev)
        fa = torch.compile(flex_attention, dynamic=False)
        return bench(lambda: fa(qh, kh, vh, score_mod=score_mod, block_mask=mask, scale=scale, enable_gqa=True),
                     iters=iters)

    def sdpa_backend(backend, expand: bool):  # type: ignore[no-untyped-def]
        from torch.nn.attention import sdpa_kernel

        def run() -> float:
            kk, vv = (kx, vx) if expand else (kh, vh)
            with sdpa_kernel(backend):
                return bench(lambda: F.scaled_dot_product_attention(qh, kk, vv, is_causal=True, scale=scale,
                                                                    enable_gqa=not expand), iters=iters)
        return run

    from torch.nn.attention import SDPBackend
    row["ms"], row["ours_tuned_config"] = {}, {}
    # The same kernel without the bias too: what the sqrt-ALiBi costs us (per-score work next to exp2's).
    for label, bias in (("ours_sqrt_alibi", "sqrt_alibi"), ("ours_no_bias", "none")):
        row["ms"][label] = attempt(ours(bias))
        row["ours_tuned_config"][label] = tuned_config()
    if dev == "cuda":
        row["ms"]["ours_sqrt_alibi_tma"] = attempt(ours_tma)
        row["ours_tuned_config"]["ours_sqrt_alibi_tma"] = tuned_config()
    row["ms"] |= {
        "sdpa_dense_sqrt_alibi_bias": attempt(sdpa_dense_bias),
        "flex_sqrt_alibi_score_mod": attempt(flex),
        "sdpa_flash_no_bias": attempt(sdpa_backend(SDPBackend.FLASH_ATTENTION, False)) if dev == "cuda"
        else "CUDA only",
        "sdpa_cudnn_no_bias": attempt(sdpa_backend(SDPBackend.CUDNN_ATTENTION, True)) if dev == "cuda"
        else "CUDA only",
    }
    # correctness spot check of ours against the reference on the last 64 queries (cheap)
    tail = 64
    cu_t = torch.tensor([0, tail], dtype=torch.int32, device=dev)
    got = KA.paged_attention(q[-tail:], kc, vc, bt, cu_t, ctx, alibi_slopes=slopes, bias="sqrt_alibi", scale=scale)
    ref = KA.paged_attention_ref(q[-tail:], kc, vc, bt, cu_t, ctx, alibi_slopes=slopes, bias="sqrt_alibi",
                                 scale=scale)
    row["max_abs_err_vs_ref"] = float((got.float() - ref.float()).abs().max())
    return row


def decode_case(name: str, batch: int, ctx_len: int, heads: int, kv_heads: int, dim: int, dev: str,
                dtype: torch.dtype, page: int, iters: int) -> dict:
    nb_per = ctx_len // page
    total = batch * nb_per
    kc = torch.randn(total, page, kv_heads, dim, device=dev, dtype=dtype)
    vc = torch.randn_like(kc)
    bt = torch.randperm(total, device=dev).to(torch.int32).view(batch, nb_per)  # scattered pages
    q = torch.randn(batch, heads, dim, device=dev, dtype=dtype)
    cu = torch.arange(batch + 1, dtype=torch.int32, device=dev)
    ctx = torch.full((batch,), ctx_len, dtype=torch.int32, device=dev)
    slopes = KA.alibi_slopes(heads).to(dev)

    def call(splits: int | None = None) -> torch.Tensor:
        if splits is None:
            return KA.paged_attention(q, kc, vc, bt, cu, ctx, alibi_slopes=slopes, bias="sqrt_alibi",
                                      scale=dim ** -0.5, max_seqlen_q=1)
        from kernels._attention_triton import paged_attention_triton
        return paged_attention_triton(q, kc, vc, bt, cu, ctx, alibi_slopes=slopes, bias="sqrt_alibi",
                                      scale=dim ** -0.5, max_seqlen_q=1, num_splits=splits)

    # The engine replays decode as a CUDA graph, so that is what is timed; the Python-launched time (dispatcher
    # checks plus two Triton launches) is kept beside it.
    launched = bench(call, iters=iters)
    # median of three graphs: H100 run5 timed the batch-1 tts3b case at 17.7 us in its first graph and 13.2 us in
    # the by-splits pass's graph of the same 64 splits (run4: 13.0 and 12.8)
    ms = statistics.median(graphed(call, iters) for _ in range(3)) if dev == "cuda" else launched
    by_splits = {n: graphed(partial(call, n), iters) for n in (8, 32, 64, 128)} if dev == "cuda" else {}
    # As the engine calls it: the step's new K/V stored by the decode kernel itself, against store_kv's own launch
    # before the attention (the code before the fusion).
    new_kv = {}
    if dev == "cuda":
        kn, vn = (torch.randn(batch, kv_heads, dim, device=dev, dtype=dtype) for _ in range(2))
        slots = bt[:, -1].long() * page + page - 1  # position ctx_len - 1 of each sequence

        def fused() -> torch.Tensor:
            return KA.paged_attention(q, kc, vc, bt, cu, ctx, alibi_slopes=slopes, bias="sqrt_alibi",
                                      scale=dim ** -0.5, max_seqlen_q=1, new_kv=(kn, vn, slots))

        def store_then_attend() -> torch.Tensor:
            KA.store_kv(kn, vn, kc, vc, slots)
            return call()
        new_kv = {"ms_attention_storing_new_kv": graphed(fused, iters),
                  "ms_store_kv_then_attention": graphed(store_then_attend, iters)}
    kv_bytes = 2 * batch * ctx_len * kv_heads * dim * kc.element_size()
    got = KA.paged_attention(q, kc, vc, bt, cu, ctx, alibi_slopes=slopes, bias="sqrt_alibi", scale=dim ** -0.5,
                             max_seqlen_q=1)
    ref = KA.paged_attention_ref(q[:2], kc, vc, bt[:2], cu[:3], ctx[:2], alibi_slopes=slopes, bias="sqrt_alibi",
                                 scale=dim ** -0.5)
    return {"case": name, "batch": batch, "ctx": ctx_len, "H": heads, "G": kv_heads, "D": dim, "ms": ms,
            "ms_python_launched": launched, "ms_graph_by_num_splits": by_splits, **new_kv, "kv_bytes": kv_bytes,
            "tb_per_s": kv_bytes / (ms * 1e-3) / 1e12,
            "max_abs_err_vs_ref": float((got[:2].float() - ref.float()).abs().max())}


# ----------------------------------------------------------------------------------------------- main

def guarded(case: Callable[..., dict], *args: object) -> dict:
    """One case's row, or a row that records why it failed (the other cases still run)."""
    try:
        return case(*args)
    except Exception as exc:
        return {"case": f"{case.__name__}{args[:2]}", "error": failure(exc)}


def run_case(t0: float, label: str, case: Callable[..., dict], *args: object) -> dict:
    """guarded(case, *args), and a progress line: its ms, or why it failed (a failed row has no "ms": reading it
    there ended the run, and the sections after it were never measured)."""
    row = guarded(case, *args)
    print(f"[{time.time() - t0:6.1f}s] {label}: {row['ms'] if 'ms' in row else row['error']}", flush=True)
    return row


def _fmt(x: object) -> str:
    if isinstance(x, str) and x.startswith("error"):  # the message follows the row (_why)
        return f"{'error':>9}"
    return f"{x:9.3f}" if isinstance(x, float) else f"{str(x)[:9]:>9}"


def _why(cells: dict[str, object], indent: int) -> None:
    """The error messages of a row's cells, one line each under it (the cell says only 'error')."""
    for impl, v in cells.items():
        if isinstance(v, str) and v.startswith("error"):
            print(f"{'':{indent}} {impl}: {v}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, CPU allowed (plumbing check, no figures)")
    ap.add_argument("--out", default=str(RESULTS / "kernels.json"), help="the JSON report")
    ap.add_argument("--iters", type=count, default=20, help="timed calls per measurement (--smoke: 2)")
    ap.add_argument("--seqs", default="8192,16384", help="prefill sequence lengths, comma-separated (--smoke: 512)")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("bench.kernels: no CUDA device. This benchmark measures GPU kernels; run it on a GPU machine, or pass "
              "--smoke for a tiny CPU run that only checks that the script works (its timings mean nothing).",
              file=sys.stderr)
        return 2
    dev = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    seqs = [int(s) for s in args.seqs.split(",")] if not args.smoke else [512]
    page = 256 if not args.smoke else 64
    iters = args.iters if not args.smoke else 2
    ctx_len = 16384 if not args.smoke else 512
    result: dict = {"device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
                    "torch": torch.__version__, "commit": commit(), "smoke": args.smoke, "dtype": str(dtype)}
    if cuda:
        import triton
        result["triton"] = triton.__version__
    out = Path(args.out)

    def save() -> None:  # after every section: a run cut off by its time limit keeps what it measured
        write_json(out, result)

    t0 = time.time()
    result["copy_tb_per_s"] = copy_bandwidth(dev, 2.0 if not args.smoke else 0.01)
    print(f"[{time.time() - t0:6.1f}s] copy bandwidth {result['copy_tb_per_s']:.3f} TB/s", flush=True)

    # Cheapest first: prefill (autotuning, FlexAttention's compile) takes most of the time and goes last, so a
    # run cut off by its time limit loses only its tail.
    result["decode"] = []
    for name, h, g, d in [("chat d128", 96, 8, 128), ("tts3b d64", 48, 4, 64)]:
        for b in (1, 32) if not args.smoke else (1, 2):
            result["decode"].append(run_case(t0, f"decode {name} B={b} (ms)", decode_case, name, b, ctx_len, h, g,
                                             d, dev, dtype, page, iters))
        save()
    result["vocoder"] = []
    for sec in (1.0, 10.0) if not args.smoke else (0.1,):
        result["vocoder"].append(run_case(t0, f"vocoder {sec}s", vocoder_case, sec, dev, iters))
        save()
    result["prefill"] = []
    shapes = [("chat-tp8 d128", 12, 1, 128), ("tts3b d64", 48, 4, 64)]
    for name, h, g, d in shapes:
        for s in seqs:
            result["prefill"].append(run_case(t0, f"prefill {name} S={s}", prefill_case, name, s,
                                              h if not args.smoke else 4, g, d, dev, dtype, page, iters))
            save()
    # after the prefill, whose figures are the targets: this one only guides the flow's kernels
    result["flow"] = [run_case(t0, "flow estimator", flow_case, 516 if not args.smoke else 24, dev, dtype, iters)]
    save()
    print_table(result)
    print(f"wrote {out}")
    return 0


def print_table(r: dict) -> None:
    print(f"\n{r['device']}  torch {r['torch']}  commit {r['commit'][:10]}  "
          f"{'SMOKE (no figures)' if r['smoke'] else ''}")
    print(f"copy bandwidth: {r['copy_tb_per_s']:.3f} TB/s")
    print("\nprefill causal (TFLOP/s; ratio = row ms / ours ms, i.e. how many times faster ours is)")
    print(f"{'case':16} {'S':>6} {'impl':28} {'ms':>9} {'TFLOP/s':>9} {'ratio':>7}")
    for row in r["prefill"]:
        if "error" in row:
            print(f"{row['case']}: {row['error']}")
            continue
        ours = row["ms"]["ours_sqrt_alibi"]
        for impl, ms in row["ms"].items():
            tf = row["flops"] / (ms * 1e-3) / 1e12 if isinstance(ms, float) else "-"
            ratio = (ms / ours) if isinstance(ms, float) and isinstance(ours, float) and not r["smoke"] else "-"
            print(f"{row['case']:16} {row['S']:>6} {impl:28} {_fmt(ms)} {_fmt(tf)} {_fmt(ratio)}")
        _why(row["ms"], 23)
        for impl, cfg in row["ours_tuned_config"].items():
            print(f"{'':16} {'':>6} {impl} tile: {cfg}")
    print("\npaged decode (q_len 1, sqrt-ALiBi; CUDA graph replay, as the engine runs it)")
    print(f"{'case':16} {'batch':>5} {'ctx':>6} {'ms':>9} {'TB/s':>9} {'of copy':>8}")
    for row in r["decode"]:
        if "error" in row:
            print(f"{row['case']}: {row['error']}")
            continue
        print(f"{row['case']:16} {row['batch']:>5} {row['ctx']:>6} {_fmt(row['ms'])} {_fmt(row['tb_per_s'])} "
              f"{row['tb_per_s'] / r['copy_tb_per_s']:8.2f}   python-launched {row['ms_python_launched']:.3f} ms; "
              f"by num_splits {', '.join(f'{n}: {ms:.3f}' for n, ms in row['ms_graph_by_num_splits'].items())}")
    # a smoke run's "fused" and "eager" are the same torch code on a CPU: no speed-up to show
    _print_fused_vs_eager("HiFT vocoder, batch 1", r["vocoder"], 16, 20, r["smoke"])
    _print_fused_vs_eager("flow estimator, one call on a first window", r.get("flow", []), 22, 32, r["smoke"])


def _print_fused_vs_eager(title: str, rows: list[dict], case_w: int, impl_w: int, smoke: bool) -> None:
    print(f"\n{title} (ms; speed-up = eager / variant)")
    for row in rows:
        if "error" in row:
            print(f"{row['case']}: {row['error']}")
            continue
        eager = row["ms"]["eager"]
        for impl, ms in row["ms"].items():
            sp = eager / ms if isinstance(ms, float) and not smoke else "-"
            print(f"{row['case']:{case_w}} {impl:{impl_w}} {_fmt(ms)} {_fmt(sp)}")
        _why(row["ms"], case_w)
        for impl, ms in row.get("op_ms_cuda_graph", {}).items():
            print(f"{'':{case_w}} {impl:{impl_w}} {_fmt(ms)}   (one call, CUDA graph)")
        print(f"{'':{case_w}} max|fused - eager| = {row['max_abs_diff_fused_vs_eager']:.2e}")

if __name__ == "__main__":
    raise SystemExit(main())
