"""Speech-path benchmark: TTS-3B tokens/s (lm_engine), flow + HiFT real-time factor offline and streamed, time from
the reply text to the first audio chunk, and how many concurrent streams stay real-time.

    python -m bench.tts                        # GPU: full-random TTS-3B + CosyVoice-300M-25Hz dims
    python -m bench.tts --profile tiny         # CPU: tiny dims (plumbing and CPU figures)

Measured, in this order, on one device:
* decoder: offline token2wav RTF for --tokens tokens; streamed RTF through StreamingDecoder (5-token pushes, the LM's
  pace); the first chunk's compute time (the push that completes its 25-token window). On CUDA twice, side by side:
  flow and vocoder launched op by op, then replayed as CUDA graphs (speech_decoder.flow_graphs and the HiFT
  stream's VocoderGraphs, what the server runs).
* concurrency (before the TTS-3B figures, which load a 7 GB model): N streams, 5 tokens (120 ms of speech) per
  stream per round; N stays real-time while a round takes less than the 120 ms of audio it adds per stream. Two
  ways side by side: round-robin with every flow window run alone, and N decoder threads whose windows a FlowBatcher
  runs together (as the server does). Largest N first.
* TTS-3B: greedy decode tokens/s at batch 1 through the engine (CUDA graphs on GPU).
* first audio: wall time from submitting a --tts-prompt-len token TTS prompt (speaker prompt + first sentence) to
  the first audio chunk leaving StreamingDecoder: prefill, 25 decode steps, the first flow window and HiFT, run in
  sequence (the LM paused during the window). Twice: a cold prompt, and one whose speaker part (all but the last 24
  tokens) is already in the engine's prefix cache, as in the server, which prefills the default voice's prompt at
  start and keeps every voice's after its first sentence. Then as the server runs it, the LM decoding on in its own
  thread, held while the first window runs, and side by side the same without the hold. Random weights emit
  arbitrary ids, folded into the 5120 flow codes.
Writes JSON (--out) and prints a table.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench import RESULTS, HelpFormatter, commit, count, count_list, exit_without_torch, write_json

if __name__ == "__main__":  # before torch is imported: without it, one line that says what to install
    exit_without_torch("bench.tts")

import torch

from bench.checkpoint import bench_checkpoint
from bench.failure import failure
from bench.profiling import busy_us, kernel_table, profiler
from lm_engine.engine.config import EngineConfig, SamplingParams
from lm_engine.engine_api import Engine
from speech_decoder.checkpoint import write_cosyvoice_folder
from speech_decoder.cosyvoice_model import CosyVoiceModel, SpeakerPrompt
from speech_decoder.flow_batch import FlowBatcher
from speech_decoder.streaming_decoder import StreamingDecoder, warm_up

HOP_TOKENS = 5
ROUNDS = 10  # timed rounds a stream count, HOP_TOKENS tokens a stream each
TOKENS_PER_S = 25 / 0.6  # 41.67 flow tokens per second of speech
REPEATS = 3  # runs behind each first-audio figure (their median)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def decoder_figures(model: CosyVoiceModel, prompt: SpeakerPrompt, tokens: list[int]) -> dict:
    dev = model.device
    seconds = model.cfg.flow.mel_frames(len(tokens)) * 256 / 22050
    model.token2wav(tokens[:50], prompt)  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    model.token2wav(tokens, prompt)
    _sync(dev)
    offline = time.perf_counter() - t0
    dec = StreamingDecoder(model, prompt)
    dec.push(tokens[:20])
    _sync(dev)
    t0 = time.perf_counter()
    first = dec.push(tokens[20:25])
    _sync(dev)
    first_chunk = time.perf_counter() - t0
    t1 = time.perf_counter()
    for i in range(25, len(tokens), HOP_TOKENS):
        dec.push(tokens[i:i + HOP_TOKENS])
    dec.finish()
    _sync(dev)
    streamed = time.perf_counter() - t1 + first_chunk
    # the first chunk once more, profiled: what its flow window and vocoder step spend their time on
    dec = StreamingDecoder(model, prompt)
    dec.push(tokens[:20])
    _sync(dev)
    with profiler(dev.type == "cuda") as prof:
        dec.push(tokens[20:25])
        _sync(dev)
    return {"audio_s": round(seconds, 3), "offline_rtf": offline / seconds, "streamed_rtf": streamed / seconds,
            "first_chunk_ms": first_chunk * 1e3, "first_chunk_samples": int(first.size),
            "first_chunk_kernels": kernel_table(prof, dev.type == "cuda", 1, top=20)}


def _figures(d: dict) -> dict:
    return {k: v for k, v in d.items() if not isinstance(v, list)}  # the kernel tables stay in the JSON


def tts3b_figures(eng: Engine, model: CosyVoiceModel, prompt: SpeakerPrompt, prompt_len: int,
                  steps: int) -> dict[str, float | dict[str, dict[str, float]]]:
    vocab = eng.model_config.vocab_size
    g = torch.Generator().manual_seed(7)
    greedy = SamplingParams(temperature=0.0, max_tokens=steps, ignore_eos=True)
    eng.generate(torch.randint(5, vocab, (prompt_len,), generator=g).tolist(), greedy)  # warm-up (graphs, kernels)
    seq = eng.llm.add_request(torch.randint(5, vocab, (prompt_len,), generator=g).tolist(), greedy)
    while eng.llm.seqs[seq].num_cached_tokens < prompt_len:
        eng.llm.step()
    t0 = time.perf_counter()
    n = 0
    while eng.llm.has_unfinished():
        n += len(eng.llm.step())
    tok_s = n / (time.perf_counter() - t0)

    # First audio, each figure the median of REPEATS fresh runs (a single run moved by ~10 ms: H100 run5 timed the
    # prefix-cached case 9 ms slower than the cold one). Cold: a prompt never seen. Cached: a speaker part (all but
    # the sentence's 24 tokens) already in the prefix cache, as in the server (the speaker prompt is the same for
    # every sentence; it is prefilled at start) and a new sentence each run.
    shared = torch.randint(5, vocab, (prompt_len - 24,), generator=g).tolist()

    def sentence() -> list[int]:  # the cached speaker part and a new sentence
        return shared + torch.randint(5, vocab, (24,), generator=g).tolist()

    def cold() -> list[int]:
        return torch.randint(5, vocab, (prompt_len,), generator=g).tolist()

    eng.generate(sentence(), SamplingParams(temperature=0.0, max_tokens=1))  # caches the speaker part's full blocks
    stages: dict[str, dict[str, float]] = {}
    out: dict[str, float | dict[str, dict[str, float]]] = {
           "tts3b_decode_tok_s_b1": tok_s, "realtime_tok_s": TOKENS_PER_S,
           "first_text_to_first_audio_ms": _median(lambda: first_audio_ms(eng, model, prompt, cold()), stages,
                                                   "cold"),
           "first_text_to_first_audio_prefix_cached_ms": _median(
               lambda: first_audio_ms(eng, model, prompt, sentence()), stages, "cached"),
           "tts_prompt_len": prompt_len, "first_audio_runs": REPEATS}
    # As served: the LM decodes on in its own thread, held while the first window runs (the server does so while
    # it speaks few utterances: controller.step_audio_synthesis.TTS_HOLD_MAX_STREAMS); then without the hold.
    out["first_audio_served_ms"] = _median(
        lambda: first_audio_served_ms(eng, model, prompt, sentence(), hold=True), stages, "served")
    out["first_audio_served_no_hold_ms"] = _median(
        lambda: first_audio_served_ms(eng, model, prompt, sentence(), hold=False), stages, "served_no_hold")
    out["first_audio_stages"] = stages
    return out


def _median(run: Callable[[], tuple[float, dict[str, float]]], stages: dict[str, dict[str, float]],
            name: str) -> float:
    """The median of REPEATS runs' totals; that run's stage marks go to stages[name]."""
    runs = sorted((run() for _ in range(REPEATS)), key=lambda r: r[0])
    total, marks = runs[len(runs) // 2]
    stages[name] = marks
    return total


class _Marks:
    """Milliseconds from a start to named moments of a first-audio run (the first time each is marked)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.ms: dict[str, float] = {}

    def mark(self, name: str) -> float:
        return self.ms.setdefault(name, (time.perf_counter() - self.t0) * 1e3)


def first_audio_ms(eng: Engine, model: CosyVoiceModel, prompt: SpeakerPrompt,
                   ids: list[int]) -> tuple[float, dict[str, float]]:
    """Text arrives -> prompt prefill -> 25 tokens -> first flow window -> HiFT -> audio chunk, in sequence:
    (total ms, ms to the first token, to the 25th, to the audio)."""
    dev = model.device
    first = SamplingParams(temperature=0.0, max_tokens=25, ignore_eos=True)
    _sync(dev)
    marks = _Marks()
    seq = eng.llm.add_request(ids, first)
    dec = StreamingDecoder(model, prompt)
    got: list[int] = []
    audio_samples = 0
    while audio_samples == 0 and eng.llm.has_unfinished():
        for d in eng.llm.step():
            if d.seq_id == seq and d.token_id is not None:  # None only for an aborted sequence: none is here
                got.append(d.token_id % 5120)
                marks.mark("first_token")
        if len(got) >= 25 or not eng.llm.has_unfinished():
            marks.mark("token_25")
            audio_samples = dec.push(got).size
            got = []
    _sync(dev)
    return marks.mark("audio"), marks.ms


def first_audio_served_ms(eng: Engine, model: CosyVoiceModel, prompt: SpeakerPrompt, ids: list[int],
                          hold: bool) -> tuple[float, dict[str, float]]:
    """As the server runs a sentence: the LM decodes on its own thread (up to 200 tokens) while this thread, once
    25 tokens exist, runs the first flow window and HiFT, the LM held meanwhile if `hold` (Engine.hold, in the
    server; an event here, as this thread steps the engine itself). Text arrives -> first audio chunk: (total ms,
    ms to the LM's first and 25th token, to the window's start on this thread, to the audio, and how many tokens
    the LM made meanwhile past the 25th)."""
    dev = model.device
    tokens: queue.Queue[int] = queue.Queue()
    stop = threading.Event()
    go = threading.Event()
    go.set()
    _sync(dev)
    marks = _Marks()
    made = 0
    seq = eng.llm.add_request(ids, SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True))

    def decode() -> None:
        nonlocal made
        while not stop.is_set() and eng.llm.has_unfinished():
            go.wait()
            for d in eng.llm.step():
                if d.seq_id == seq and d.token_id is not None:
                    made += 1
                    marks.mark("first_token")
                    if made == 25:
                        marks.mark("token_25")
                    tokens.put(d.token_id % 5120)

    lm = threading.Thread(target=decode, name="bench-lm")
    lm.start()
    try:
        dec = StreamingDecoder(model, prompt)
        got: list[int] = []
        while True:
            got.append(tokens.get(timeout=120))
            while not tokens.empty():
                got.append(tokens.get_nowait())
            if dec.num_tokens + len(got) < 25:
                continue
            if hold and dec.runs_first_window(len(got)):
                go.clear()
            marks.mark("window_start")
            try:
                if dec.push(got).size:  # the audio is on the host: its stream has finished
                    total = marks.mark("audio")
                    return total, {**marks.ms, "lm_tokens_past_25": float(made - 25)}
            finally:
                go.set()
            got = []
    finally:
        stop.set()
        lm.join()
        eng.llm.abort(seq)
        _sync(dev)


def stream_rounds(model: CosyVoiceModel, prompt: SpeakerPrompt, tokens: list[int], n: int, batched: bool,
                  rounds: int, prof: torch.profiler.profile | None = None) -> tuple[float, float]:
    """n streams past their first window, then `rounds` rounds of 5 tokens each: (mean ms a round, the FlowBatcher's
    mean batch, 0 without one). Batched: n decoder threads whose windows a FlowBatcher runs together (as the server
    does); else one stream after another, every window alone. `prof` (started and stopped around the timed rounds)
    sees where their time goes."""
    batcher = FlowBatcher(max_batch=max(n, 1)) if batched else None
    pool = concurrent.futures.ThreadPoolExecutor(n) if batcher else None
    decs = [StreamingDecoder(model, prompt, seed=i, flow=batcher.run if batcher else None) for i in range(n)]

    def push_all(chunk: list[int]) -> None:
        if pool is None:
            for d in decs:
                d.push(chunk)
        else:
            list(pool.map(lambda d: d.push(chunk), decs))

    try:
        push_all(tokens[:25])  # everyone past the first window: the steady state
        _sync(model.device)
        if prof is not None:
            prof.start()
        t0 = time.perf_counter()
        for r in range(rounds):
            push_all(tokens[25 + r * HOP_TOKENS: 30 + r * HOP_TOKENS])
        _sync(model.device)
        round_ms = (time.perf_counter() - t0) / rounds * 1e3
        if prof is not None:
            prof.stop()
    finally:
        if pool is not None:
            pool.shutdown()
        if batcher is not None:
            batcher.close()
    return round_ms, (batcher.jobs_run / max(1, batcher.batches_run) if batcher else 0.0)


def concurrency(model: CosyVoiceModel, prompt: SpeakerPrompt, tokens: list[int], counts: list[int],
                rounds: int, time_limit_s: float) -> list[dict[str, float | bool | str]]:
    """Round time for N streams, one after another (each window alone) and through a FlowBatcher (N decoder
    threads, windows of equal shape batched), side by side. The largest N (the target) first, then smaller ones until
    a row is real-time both ways (fewer streams would be too) or time_limit_s has passed: a run cut off by its time
    limit still has the row that matters. A row that fails records why (beside what it measured before) and the
    next, smaller N runs."""
    rows: list[dict[str, float | bool | str]] = []
    budget = HOP_TOKENS / TOKENS_PER_S
    t_start = time.perf_counter()
    for n in sorted(counts, reverse=True):
        if rows and time.perf_counter() - t_start > time_limit_s:
            break
        row: dict[str, float | bool | str] = {"streams": n, "budget_ms": budget * 1e3}
        try:
            for label in ("alone", "batched"):
                # Timing the last pass: with CUDA graphs a window shape is captured the second time it is seen, so
                # every batch shape must have been seen twice before (the first window after warm_up, in this row's
                # rows).
                for _ in range(3 if model.flow_graphs is not None else 1):
                    ms, mean_batch = stream_rounds(model, prompt, tokens, n, label == "batched", rounds)
                row[f"{label}_round_ms"] = ms
                if label == "batched":
                    row["batched_mean_batch"] = mean_batch
                row[f"{label}_realtime"] = ms <= budget * 1e3
        except Exception as exc:  # 64 streams out of memory, say: that row says why, fewer streams are still tried
            row["error"] = failure(exc)
            print(f"{n} streams: failed: {row['error']}", flush=True)
        rows.append(row)
        if row.get("alone_realtime") and row.get("batched_realtime"):
            break
    return sorted(rows, key=lambda r: r["streams"])


def concurrency_profile(model: CosyVoiceModel, prompt: SpeakerPrompt, tokens: list[int], n: int,
                        rounds: int) -> dict:
    """One more pass of n streams (their shapes captured by concurrency's passes), profiled: device time by kernel
    per round, and how much of the wall time the device was busy. Where the rounds' time goes. Batched on CUDA
    (CUPTI sees every thread's kernels); on the CPU one stream after another, as the profiler sees only the ops of
    its own thread."""
    cuda = model.device.type == "cuda"
    prof = profiler(cuda)
    ms, _ = stream_rounds(model, prompt, tokens, n, cuda, rounds, prof)
    return {"streams": n, "batched": cuda, "round_ms": ms, "busy_ms_per_round": busy_us(prof, cuda) / rounds / 1e3,
            "kernels": kernel_table(prof, cuda, rounds)}


def _failed(what: str, d: dict) -> bool:
    """Whether a section (or row) failed; if so, prints what it was and why in its place."""
    if "error" in d:
        print(f"{what:<44}failed: {d['error']}")
    return "error" in d


def print_table(result: dict, counts: list[int], concurrency_s: float) -> None:
    """The figures of one run, as the closing note quotes them; a section that failed prints why in its place."""
    d, t = result["decoder"], result["tts3b"]
    print(f"\n{result['profile']} on {result['device']}, commit {result['commit']}")
    if not _failed("TTS-3B", t):
        print(f"{'TTS-3B decode, batch 1':<44}{t['tts3b_decode_tok_s_b1']:>10.1f} tok/s (real time needs 41.7)")
        print(f"{'first text -> first audio chunk, as served':<44}{t['first_audio_served_ms']:>10.1f} ms "
              f"(LM held for the first window; decoding on meanwhile: {t['first_audio_served_no_hold_ms']:.1f} ms)")
        print(f"{'  the same, LM paused for the first window':<44}"
              f"{t['first_text_to_first_audio_prefix_cached_ms']:>10.1f} ms (speaker prompt cached; cold prompt "
              f"{t['first_text_to_first_audio_ms']:.1f} ms)")
        for name, marks in t.get("first_audio_stages", {}).items():
            print(f"  {name + ':':<16}" + ", ".join(f"{k} {v:.1f}" for k, v in marks.items()))
    if not _failed("flow + HiFT (decoder figures)", d):
        print(f"{'flow + HiFT offline RTF':<44}{d['offline_rtf']:>10.4f}")
        print(f"{'flow + HiFT streamed RTF':<44}{d['streamed_rtf']:>10.4f}")
        print(f"{'first chunk compute (25-token window)':<44}{d['first_chunk_ms']:>10.1f} ms")
        print(f"{'':<14}{'time':>13} {'calls':>7} {'share':>6}  kernel (the first chunk's, by device time)")
        for k in d["first_chunk_kernels"][:8]:
            print(f"{'':<14}{k['us_per_step']:>10.1f} us {k['calls_per_step']:>6.0f}x {k['share']:>6.1%}  "
                  f"{k['kernel'][:60]}")
    e = result.get("decoder_eager")
    if e is not None and not _failed("  the same launched op by op (no graphs)", e):
        print(f"{'  the same launched op by op (no graphs)':<44}{e['first_chunk_ms']:>10.1f} ms, streamed RTF "
              f"{e['streamed_rtf']:.4f}, offline RTF {e['offline_rtf']:.4f}")
    print(f"{'streams: round ms (budget 120)':<44}{'alone':>10}{'batched':>10}{'mean batch':>12}")
    for r in result["concurrency"]:
        if not _failed(f"  {r['streams']}", r):
            print(f"{'  ' + str(r['streams']):<44}{r['alone_round_ms']:>10.1f}{r['batched_round_ms']:>10.1f}"
                  f"{r['batched_mean_batch']:>12.1f}")
    print(f"{'real-time streams, alone / batched':<44}{result['max_realtime_streams_alone']:>10}"
          f"{result['max_realtime_streams_batched']:>10}")
    smallest = min((r["streams"] for r in result["concurrency"]), default=None)
    if smallest is not None and any(c < smallest for c in counts) and not (
            result["concurrency"][0].get("alone_realtime") and result["concurrency"][0].get("batched_realtime")):
        print(f"  (stopped by --concurrency-s {concurrency_s:g} before trying fewer than {smallest} streams: "
              "a 0 above may only mean untried)")
    cp = result["concurrency_profile"]
    if _failed("\nconcurrency profile", cp):
        return
    print(f"\n{cp['streams']} streams {'batched' if cp['batched'] else 'alone'}: round {cp['round_ms']:.1f} ms, "
          f"{'CPU' if result['device'] == 'cpu' else 'device'} busy {cp['busy_ms_per_round']:.1f} ms a round; "
          "by kernel (us a round, calls a round, share):")
    for k in cp["kernels"][:15]:
        print(f"{k['us_per_step']:>10.1f} {k['calls_per_step']:>7.1f} {k['share']:>6.1%}  {k['kernel']}")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.tts", description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--profile", default="full-random", choices=["tiny", "full-random"],
                    help="tiny: small random models (CPU); full-random: TTS-3B and CosyVoice dimensions (GPU)")
    ap.add_argument("--tokens", type=count, default=500, help="speech tokens the decoder figures are measured on")
    ap.add_argument("--prompt-tokens", type=count, default=125, help="speaker prompt length in flow tokens")
    ap.add_argument("--tts-prompt-len", type=count, default=400, help="TTS-3B prompt length in LM tokens")
    ap.add_argument("--tts-ckpt", type=Path, help="existing TTS-3B checkpoint (default: written to a temp dir)")
    ap.add_argument("--streams", type=count_list("stream counts", "1,2,4,8"), default=None,
                    help="stream counts to try, largest first (default 1,2,4,8,16,32,64 on a GPU, up to 16 on a CPU)")
    ap.add_argument("--concurrency-s", type=float, default=40.0,
                    help="start no further stream count after this many seconds of the concurrency section")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    ap.add_argument("--out", type=Path, default=RESULTS / "tts.json", help="the JSON report")
    a = ap.parse_args()
    dev = torch.device(a.device)
    # Fewer tokens left the first window or the rounds with nothing to decode: a first chunk of 0 ms and rounds of
    # 0.2 ms, every stream count "real-time".
    if a.tokens < 25 + ROUNDS * HOP_TOKENS:
        ap.error(f"--tokens {a.tokens}: at least {25 + ROUNDS * HOP_TOKENS} (the first 25-token window, then "
                 f"{ROUNDS} rounds of {HOP_TOKENS})")
    if a.tts_prompt_len < 25:
        ap.error(f"--tts-prompt-len {a.tts_prompt_len}: at least 25 (a speaker part and a 24-token sentence)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {a.device}: torch sees no CUDA device here (on a CPU: --device cpu --profile tiny)")
    if dev.type == "cpu" and a.profile != "tiny":
        ap.error("full-random is CosyVoice-300M and TTS-3B at their sizes (a 7 GB checkpoint, minutes a figure on a "
                 "CPU): run --profile tiny here, full-random on a GPU")
    if dev.type == "cpu":
        # As the tiny profile's server: intra-op threads on top of the decoder threads oversubscribe the cores.
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"writing a {a.profile} CosyVoice folder ...", flush=True)
        model = CosyVoiceModel.load(write_cosyvoice_folder(Path(tmp) / "cv", a.profile), device=dev)
    g = torch.Generator().manual_seed(0)
    prompt = SpeakerPrompt(torch.randint(0, 5120, (a.prompt_tokens,), generator=g),
                           torch.randn(model.cfg.flow.mel_frames(a.prompt_tokens), 80, generator=g) - 5,
                           torch.randn(192, generator=g))
    tokens = torch.randint(0, 5120, (a.tokens,), generator=g).tolist()
    result: dict = {"profile": a.profile, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "commit": commit()}

    def section(name: str, measure: Callable[[], dict]) -> None:
        """result[name] = measure(), saved (a run cut off by its time limit keeps what it measured). A section that
        fails (out of memory, a refused capture) records {"error": why} and the next section runs."""
        try:
            result[name] = measure()
        except Exception as exc:
            result[name] = {"error": failure(exc)}
        print(f"{name}: {_figures(result[name])}", flush=True)
        write_json(a.out, result)

    graphed = model.flow_graphs is not None
    if graphed:  # side by side: flow and vocoder launched op by op, then replayed as graphs
        graphs, model.flow_graphs, model.hift_graphs = (model.flow_graphs, model.hift_graphs), None, None
        section("decoder_eager", lambda: decoder_figures(model, prompt, tokens))
        model.flow_graphs, model.hift_graphs = graphs

    def decoder() -> dict:
        if graphed:  # every steady window shape captured before the figures, as the server does at start
            warm_up(model, prompt)
        return decoder_figures(model, prompt, tokens)

    section("decoder", decoder)
    result["flow_cuda_graphs"] = graphed
    # what the graphs did for the decoder figures (a replay count of 0 would mean a path ran eagerly)
    result["graphs"] = {name: {"captures": g.captures, "replays": g.replays, "failed": g.failed}
                        for name, g in (("flow", model.flow_graphs), ("vocoder", model.hift_graphs)) if g is not None}

    counts = a.streams or ([1, 2, 4, 8, 16] if dev.type == "cpu" else [1, 2, 4, 8, 16, 32, 64])
    result["concurrency"] = concurrency(model, prompt, tokens, counts, rounds=ROUNDS, time_limit_s=a.concurrency_s)
    for label in ("alone", "batched"):
        ok = [r["streams"] for r in result["concurrency"] if r.get(f"{label}_realtime")]
        result[f"max_realtime_streams_{label}"] = max(ok) if ok else 0
    write_json(a.out, result)
    section("concurrency_profile", lambda: concurrency_profile(model, prompt, tokens, max(counts), rounds=ROUNDS))

    def tts3b() -> dict:
        ckpt = bench_checkpoint(a.tts_ckpt, a.profile)
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        eng = Engine.from_pretrained(ckpt, device=dev, dtype=dtype, progress=False,
                                     config=EngineConfig(gpu_memory_utilization=None, kv_cache_memory_gib=4.0,
                                                         max_model_len=4096, cuda_graph_max_batch=8))
        try:
            return tts3b_figures(eng, model, prompt, a.tts_prompt_len, 64 if a.profile == "tiny" else 256)
        finally:
            eng.close()

    section("tts3b", tts3b)
    print_table(result, counts, a.concurrency_s)
    print(f"wrote {a.out}")
    sections = [result[k] for k in ("decoder_eager", "decoder", "concurrency_profile", "tts3b") if k in result]
    if any("error" in d for d in sections + result["concurrency"]):
        sys.exit(1)  # the suite's summary marks the step failed; the JSON holds every figure measured and why not


if __name__ == "__main__":
    main()
