"""Latency benchmark: real speech through the Python client against a server, speculation on and off.

    python -m bench.latency [--runs 5] [--modes on,off]                 # starts one server per mode itself
    python -m bench.latency --url ws://127.0.0.1:8765/v1/realtime        # a running server, as configured
    python -m bench.latency --url-on URL_A --url-off URL_B               # two running servers
    python -m bench.latency --modes on --sessions 1,2,3                  # 1, 2 and 3 sessions talking at once

Each run is a fresh session that streams one spoken sentence (by default one of four sentences of
two_cities.wav from the moonshine-voice wheel, each one turn under the default server VAD; run i sends
sentence i % 4) at real-time pace plus 1.5 s of silence, with greedy decoding; one unmeasured run on each server comes
first (--warmup).
With both modes, the two servers run side by side and the runs alternate on/off, so that both modes
see the same machine conditions. End of user speech is the moment the chunk holding the wav's last sample
above -40 dBFS was sent; latencies are taken for the turn that ends there (the wav's last turn). Reported per
mode: end of speech -> first audio delta and -> input transcript completed (p50, p95), TTS real-time factor
(reply audio seconds / seconds from first to last audio delta), and the speculation commit rate from the
server's /metrics counters (differences over the mode's runs). For servers it started itself, also where the
time goes: the p50 of each milestone the server logs per completed reply (input ready, first token, first TTS
piece, first synthesised chunk, first audio sent; ms after the reply started). Results:
bench/results/latency.json + tables.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from bench import HelpFormatter, commit, count, count_list, write_json
from clients.audio import WIRE_RATE, last_voiced_index
from clients.talk import TalkError, load_wav_24k, run_talk

RESULTS = Path(__file__).resolve().parent / "results" / "latency.json"
SPEC_COUNTERS = {
    "started": "stepaudio_speculations_started_total",
    "committed": "stepaudio_speculations_committed_total",
    "rolled_back": "stepaudio_speculations_rolled_back_total",
}


# ----- pure helpers -----

def moonshine_wav(name: str = "beckett.wav") -> Path:
    """Path of a wav inside the installed moonshine-voice wheel (found without importing it)."""
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("moonshine-voice is not installed (make venv installs it with --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / name
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {metric name: value summed over its label sets}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "}" in line:  # name{label="v",...} value [timestamp]
            head, _, tail = line.rpartition("}")
            name, fields = head.split("{", 1)[0], tail.split()
        else:            # name value [timestamp]
            name, *fields = line.split()
        try:
            value = float(fields[0])
        except (IndexError, ValueError):
            continue
        out[name] = out.get(name, 0.0) + value
    return out


def stats(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """p50/p95/mean/min/max over the values that exist (linear-interpolated percentiles)."""
    xs = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if xs.size == 0:
        return {"n": 0, "p50": None, "p95": None, "mean": None, "min": None, "max": None}
    return {"n": int(xs.size), "p50": float(np.percentile(xs, 50)), "p95": float(np.percentile(xs, 95)),
            "mean": float(xs.mean()), "min": float(xs.min()), "max": float(xs.max())}


def reply_stages(log_text: str) -> dict[str, float]:
    """p50 ms of each milestone over the completed replies in a server log (lines `... completed (kind): start=+0ms
    input_ready=+29ms ...`, as controller.session logs them), keyed by milestone name."""
    samples: dict[str, list[float]] = {}
    for line in log_text.splitlines():
        head, sep, marks = line.partition(" completed (")
        if not sep or "response " not in head:
            continue
        for name, value in re.findall(r"(\w+)=\+(-?\d+)ms", marks):
            samples.setdefault(name, []).append(float(value))
    return {name: float(np.percentile(v, 50)) for name, v in sorted(samples.items(), key=lambda kv: np.median(kv[1]))}


def format_stages(stages: dict[str, dict[str, float]]) -> str:
    names = [n for n in next(iter(stages.values()), {}) if n != "start"]
    for per_mode in stages.values():
        names += [n for n in per_mode if n not in names and n != "start"]
    head = f"{'mode':<8} " + " ".join(f"{n:>18}" for n in names)
    lines = ["where the time goes (server, p50 ms after the reply started):", head, "-" * len(head)]
    for mode, per_mode in stages.items():
        lines.append(f"{mode:<8} " + " ".join(f"{per_mode[n]:>18.0f}" if n in per_mode else f"{'n/a':>18}"
                                              for n in names))
    return "\n".join(lines)


def speculation(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    d = {k: after.get(name, 0.0) - before.get(name, 0.0) for k, name in SPEC_COUNTERS.items()}
    started = d["started"]
    return {**d, "commit_rate": (d["committed"] / started) if started > 0 else None,
            "available": float(any(name in after for name in SPEC_COUNTERS.values()))}


@dataclass(slots=True)
class RunResult:
    first_audio_s: float | None = None
    transcript_s: float | None = None
    done_s: float | None = None
    tts_rtf: float | None = None
    reply_audio_s: float = 0.0
    turns: int = 0
    status: str | None = None
    user_transcript: str = ""
    assistant_transcript: str = ""
    error: str | None = None


def format_table(modes: dict[str, dict[str, object]]) -> str:
    # runs: the sessions measured; failed: those that gave no figure (their errors are in the JSON's runs)
    head = (f"{'mode':<9} {'runs':>4} {'failed':>6} {'first audio p50':>15} {'p95':>7} {'transcript p50':>14} "
            f"{'p95':>7} {'delivery RTF':>12} {'synth RTF':>9} {'spec commit':>11}")
    lines = [head, "-" * len(head)]

    def f(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else "n/a"

    for mode, m in modes.items():
        s = m["summary"]
        assert isinstance(s, dict)
        fa, tr, rtf, sp = s["first_audio_s"], s["transcript_s"], s["tts_rtf"], s["speculation"]
        rate = sp.get("commit_rate") if isinstance(sp, dict) else None
        lines.append(f"{mode:<9} {fa['n']:>4} {s['errors']:>6} {f(fa['p50']):>15} {f(fa['p95']):>7} {f(tr['p50']):>14} "
                     f"{f(tr['p95']):>7} {f(rtf['p50']):>12} {f(s.get('server_tts_rtf')):>9} {f(rate):>11}")
    return "\n".join(lines)


# ----- I/O: servers, HTTP, runs -----

def _http_base(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    return f"{'https' if parts.scheme == 'wss' else 'http'}://{parts.netloc}"


def _http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (our own server's URL)
            return resp.status, resp.read().decode("utf-8", "replace")
    except OSError:
        return 0, ""


async def scrape_metrics(ws_url: str) -> dict[str, float]:
    status, text = await asyncio.to_thread(_http_get, _http_base(ws_url) + "/metrics")
    return parse_metrics(text) if status == 200 else {}


def start_server(port: int, profile: str, speculation_on: bool, log_path: Path,
                 extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "controller.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--profile", profile, "--speculation", "on" if speculation_on else "off", *extra]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parent.parent)


async def wait_healthy(ws_url: str, proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was healthy")
        status, _ = await asyncio.to_thread(_http_get, _http_base(ws_url) + "/healthz", 2.0)
        if status == 200:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"server at {ws_url} not healthy after {timeout_s:.0f} s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def one_run(url: str, wav: Path, eos_sample: int, api_key: str | None, timeout_s: float) -> RunResult:
    try:
        # Greedy decoding: both modes then give the same reply, so that they differ only in when it starts.
        result = await run_talk(wav, url, api_key=api_key, realtime=True, vad=True, timeout_s=timeout_s,
                                printer=None, session_extra={"temperature": 0.0})
    except (TalkError, OSError) as exc:
        return RunResult(error=str(exc))
    # The turn that ends with the wav's speech: its end of speech is the wav's last voiced sample.
    eos_t = result.send_log.time_of_sample(eos_sample)
    final = next((t for t in reversed(result.turns) if t.end_of_speech == eos_t), None)
    final = final or (result.turns[-1] if result.turns else None)
    if final is None:
        return RunResult(error="no turn")
    return RunResult(first_audio_s=final.first_audio_latency, transcript_s=final.transcript_latency,
                     done_s=final.done_latency, tts_rtf=final.tts_rtf, reply_audio_s=final.audio_s,
                     turns=len(result.turns), status=final.status, user_transcript=final.user_transcript,
                     assistant_transcript=final.assistant_transcript)


async def bench_modes(arms: dict[str, tuple[str, int]], runs: int, clips: list[tuple[Path, int]],
                      api_key: str | None, timeout_s: float) -> dict[str, dict[str, object]]:
    """arms: label -> (server URL, sessions talking at once). Alternate the arms run by run, so that slow drift of
    the machine hits all alike.

    Run i sends clip (i + k) % len(clips) from its k-th session, in every arm: consecutive requests to one server
    then never share a prompt, as in a real conversation (a repeated prompt would hit llama.cpp's prompt cache
    whole). The sessions of a run start together, so that their turns end together: the worst case for a server.
    """
    results: dict[str, list[RunResult]] = {label: [] for label in arms}
    counters: dict[str, dict[str, float]] = {label: {} for label in arms}  # /metrics differences over the runs
    for i in range(runs):
        for label, (url, sessions) in arms.items():
            before = await scrape_metrics(url)
            rs = await asyncio.gather(*(one_run(url, *clips[(i + k) % len(clips)], api_key, timeout_s)
                                        for k in range(sessions)))
            after = await scrape_metrics(url)
            for name, value in after.items():
                counters[label][name] = counters[label].get(name, 0.0) + value - before.get(name, 0.0)
            results[label] += rs
            for r in rs:
                print(f"  {label} run {i + 1}/{runs}: first audio {r.first_audio_s}, transcript {r.transcript_s}, "
                      f"rtf {r.tts_rtf}, error {r.error}", file=sys.stderr)
    return {label: {
        "url": url,
        "sessions": sessions,
        "runs": [asdict(r) for r in results[label]],
        "summary": {
            "first_audio_s": stats([r.first_audio_s for r in results[label]]),
            "transcript_s": stats([r.transcript_s for r in results[label]]),
            "done_s": stats([r.done_s for r in results[label]]),
            "tts_rtf": stats([r.tts_rtf for r in results[label]]),
            "errors": sum(r.error is not None for r in results[label]),
            "speculation": speculation({}, counters[label]),
            # Synthesis seconds per second of reply audio, as the server measured it (lower is faster).
            "server_tts_rtf": _histogram_mean({}, counters[label], "stepaudio_tts_real_time_factor"),
        },
    } for label, (url, sessions) in arms.items()}


def _histogram_mean(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
    return total / count if count else None


# Sentences of two_cities.wav that are one turn each under the default server VAD (seconds).
DEFAULT_CLIPS = ((8.3, 13.0), (13.0, 16.9), (17.0, 20.7), (20.8, 24.2))


def default_clips(folder: Path) -> list[Path]:
    """The DEFAULT_CLIPS of two_cities.wav, each written as its own wav."""
    import soundfile as sf
    data, rate = sf.read(str(moonshine_wav("two_cities.wav")), dtype="float32", always_2d=True)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (start_s, end_s) in enumerate(DEFAULT_CLIPS):
        path = folder / f"clip{i}.wav"
        sf.write(str(path), data[int(start_s * rate): int(end_s * rate)].mean(axis=1), rate, subtype="PCM_16")
        paths.append(path)
    return paths


async def run_bench(args: argparse.Namespace) -> dict[str, object]:
    # Clips and server logs go beside the report: --out elsewhere left them in bench/results/.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    wavs = [Path(args.wav)] if args.wav else default_clips(args.out.parent)
    clips: list[tuple[Path, int]] = []
    for wav in wavs:
        eos = last_voiced_index(load_wav_24k(wav))
        if eos is None:
            raise SystemExit(f"{wav} is silent")
        clips.append((wav, eos))
    targets: list[tuple[str, str | None]]  # (mode label, URL or None = start a server)
    if args.url:
        targets = [("server", args.url)]
    elif args.url_on or args.url_off:
        targets = [(m, u) for m, u in (("on", args.url_on), ("off", args.url_off)) if u]
    else:
        targets = [(m, None) for m in args.modes]
    procs: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    logs: dict[str, Path] = {}
    try:
        for i, (mode, url) in enumerate(targets):
            if url is None:
                port = args.port + i
                url = f"ws://127.0.0.1:{port}/v1/realtime"
                print(f"starting server (speculation {mode}) on port {port}", file=sys.stderr)
                logs[mode] = args.out.parent / f"server-{mode}.log"
                proc = start_server(port, args.profile, mode == "on", logs[mode], args.serve_arg)
                procs.append(proc)
                await wait_healthy(url, proc, args.startup_timeout)
            urls[mode] = url
        # Not measured: a server's first reply pays one-time costs (lazy imports, first ONNX runs, cold caches) that
        # landed in p95. The last clip: run 1 sends the first, whose prompt would then be in llama.cpp's cache.
        for _ in range(args.warmup):
            for url in urls.values():
                await one_run(url, *clips[-1], args.api_key, args.timeout)
        measured_from = {mode: log.stat().st_size for mode, log in logs.items()}
        counts = args.sessions
        arms = {mode if len(counts) == 1 else f"{mode} x{n}": (url, n) for mode, url in urls.items() for n in counts}
        modes = await bench_modes(arms, args.runs, clips, args.api_key, args.timeout)
    finally:
        for proc in procs:
            stop_server(proc)
    for mode, log in logs.items():
        if mode in modes:  # one session count: the server's log holds this arm's replies alone
            measured = log.read_bytes()[measured_from[mode]:].decode(errors="replace")
            modes[mode]["server_stages_ms"] = reply_stages(measured)
    return {
        "clips": [{"wav": str(w), "end_of_speech_s": e / WIRE_RATE} for w, e in clips],
        "runs_per_mode": args.runs, "warmup_runs": args.warmup,
        "profile": args.profile if not (args.url or args.url_on or args.url_off) else None,
        "serve_args": args.serve_arg, "timeout_s": args.timeout, "host": os.uname().nodename,
        "cpu_count": os.cpu_count(), "commit": commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "modes": modes,
    }


def _modes(text: str) -> list[str]:
    modes = text.split(",")
    if any(m not in ("on", "off") for m in modes) or len(set(modes)) < len(modes):
        raise argparse.ArgumentTypeError(f"{text!r}: on, off or on,off")
    return modes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--url", help="benchmark this running server as it is configured")
    p.add_argument("--url-on", help="a running server with speculation on")
    p.add_argument("--url-off", help="a running server with speculation off")
    p.add_argument("--modes", type=_modes, default="on,off", help="modes to start servers for (when no URL is given)")
    p.add_argument("--port", type=int, default=8790, help="first port for servers started here")
    p.add_argument("--profile", default="embedded", help="`serve --profile` of the servers started here")
    p.add_argument("--runs", type=count, default=5, help="turns measured per mode (and per --sessions arm)")
    p.add_argument("--warmup", type=int, choices=range(0, 10), default=1, metavar="N",
                   help="unmeasured runs on each server first")
    p.add_argument("--sessions", type=count_list("session counts", "1,2,3"), default="1",
                   help="sessions talking at once per run, e.g. 1,2,3 (each count is an arm, alternated run by run)")
    p.add_argument("--serve-arg", action="append", default=[],
                   help="extra option for the servers started here (repeatable), e.g. --serve-arg=--pause-ms=120")
    p.add_argument("--wav", help="speech to send instead of the default two_cities sentence")
    p.add_argument("--api-key", default=os.environ.get("STEPAUDIO_RT_API_KEY"),
                   help="Bearer key for the servers given by URL (env STEPAUDIO_RT_API_KEY, as talk)")
    p.add_argument("--timeout", type=float, default=60.0, help="per run, after the audio was sent")
    p.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for /healthz")
    p.add_argument("--out", type=Path, default=RESULTS, help="the JSON report")
    return p


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `kill` and `timeout` end a process with SIGTERM, which Python does not raise: the servers started here would
    # outlive it (a gigabyte and a port each). Raised, it runs run_bench's finally, which stops them.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        report = asyncio.run(run_bench(args))
    except (OSError, RuntimeError, TimeoutError) as exc:
        print(f"bench.latency: {exc}", file=sys.stderr)
        return 1
    write_json(args.out, report)
    modes = report["modes"]
    assert isinstance(modes, dict)
    print(format_table(modes))
    stages = {mode: m["server_stages_ms"]
              for mode, m in modes.items() if m.get("server_stages_ms")}  # type: ignore[union-attr]
    if stages:
        print(format_stages(stages))  # type: ignore[arg-type]
    print(f"wrote {args.out}")
    measured = [m["summary"]["first_audio_s"]["n"] for m in modes.values()]  # type: ignore[index]
    return 0 if measured and all(n > 0 for n in measured) else 1


if __name__ == "__main__":
    raise SystemExit(main())
