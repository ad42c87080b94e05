"""The issues' GPU targets against one gpu_suite run: reads DIR/{engine,kernels,tts}.json, prints a markdown table
(target, measured, met) and writes it to DIR/report.md, so the figures go into bench/RESULTS.md and the closing
notes exactly as measured.

    python -m bench.report bench/results/gpu          # the $OUT of bench/gpu_suite.sh

"Met" is arithmetic on this run's JSON only. The issues name an H100: the card is printed first, and a run on another
card says so in every row's verdict.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Row:
    issue: int
    what: str
    target: str
    measured: str
    met: bool | None  # None: the figure is missing (its bench failed or did not run)


def _load(folder: Path, name: str) -> dict | None:
    path = folder / f"{name}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        # A step killed by its time limit while writing: its figures are missing, the other benchmarks' still count.
        print(f"bench.report: {path} is not complete JSON ({exc}): its figures read as missing", file=sys.stderr)
        return None


def _find(rows: list[dict], **match: object) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _ms(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _check(issue: int, what: str, target: str, value: float | None, fmt: str,
           ok: Callable[[float], bool], failed: str | None = None) -> Row:
    """The row of one figure; without the figure, "failed: <why>" where its bench recorded why, else "missing"."""
    if value is None:
        # a "|" in the message would split the markdown row
        return Row(issue, what, target, f"failed: {failed.replace('|', '/')}" if failed else "missing", None)
    return Row(issue, what, target, format(value, fmt), ok(value))


def _error(cell: object) -> str | None:
    """Why a figure is not there: a failed row's or section's "error" (bench.failure), or a cell that holds one in
    place of its figure (bench.cuda_timing.attempt: "oom", "error: ...")."""
    if isinstance(cell, dict):
        return cell.get("error")
    if cell == "oom":
        return "out of memory"
    return cell.removeprefix("error: ") if isinstance(cell, str) and cell.startswith("error") else None


def _step_failure(folder: Path, name: str) -> str | None:
    """The suite's last word on a benchmark step that left no JSON (summary.txt: "engine skipped: no checkpoint",
    "engine rc=124 170s"), when that step failed."""
    path = folder / "summary.txt"
    lines = [line for line in path.read_text().splitlines() if line.startswith(f"{name} ")] if path.is_file() else []
    return lines[-1] if lines and not lines[-1].startswith(f"{name} rc=0 ") else None


def _failed_case(rows: list[dict], prefix: str) -> str | None:
    """The error of a bench.kernels case that failed whole (its row is {"case": "<fn>(<first two args>)",
    "error": ...}, bench.kernels.guarded), found by the start of that case name."""
    return next((r["error"] for r in rows if "error" in r and str(r.get("case", "")).startswith(prefix)), None)


def _at_least(floor: float) -> Callable[[float], bool]:
    # a loop's floor bound now: a lambda in the loop body would read the loop variable's last value
    return lambda v: v >= floor


def engine_rows(engine: dict | None) -> list[Row]:
    rows = {r["metric"].split(" (")[0]: r for r in (engine or {}).get("rows", [])}
    b1 = rows.get("decode tok/s batch 1") or {}
    tok_s = b1.get("engine")
    ratio = tok_s / b1["baseline"] if tok_s and b1.get("baseline") else None
    why = _error(b1)  # a row that failed keeps what it measured before (bench.engine)
    return [_check(3, "decode tok/s, batch 1, TTS-3B", ">= 300", tok_s, ".1f", lambda v: v >= 300, why),
            _check(3, "decode speed-up over the upstream-style baseline, batch 1", ">= 30x", ratio, ".1f",
                   lambda v: v >= 30, why)]


def kernel_rows(kernels: dict | None) -> list[Row]:
    k = kernels or {}
    out: list[Row] = []
    prefill = [r for r in k.get("prefill", []) if "ms" in r]
    for case, floor in (("chat-tp8 d128", 450), ("tts3b d64", 300)):
        row = max((r for r in prefill if r["case"] == case), key=lambda r: r["S"], default=None)
        ms = row["ms"] if row else {}
        ours = _ms(ms.get("ours_sqrt_alibi"))
        tflops = row["flops"] / (ours * 1e-3) / 1e12 if row and ours else None
        why = _error(ms.get("ours_sqrt_alibi")) if row else _failed_case(k.get("prefill", []), f"prefill_case({case!r}")
        label = f"prefill {case}, S={row['S'] if row else '?'}"
        out.append(_check(4, f"{label}: TFLOP/s", f">= {floor}", tflops, ".0f", _at_least(floor), why))
        if case != "chat-tp8 d128":
            continue
        for impl, name, need in (("sdpa_cudnn_no_bias", "cuDNN SDPA without bias", 0.8),
                                 ("flex_sqrt_alibi_score_mod", "FlexAttention + sqrt score_mod", 2.0),
                                 ("sdpa_dense_sqrt_alibi_bias", "SDPA + dense bias", 6.0)):
            other = _ms(ms.get(impl))
            ratio = other / ours if other and ours else None
            out.append(_check(4, f"{label}: speed vs {name}", f">= {need}x", ratio, ".2f", _at_least(need),
                              why or _error(ms.get(impl))))
    copy = k.get("copy_tb_per_s")
    decode = [r for r in k.get("decode", []) if "tb_per_s" in r]
    b32 = _find(decode, case="chat d128", batch=32)
    why = None if b32 else _failed_case(k.get("decode", []), "decode_case('chat d128', 32)")
    out.append(_check(4, f"paged decode chat d128, batch 32 x {_ctx(b32)}: TB/s", ">= 2.7",
                      b32["tb_per_s"] if b32 else None, ".2f", lambda v: v >= 2.7, why))
    out.append(_check(4, "the same, fraction of the measured copy bandwidth", ">= 0.90",
                      b32["tb_per_s"] / copy if b32 and copy else None, ".2f", lambda v: v >= 0.9, why))
    for case in ("chat d128", "tts3b d64"):
        b1 = _find(decode, case=case, batch=1)
        out.append(_check(4, f"paged decode {case}, batch 1 x {_ctx(b1)}: TB/s", ">= 1.5",
                          b1["tb_per_s"] if b1 else None, ".2f", lambda v: v >= 1.5,
                          None if b1 else _failed_case(k.get("decode", []), f"decode_case({case!r}, 1)")))
    voc = _find(k.get("vocoder", []), case="hift_1s")
    if voc and "ms" in voc:
        eager = _ms(voc["ms"].get("eager"))
        for impl in ("fused", "fused_cuda_graph"):
            fused = _ms(voc["ms"].get(impl))
            out.append(_check(4, f"HiFT 1 s, batch 1: eager / {impl}", ">= 2x",
                              eager / fused if eager and fused else None, ".2f", lambda v: v >= 2,
                              _error(voc["ms"].get("eager")) or _error(voc["ms"].get(impl))))
        out.append(_check(4, "HiFT 1 s: max abs(fused - eager)", "<= 1e-3", voc.get("max_abs_diff_fused_vs_eager"),
                          ".1e", lambda v: v <= 1e-3))
    else:
        out.append(_check(4, "HiFT 1 s, batch 1: eager / fused", ">= 2x", None, "", lambda v: False,
                          _failed_case(k.get("vocoder", []), "vocoder_case(1.0,")))
    return out


def tts_rows(tts: dict | None) -> list[Row]:
    t = tts or {}
    tts3b = t.get("tts3b") or {}
    failed = _error(tts3b)  # the section failed whole (bench.tts): each of its rows says why
    cold, cached = tts3b.get("first_text_to_first_audio_ms"), tts3b.get("first_text_to_first_audio_prefix_cached_ms")
    streams = None
    measured = [r for r in t.get("concurrency", []) if "error" not in r]
    if "max_realtime_streams_alone" in t and (measured or not t.get("concurrency")):
        streams = max(t["max_realtime_streams_alone"], t.get("max_realtime_streams_batched", 0))
    elif "max_realtime_streams_measured" in t:  # bench.tts before cross-session batching (session 2's runs)
        streams = t["max_realtime_streams_measured"]
    rows = [_check(5, "first reply text -> first audio chunk, ms (cold TTS prompt)", "<= 150", cold, ".0f",
                   lambda v: v <= 150, failed)]
    if "first_text_to_first_audio_prefix_cached_ms" in tts3b or failed:  # bench.tts since session 5
        rows.append(_check(5, "the same, speaker prompt in the prefix cache", "<= 150", cached, ".0f",
                           lambda v: v <= 150, failed))
    if "first_audio_served_ms" in tts3b or failed:  # bench.tts since session 11 (the LM held since 13)
        what = "decoding on meanwhile" if "first_audio_served_ms" in tts3b and \
            "first_audio_served_no_hold_ms" not in tts3b else "held for the first window"
        rows.append(_check(5, f"the same, as served (the LM {what})", "<= 150",
                           tts3b.get("first_audio_served_ms"), ".0f", lambda v: v <= 150, failed))
    # every stream count failed: the first (the largest, the target) says why
    why = None if measured else next((r["error"] for r in t.get("concurrency", []) if "error" in r), None)
    return rows + [_check(5, "concurrent streams that stay real-time", ">= 64", streams, ".0f", lambda v: v >= 64,
                          why)]


def _plumbing(d: dict | None) -> str | None:
    """Why a benchmark's figures cannot be held against a target: a CPU plumbing run (tiny models or shapes)."""
    if d and d.get("smoke"):
        return "bench.kernels --smoke"
    if d and d.get("profile") == "tiny":
        return "--profile tiny"
    return None


def report(folder: Path) -> str:
    engine, kernels, tts = (_load(folder, n) for n in ("engine", "kernels", "tts"))
    cards = {d.get("device") for d in (engine, kernels, tts) if d}
    # kernels.json holds the full hash, engine.json and tts.json the short one: one commit is named once
    commits = {d["commit"][:7] for d in (engine, kernels, tts) if d and d.get("commit")}
    card = ", ".join(sorted(c for c in cards if c)) or "unknown"
    on_h100 = all("H100" in c for c in cards if c) and bool(cards)
    lines = [f"GPU targets of issues 3, 4 and 5 — card: {card}; commit(s): {', '.join(sorted(commits))}",
             "", "| issue | what | target | measured | met |", "| --- | --- | --- | ---: | --- |"]
    for name, source, rows in (("engine", engine, engine_rows(engine)), ("kernels", kernels, kernel_rows(kernels)),
                               ("tts", tts, tts_rows(tts))):
        plumbing = _plumbing(source)
        step = _step_failure(folder, name) if source is None else None
        for r in rows:
            if step and r.measured == "missing":  # no JSON, and the suite says why
                r = replace(r, measured=f"failed: {step}")
            verdict = "-" if r.met is None else ("yes" if r.met else "no")
            if r.met is not None and plumbing:  # a tiny model's tok/s "met" TTS-3B's target
                verdict = f"- ({plumbing}: not the target's size)"
            elif r.met is not None and not on_h100:
                verdict += " (not an H100)"
            lines.append(f"| {r.issue} | {r.what} | {r.target} | {r.measured} | {verdict} |")
    return "\n".join(lines + _leads(engine, kernels, tts)) + "\n"


def _leads(engine: dict | None, kernels: dict | None, tts: dict | None) -> list[str]:
    """What the next kernel work needs besides the verdicts: the tile the prefill autotuner chose per shape (which
    candidates to keep), the batch-1 GEMV timings behind kernels.gemv's choices, the decode graphs' GEMV sides (each
    way's replay time), batch-1 decode with and without PDL, where a batch-1 decode step's GPU time goes (its five
    largest kernels), the flow estimator's fused ops against their references, and the served first audio with the
    speech path on the LM's stream."""
    lines = []
    for row in (kernels or {}).get("prefill", []):
        for impl, tile in row.get("ours_tuned_config", {}).items():
            lines.append(f"- prefill {row['case']} S={row['S']}, {impl}: tuned tile {tile}")
        ms = row.get("ms", {})
        pointers, tma = _ms(ms.get("ours_sqrt_alibi")), _ms(ms.get("ours_sqrt_alibi_tma"))
        if pointers and tma:
            lines.append(f"- prefill {row['case']} S={row['S']}: K/V tiles by TMA {tma:.3f} ms, by pointers "
                         f"{pointers:.3f} ms ({pointers / tma:.2f}x; PREFILL_TMA is the default's switch)")
    for g in (engine or {}).get("gemv_us", []):
        if g["rows"] == 1:
            # engine.json before session 12 had "swiglu": true/false for what "fused" names now
            fused = g.get("fused", "swiglu" if g.get("swiglu") else "")
            split = f" (K split {g['split']})" if g.get("split", 1) > 1 else ""
            lines.append(f"- batch-1 GEMV {g['N']} x {g['K']}{' ' + fused if fused else ''}: Triton "
                         f"{g['triton']:.1f} us{split}, cuBLAS {g['cublas']:.1f} us")
    for g in (engine or {}).get("decode_graph_sides", []):
        lines.append(f"- decode graph, batch {g['batch']}: kept GEMVs {g['kept']}; ms a replay: "
                     + ", ".join(f"{side} {ms:.3f}" for side, ms in g["ms"].items()))
    by_metric = {r["metric"].split(" (")[0]: r["engine"] for r in (engine or {}).get("rows", []) if "engine" in r}
    if "decode tok/s batch 1, PDL off" in by_metric and "decode tok/s batch 1" in by_metric:
        lines.append(f"- batch-1 decode: {by_metric['decode tok/s batch 1']:.1f} tok/s with programmatic dependent "
                     f"launch, {by_metric['decode tok/s batch 1, PDL off']:.1f} without (same engine, graphs "
                     "captured again)")
    for k in (engine or {}).get("decode_profile_b1", [])[:5]:
        lines.append(f"- batch-1 decode step: {k['us_per_step']:.1f} us ({k['share']:.0%}, "
                     f"{k['calls_per_step']:g} calls) {k['kernel']}")
    for row in (kernels or {}).get("flow", []):
        ms = row.get("ms", {})
        if isinstance(ms.get("fused_cuda_graph"), float) and isinstance(ms.get("eager_cuda_graph"), float):
            ops = ", ".join(f"{k} {v * 1e3:.1f} us" for k, v in row.get("op_ms_cuda_graph", {}).items()
                            if isinstance(v, float))
            lines.append(f"- flow estimator call, first window, CUDA graph: fused {ms['fused_cuda_graph']:.2f} ms, "
                         f"torch references {ms['eager_cuda_graph']:.2f} ms; {ops}")
    served = (tts or {}).get("tts3b") or {}
    if "first_audio_served_no_hold_ms" in served:
        lines.append(f"- first audio as served: {served['first_audio_served_ms']:.0f} ms with the TTS LM held for "
                     f"the first window, {served['first_audio_served_no_hold_ms']:.0f} ms with it decoding on")
    elif "first_audio_served_one_stream_ms" in served:  # session 11-12 runs
        lines.append(f"- first audio as served: {served['first_audio_served_ms']:.0f} ms with the speech path on a "
                     f"high-priority stream of its own, {served['first_audio_served_one_stream_ms']:.0f} ms on the "
                     "LM's stream")
    for name, marks in served.get("first_audio_stages", {}).items():  # bench.tts since session 15
        lines.append(f"- first audio {name}, ms from the text: " + ", ".join(f"{k} {v:.1f}" for k, v in marks.items()))
    return [""] + lines if lines else []


def _ctx(row: dict | None) -> str:
    """A decode row's context as the targets state it ("16k"; the issue's targets are for 16k)."""
    ctx = (row or {}).get("ctx", 16384)
    return f"{ctx // 1024}k" if ctx % 1024 == 0 else str(ctx)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="where gpu_suite wrote engine.json, kernels.json and tts.json")
    a = ap.parse_args()
    if not any((a.folder / f"{name}.json").is_file() for name in ("engine", "kernels", "tts")):
        ap.error(f"{a.folder} holds none of engine.json, kernels.json, tts.json (bench/gpu_suite.sh's OUT)")
    text = report(a.folder)
    (a.folder / "report.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
