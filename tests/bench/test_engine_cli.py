"""bench.engine on the CPU, as the README runs it (--profile tiny): it runs the engine with one torch thread, as the
tiny profile's server does, and its JSON says so (with torch's default, a thread per core, every figure came out
10-60x slower and erratic on two cores that another job shared, unlike bench/RESULTS.md's); a bad option value is one
line naming it (was a traceback, --batches 0 after the whole run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.bench.cli import ROOT, assert_refused_in_one_line


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


@pytest.mark.parametrize(("args", "named"), [
    (["--batches", "0"], "argument --batches: '0'"),
    (["--batches", "1,x"], "argument --batches: '1,x'"),
    (["--steps", "0"], "argument --steps: '0'"),  # 0 had quietly meant the default
    pytest.param(["--device", "cuda"], "--device cuda: torch sees no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")),
])
def test_a_bad_value_is_one_line_naming_the_option(args: list[str], named: str, tmp_path: Path) -> None:
    assert_refused_in_one_line("bench.engine", args, tmp_path / "engine.json", named)
