"""Engine throughput on Step-1: decode tokens/s at batch 1 and 32, prefill tokens/s, against an upstream-style
baseline: upstream's transformers fallback (eager; KV concatenated per step; the dense sqrt-ALiBi bias [H, L, L] rebuilt
in every layer at every step, its slopes copied from the host; SDPA). See UpstreamStyle.

    python -m bench.engine                       # GPU: full-random TTS-3B dims (writes a 7 GB checkpoint once)
    python -m bench.engine --profile tiny        # CPU smoke check (run as a module: bench/kernels.py would
                                                 # shadow the kernels package if run as a file)

Writes JSON (--out) and prints a table.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import cast

from bench import RESULTS, HelpFormatter, commit, count, count_list, exit_without_torch, write_json

if __name__ == "__main__":  # before torch is imported: without it, one line that says what to install
    exit_without_torch("bench.engine")

import torch
import torch.nn.functional as F

from bench.checkpoint import bench_checkpoint
from bench.failure import failure
from bench.profiling import kernel_table, profiler
from kernels import gemv, set_pdl, use_pdl
from lm_engine.engine.config import EngineConfig, SamplingParams
from lm_engine.engine_api import Engine
from lm_engine.models.decoder import DecoderForCausalLM, DecoderLayer


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------- our engine

def engine_decode(eng: Engine, batch: int, prompt_len: int, steps: int, vocab: int) -> float:
    g = torch.Generator().manual_seed(batch)
    params = SamplingParams(temperature=0.0, max_tokens=steps + 2, ignore_eos=True)
    ids = [eng.llm.add_request(torch.randint(5, vocab, (prompt_len,), generator=g).tolist(), params)
           for _ in range(batch)]
    while any(eng.llm.seqs[i].num_cached_tokens < prompt_len for i in ids):  # prefill (+ first token)
        eng.llm.step()
    eng.llm.step()  # one warm decode step
    t = time.perf_counter()
    for _ in range(steps):
        eng.llm.step()
    dt = time.perf_counter() - t
    for i in ids:
        eng.llm.abort(i)
    return batch * steps / dt


def engine_prefill(eng: Engine, batch: int, prompt_len: int, vocab: int, dev: torch.device) -> float:
    g = torch.Generator().manual_seed(1000 + batch)
    params = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    for warm in (True, False):
        prompts = [torch.randint(5, vocab, (prompt_len,), generator=g).tolist() for _ in range(batch)]
        _sync(dev)
        t = time.perf_counter()
        for p in prompts:
            eng.llm.add_request(p, params)
        while eng.llm.has_unfinished():
            eng.llm.step()
        _sync(dev)
        dt = time.perf_counter() - t
    return batch * prompt_len / dt


def release_all(eng: Engine) -> None:
    """Ends every sequence: after a row that failed, what it left queued or running would join the next rows."""
    for seq_id in list(eng.llm.seqs):
        eng.llm.release(seq_id)


def profile_decode(eng: Engine, prompt_len: int, steps: int, vocab: int, top: int = 25) -> list[dict]:
    """GPU time by kernel over `steps` batch-1 decode steps (CUDA graphs as served): where a step's time goes
    between the weights' bandwidth floor and what is measured. On the CPU, self CPU time by op."""
    cuda = eng.llm.runner.device.type == "cuda"
    params = SamplingParams(temperature=0.0, max_tokens=steps + 4, ignore_eos=True)
    seq = eng.llm.add_request(torch.randint(5, vocab, (prompt_len,), generator=torch.Generator().manual_seed(3))
                              .tolist(), params)
    while eng.llm.seqs[seq].num_cached_tokens < prompt_len:
        eng.llm.step()
    eng.llm.step()
    with profiler(cuda) as prof:
        for _ in range(steps):
            eng.llm.step()
    eng.llm.abort(seq)
    return kernel_table(prof, cuda, steps, top)


# ---------------------------------------------------------------------------------------------- baseline

class UpstreamStyle:
    """Step-1 as upstream runs it without its closed attention library: the fallback of the checkpoint's
    modeling_step1.py, which Step-Audio's tts.py loads through transformers. On the engine's weights (views, no copy),
    eager torch ops only. In every layer at every step, as there:
      * q, k, v and gate, up are separate projections (the checkpoint's own modules);
      * the cache (a DynamicCache) holds the kv heads, concatenated per step, and all of it is repeat_interleave'd to
        the query heads before attention;
      * the bias is built whole: the slopes by torch.pow on the host, then copied to the device (from pageable
        memory: the host waits for the device), a [1, 1, L, L] tril of ones, -sqrt(i - j) times the slopes, masked,
        cast to the model dtype, then its last q rows made contiguous;
      * RMSNorm as its StepRMSNorm, and the LM head over every position (its forward takes no logits_to_keep).
    Left out: the failed lookup of the closed op before the fallback (~3 us a layer) and generate's logits processors
    (both sides decode greedily). The token goes back to the host each step, as generate's stopping checks make it."""

    def __init__(self, eng: Engine) -> None:
        model = eng.llm.runner.model
        if not isinstance(model, DecoderForCausalLM):  # the runner sees only its CausalLM interface; this reads weights
            raise TypeError(f"the upstream-style baseline reads a DecoderForCausalLM's weights, not a {type(model)}")
        self.m = model
        self.cfg = eng.model_config

    def bias(self, L: int, q: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        H = self.cfg.num_heads
        n = 2 ** math.floor(math.log2(H))
        slopes = torch.pow(2.0 ** (-8.0 / n), torch.arange(1, n + 1))
        if n < H:
            slopes = torch.cat([slopes, torch.pow(2.0 ** (-4.0 / n), torch.arange(1, 1 + 2 * (H - n), 2))])
        slopes = slopes.to(device)
        tril = torch.tril(torch.ones(1, 1, L, L, device=device))
        dist = torch.arange(L, device=device).view(-1, 1) - torch.arange(L, device=device).view(1, -1)
        b = -torch.sqrt(dist)  # NaN above the diagonal, masked next
        b = (b.view(1, L, L) * slopes.view(-1, 1, 1)).masked_fill(tril == 0, float("-inf"))
        return b.type(dtype)[:, :, L - q:, :].contiguous()

    @staticmethod
    def norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        var = x.float().pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + eps).to(x.dtype) * weight

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, cache: list[tuple[torch.Tensor, torch.Tensor]] | None):
        c, m = self.cfg, self.m.model
        B, q = ids.shape
        H, G, D, inter = c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size
        h = F.embedding(ids, m.embed_tokens.weight)
        new_cache = []
        for i, layer in enumerate(cast(Iterable[DecoderLayer], m.layers)):  # a ModuleList yields untyped Modules
            x = self.norm(h, layer.input_layernorm.weight, layer.input_layernorm.eps)
            wq, wk, wv = layer.self_attn.qkv_proj.weight.split([H * D, G * D, G * D])
            qh, k, v = F.linear(x, wq), F.linear(x, wk), F.linear(x, wv)
            if cache is not None:
                k, v = torch.cat([cache[i][0], k], dim=1), torch.cat([cache[i][1], v], dim=1)
            new_cache.append((k, v))
            L = k.shape[1]
            kh = k.view(B, L, G, D).repeat_interleave(H // G, dim=2).transpose(1, 2)
            vh = v.view(B, L, G, D).repeat_interleave(H // G, dim=2).transpose(1, 2)
            o = F.scaled_dot_product_attention(qh.view(B, q, H, D).transpose(1, 2), kh, vh,
                                               attn_mask=self.bias(L, q, qh.dtype, qh.device))
            h = h + F.linear(o.transpose(1, 2).flatten(-2, -1), layer.self_attn.o_proj.weight)
            x = self.norm(h, layer.post_attention_layernorm.weight, layer.post_attention_layernorm.eps)
            wg, wu = layer.mlp.gate_up_proj.weight.split([inter, inter])
            h = h + F.linear(F.silu(F.linear(x, wg)) * F.linear(x, wu), layer.mlp.down_proj.weight)
        logits = F.linear(self.norm(h, m.norm.weight, m.norm.eps), self.m.lm_head.weight)
        return logits[:, -1].float().argmax(-1, keepdim=True), new_cache


def baseline_prefill(eng: Engine, batch: int, prompt_len: int, dev: torch.device) -> float:
    up = UpstreamStyle(eng)
    up.forward(torch.randint(5, up.cfg.vocab_size, (1, 16), device=dev), None)  # warm (kernels, cuBLAS handles)
    ids = torch.randint(5, up.cfg.vocab_size, (batch, prompt_len), device=dev)
    _sync(dev)
    t = time.perf_counter()
    up.forward(ids, None)
    _sync(dev)
    return batch * prompt_len / (time.perf_counter() - t)


def baseline_decode(eng: Engine, batch: int, prompt_len: int, steps: int, dev: torch.device) -> float:
    up = UpstreamStyle(eng)
    ids = torch.randint(5, up.cfg.vocab_size, (batch, prompt_len), device=dev)
    tok, cache = up.forward(ids, None)
    tok, cache = up.forward(tok, cache)  # warm
    _sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        tok, cache = up.forward(tok, cache)
        tok.tolist()  # the sampled token goes back to the host each step, as in HF generate
    return batch * steps / (time.perf_counter() - t)


# ---------------------------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--profile", default="full-random", choices=["tiny", "full-random"],
                    help="tiny: small random Step-1 (CPU); full-random: TTS-3B's dimensions (GPU)")
    ap.add_argument("--ckpt", type=Path, help="existing Step-1 checkpoint (default: write one to a temp dir)")
    ap.add_argument("--device", help="torch device (default: cuda if torch sees one, else cpu)")
    ap.add_argument("--prompt-len", type=count, help="prompt tokens of each sequence (default: 32 tiny, 512 else)")
    ap.add_argument("--steps", type=count, help="decode steps timed (default: 32 tiny, 128 else)")
    ap.add_argument("--baseline-steps", type=count, help="decode steps of the baseline (default: 4 tiny, 32 else)")
    ap.add_argument("--batches", type=count_list("batch sizes", "1,32"), default="1,32",
                    help="decode batch sizes, comma-separated")
    ap.add_argument("--out", type=Path, default=RESULTS / "engine.json", help="the JSON report")
    a = ap.parse_args()
    tiny = a.profile == "tiny"
    prompt_len = a.prompt_len or (32 if tiny else 512)
    steps = a.steps or (32 if tiny else 128)  # 8 tiny steps took ~1 ms: the figure was mostly timer noise
    base_steps = a.baseline_steps or (4 if tiny else 32)
    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {a.device}: torch sees no CUDA device here (on a CPU: --profile tiny)")
    if dev.type == "cpu" and not tiny and a.ckpt is None:
        ap.error("full-random is TTS-3B's size (a 7 GB checkpoint, seconds a token on a CPU): run --profile tiny "
                 "here, full-random on a GPU")
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    if dev.type == "cpu":
        # As the tiny profile's server runs the engine (controller.step_audio_pipeline). torch's default, a thread per
        # core, made every figure 10-60x slower and erratic on two cores that another job shared.
        torch.set_num_threads(1)
    ckpt = bench_checkpoint(a.ckpt, a.profile)
    # A fixed KV pool (batch 32 x 640 tokens needs ~0.35 GB at TTS-3B dims), not a share of the free memory: the
    # baseline runs beside the engine and its concatenated caches need ~14 GB at batch 32 (an 80 GB H100 ran out
    # when the engine held 85% of the card).
    cfg = EngineConfig(max_num_seqs=64, max_num_batched_tokens=8192, num_kv_blocks=256 if tiny else None,
                       gpu_memory_utilization=None, kv_cache_memory_gib=4.0)
    eng = Engine.from_pretrained(ckpt, device=dev, dtype=dtype, config=cfg)
    vocab = eng.model_config.vocab_size
    card = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    rows: list[dict] = []
    result = {"profile": a.profile, "device": card, "dtype": str(dtype), "commit": commit(),
              "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
              "cuda_graphs": bool(eng.llm.runner.graphs),
              "prompt_len": prompt_len, "decode_steps": steps, "rows": rows,
              # the decode GEMV shapes timed at load (graph warm-ups): Triton vs cuBLAS, the faster serves
              "gemv_us": [{"rows": k[2], "N": k[3], "K": k[4], "bias": k[5], "fused": k[6], "triton": t[0],
                           "cublas": t[1], "split": t[2]} for k, t in gemv.timings.items()],
              # each GEMV-sized decode graph captured three ways (kernels.gemv.serve_all_by): ms a replay, which kept
              "decode_graph_sides": [{"batch": bs, "kept": side or "as timed",
                                      "ms": {s or "as timed": t for s, t in ms.items()}}
                                     for bs, (side, ms) in sorted(eng.llm.runner.graph_sides.items()) if ms]}

    def add(metric: str, ours: Callable[[], float], baseline: Callable[[], float] | None) -> dict:
        """Measures one row and saves it (a run cut off by its time limit keeps what it measured). A row that fails
        (batch 32 out of memory, a refused capture) keeps what it measured before and records why; its sequences
        are released and the next row runs."""
        row: dict = {"metric": metric}
        try:
            row["engine"] = ours()
            if baseline is not None:
                row["baseline"] = baseline()
        except Exception as exc:
            release_all(eng)
            row["error"] = failure(exc)
            print(f"{metric}: failed: {row['error']}", flush=True)
        rows.append(row)
        write_json(a.out, result)
        return row

    # saved before any row too: a first row that fails keeps the load's GEMV timings and graph sides, what the
    # failure is then read against
    write_json(a.out, result)
    b1: dict = {}
    for b in a.batches:
        row = add(f"decode tok/s batch {b} ({prompt_len}-token prompts)",
                  lambda: engine_decode(eng, b, prompt_len, steps, vocab),
                  lambda: baseline_decode(eng, b, prompt_len, base_steps, dev))
        b1 = row if b == 1 else b1
    pb, pl = (2, 64) if tiny else (4, 2048)
    add(f"prefill tok/s ({pb} x {pl} tokens)", lambda: engine_prefill(eng, pb, pl, vocab, dev),
        lambda: baseline_prefill(eng, pb, pl, dev))
    try:
        result["decode_profile_b1"] = profile_decode(eng, prompt_len, 16, vocab)
    except Exception as exc:
        release_all(eng)
        result["decode_profile_b1"], result["decode_profile_b1_error"] = [], failure(exc)
    if "engine" in b1 and dev.type == "cuda" and eng.llm.runner.graphs and use_pdl(torch.empty(0, device=dev)):
        def pdl_off() -> float:  # the same engine with its kernels launched one after another, graphs captured again
            set_pdl(False)
            try:
                eng.llm.runner.capture_cuda_graphs()
                return engine_decode(eng, 1, prompt_len, steps, vocab)
            finally:
                set_pdl(True)

        add("decode tok/s batch 1, PDL off", pdl_off, (lambda: b1["baseline"]) if "baseline" in b1 else None)
    write_json(a.out, result)
    eng.close()
    print(f"Step-1 {a.profile} TTS dims on {card} ({dtype}), commit {result['commit']}, "
          f"CUDA graphs {result['cuda_graphs']}")
    width = max(len(r["metric"]) for r in rows) + 2  # a fixed width ran the longest metrics into the figures
    print(f"{'metric':<{width}}{'engine':>12}{'baseline':>12}{'speedup':>10}")
    for r in rows:
        ours, base = (f"{r[k]:>12.1f}" if k in r else f"{'-':>12}" for k in ("engine", "baseline"))
        speedup = f"{r['engine'] / r['baseline']:>9.1f}x" if "engine" in r and "baseline" in r else f"{'-':>10}"
        print(f"{r['metric']:<{width}}{ours}{base}{speedup}" + (f"  failed: {r['error']}" if "error" in r else ""))
    print(f"\nbatch-1 decode step, {'GPU time by kernel' if dev.type == 'cuda' else 'CPU time by op'} "
          "(us per step, calls per step, share)")
    if "decode_profile_b1_error" in result:
        print(f"failed: {result['decode_profile_b1_error']}")
    for k in result["decode_profile_b1"]:
        print(f"{k['us_per_step']:>9.1f} {k['calls_per_step']:>6.1f} {k['share']:>6.1%}  {k['kernel']}")
    print(f"wrote {a.out}")
    if any("error" in r for r in rows) or "decode_profile_b1_error" in result:
        sys.exit(1)  # the suite's summary marks the step failed; the JSON holds every row measured and why not


if __name__ == "__main__":
    main()
