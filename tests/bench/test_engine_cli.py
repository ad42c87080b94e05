"""bench.engine on the CPU, as the README runs it (--profile tiny): it runs the engine with one torch thread, as the
tiny profile's server does, and its JSON says so. With torch's default (a thread per core) every figure came out
10-60x slower and erratic on two cores that another job shared, unlike bench/RESULTS.md's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_cpu_run_uses_one_torch_thread_and_says_so(tiny_ckpt, tmp_path: Path) -> None:
    out = tmp_path / "engine.json"
    proc = subprocess.run([sys.executable, "-m", "bench.engine", "--profile", "tiny", "--ckpt", str(tiny_ckpt("tts")),
                           "--device", "cpu", "--batches", "1", "--steps", "2", "--baseline-steps", "1",
                           "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})  # torch's default here: a thread per core
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["torch_threads"] == 1
    assert [r["metric"] for r in result["rows"]][0].startswith("decode tok/s batch 1 ")
