"""Bisects the CUDA illegal-address fault of the speech path beside a busy default stream (GPU only).

tests/speech_decoder/test_flow_graphs_gpu.py::test_the_speech_path_runs_on_its_own_stream_beside_a_busy_default_stream
faulted in H100 run4 and run5 (illegal memory access, surfacing at the next Triton module load or cuDNN call). In
session 15 on an H200, 12 parallel loops of this trial failed in 75 of 81 runs as the test does it (56 with the
illegal address itself, 19 with cuDNN then finding no engine to run, as the run5 test did with the illegal address
in its context), and in most runs of every variant tried: the other thread launching elementwise kernels only (no
cuBLAS), torch.cuda.empty_cache disabled (the capture's), PDL off, and every graph captured before the other thread
started (17 of 39). Each trial runs in its own process (the fault is sticky) and now tells the two apart (a cuDNN
error with a clean context is "other"); the variants below split the remaining suspects.

    python -m bench.diag_speech_stream --seconds 200 --out diag.json     # prints a table: variant, ok, fault
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

from bench import RESULTS, commit, count, write_json

# variant -> (extra environment, what it changes)
VARIANTS: dict[str, tuple[dict[str, str], str]] = {
    "nobusy": ({}, "no other thread: the control"),
    "base": ({}, "as the GPU test: the other thread multiplies on the legacy default stream"),
    "elementwise": ({}, "the other thread runs elementwise kernels only"),
    "poolstream": ({}, "the other thread on a stream of its own (non-blocking) instead of the legacy stream"),
    "samestream": ({}, "the speech path on the legacy default stream too (the GPU serialises the two threads)"),
    "hostonly": ({}, "the other thread does host work only (Python, the GIL), no GPU"),
    "nographs": ({}, "no CUDA graphs in the speech path (flow and HiFT eager)"),
    "prewarm": ({}, "every graph captured before the other thread starts"),
    "eagerload": ({"CUDA_MODULE_LOADING": "EAGER"}, "modules loaded at start, not lazily"),
    "blocking": ({"CUDA_LAUNCH_BLOCKING": "1"}, "every launch synchronous"),
    "nopdl": ({}, "programmatic dependent launch off"),
}


def _trial(variant: str, folder: str) -> str:
    """One decode beside the other thread, then the same decode on the default stream; 'ok' or 'mismatch ...'."""
    import numpy as np
    import torch

    if variant == "nopdl":
        from kernels.launch import set_pdl
        set_pdl(False)
    from speech_decoder.cosyvoice_model import CosyVoiceModel, SpeakerPrompt
    from speech_decoder.flow.flow import window_noise
    from speech_decoder.flow_graphs import FlowGraphs
    from speech_decoder.streaming_decoder import StreamingDecoder

    def prompt(n: int, seed: int) -> SpeakerPrompt:
        g = torch.Generator().manual_seed(seed)
        return SpeakerPrompt(torch.randint(0, 5120, (n,), generator=g),
                             torch.randn(int(n / 41.667 * 22050 / 256), 80, generator=g) - 5,
                             torch.randn(192, generator=g))

    def decode(model: CosyVoiceModel, p: SpeakerPrompt, tokens: list[int]) -> np.ndarray:
        dec = StreamingDecoder(model, p, seed=5)
        return np.concatenate([dec.push(tokens[i:i + 5]) for i in range(0, len(tokens), 5)] + [dec.finish()])

    model = CosyVoiceModel.load(folder, device="cuda", flow_dtype=torch.float32)
    if variant == "nographs":
        model.flow_graphs = model.hift_graphs = None
    if variant == "samestream":
        model.stream = None
    if variant != "nographs":  # as the test before it in that xdist worker: a FlowGraphs of its own, kept
        graphs, pr, dev = FlowGraphs(model.flow), prompt(50, 2), torch.device("cuda")
        for rows, n in [(1, 25), (1, 40), (2, 40), (1, 25)] * 2:
            g = torch.Generator().manual_seed(rows * 100 + n)
            frames = model.cfg.flow.mel_frames(n)
            noise = torch.cat([window_noise(rows * 100 + n + r, pr.mel.size(0), 40, frames, 80, dev)
                               for r in range(rows)])
            graphs(torch.randint(0, 5120, (rows, n), generator=g).cuda(), pr.tokens[None].expand(rows, -1).cuda(),
                   pr.mel[None].expand(rows, -1, -1).cuda(), torch.randn(rows, 192, generator=g).cuda(),
                   noise=noise, mel_len2=frames)
    p = prompt(75, 8)
    tokens = torch.randint(0, 5120, (300,), generator=torch.Generator().manual_seed(9)).tolist()
    if variant == "prewarm":
        decode(model, p, tokens), decode(model, p, tokens)
    stop, errors = threading.Event(), []

    def busy() -> None:
        try:
            side = torch.cuda.Stream() if variant == "poolstream" else None
            if variant == "hostonly":
                while not stop.is_set():
                    sum(i * i for i in range(10_000))
                return
            with torch.cuda.stream(side):
                a = torch.randn(1024, 1024, device="cuda")
                while not stop.is_set():
                    a = torch.tanh(a * 1.0001 + 0.1) if variant == "elementwise" else torch.tanh(a @ a)
            torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001 - reported with the result
            errors.append(repr(e)[:200])

    other = threading.Thread(target=busy)
    if variant != "nobusy":
        other.start()
    try:
        own = decode(model, p, tokens)
    finally:
        stop.set()
        if variant != "nobusy":
            other.join()
    torch.cuda.synchronize()  # a fault in work still queued surfaces here, inside the trial, not at its exit
    model.stream = None
    default = decode(model, p, tokens)
    rel = float(np.linalg.norm(own - default) / np.linalg.norm(default))
    return ("ok" if rel < 1e-4 else f"mismatch rel={rel:.2e}") + (f" other thread: {errors}" if errors else "")


def _kind(exc: BaseException) -> str:
    """'fault' when the CUDA context holds an illegal address (the error may have surfaced elsewhere first: in
    cuDNN, which then finds no engine to run, or at a Triton module load), else 'error'."""
    import torch

    if "illegal memory access" in str(exc):
        return "fault"
    try:
        torch.cuda.synchronize()
    except Exception as sticky:  # noqa: BLE001 - its message is the question
        return "fault" if "illegal memory access" in str(sticky) else "error"
    return "error"


def _run_one(variant: str, folder: str) -> tuple[str, str]:
    """One trial in a process of its own: (outcome, detail). A process that died, before its RESULT line or after
    it, is a 'fault' when its output names the illegal address (torch aborts the process when the sticky error
    meets a destructor or the exit), else 'crashed': neither is ever counted 'ok'."""
    env = {**os.environ, **VARIANTS[variant][0]}
    try:
        r = subprocess.run([sys.executable, "-m", "bench.diag_speech_stream", "--trial", variant, folder],
                           capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired:
        return "timeout", ""
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None or r.returncode != 0:
        said = f"{line} then " if line else ""
        died = f"{said}exit status {r.returncode}: {(r.stderr or r.stdout)[-400:]}"
        return ("fault" if "illegal memory access" in r.stderr + r.stdout else "crashed"), died
    outcome = line.split(" ", 2)[1]
    return outcome, line.split(" ", 2)[2] if outcome != "ok" else ""


def _variants(text: str) -> list[str]:
    names = text.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    return names


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.diag_speech_stream", description=__doc__.split("\n\n")[0])
    ap.add_argument("--trial", nargs=2, metavar=("VARIANT", "FOLDER"), help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=200,
                    help="time for the whole run, warm-up trial included (default 200)")
    ap.add_argument("--workers", type=count, default=12, help="trials at once (the GPU tests run 12 workers)")
    ap.add_argument("--variants", default=",".join(VARIANTS), type=_variants,
                    help="comma-separated, from: " + ", ".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=RESULTS / "diag_speech_stream.json",
                    help="JSON with the counts and the first failures (default: %(default)s)")
    args = ap.parse_args()
    if args.trial:
        try:
            print("RESULT", _trial(*args.trial), flush=True)
        except Exception as e:  # noqa: BLE001 - the outcome is the point
            where = " | ".join(ln.strip() for ln in traceback.format_exc().splitlines()[-8:-1])
            print(f"RESULT {_kind(e)} {type(e).__name__}: {str(e)[:160]!r} at {where[:700]}", flush=True)
        return
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench.diag_speech_stream: no CUDA device here (it bisects a fault of CUDA streams)")

    from speech_decoder.checkpoint import write_cosyvoice_folder

    variants = args.variants
    # gpu_suite's step limit allows --seconds and little more: the warm-up counts, and no trial starts that would
    # likely end past the deadline (trials are processes of tens of seconds)
    end = time.monotonic() + args.seconds
    folder = str(write_cosyvoice_folder(Path(tempfile.mkdtemp()) / "cv", "tiny"))
    _run_one("nobusy", folder)  # compiles every kernel once, into Triton's cache
    counts = _loops(variants, folder, end, args.workers, args.out)
    print(f"{'variant':<12} {'ok':>4} {'fault':>6} {'other':>6}  what it changes (fault: an illegal address; other: "
          "another error, a mismatch, a crash or a timeout)")
    for v in variants:
        c = counts[v]
        print(f"{v:<12} {c['ok']:>4} {c['fault']:>6} {sum(c.values()) - c['ok'] - c['fault']:>6}  {VARIANTS[v][1]}")
    print(f"wrote {args.out}")


def _loops(variants: list[str], folder: str, end: float, workers: int, out: Path) -> dict[str, Counter]:
    """Trials of the variants in turn on `workers` threads, none started that would likely end after `end`
    (time.monotonic(); by the longest trial yet): the outcomes counted, the first failures' details kept, all saved
    to `out` after every trial (a run cut off by its time limit keeps what it found)."""
    counts: dict[str, Counter] = {v: Counter() for v in variants}
    first: dict[str, list[str]] = {v: [] for v in variants}
    lock, turn = threading.Lock(), iter(range(1 << 30))
    longest = [0.0]

    def save() -> None:
        write_json(out, {"commit": commit(), "counts": {v: dict(c) for v, c in counts.items()},
                         "first_failures": first})

    def loop() -> None:
        while True:
            with lock:
                if time.monotonic() + longest[0] >= end:
                    return
                v = variants[next(turn) % len(variants)]
            started = time.monotonic()
            outcome, detail = _run_one(v, folder)
            with lock:
                longest[0] = max(longest[0], time.monotonic() - started)
                counts[v][outcome.split()[0]] += 1
                if detail and len(first[v]) < 3:
                    first[v].append(detail)
                save()

    threads = [threading.Thread(target=loop) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    save()  # also when no trial fitted in the time
    return counts


if __name__ == "__main__":
    main()
