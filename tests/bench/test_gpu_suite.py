"""bench/gpu_suite.sh's shell logic without a GPU: a stand-in for the Python it runs says CUDA is there and, for the
tests step, has the real pytest only collect what a lent GPU machine would run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _fake_python(tmp_path: Path) -> Path:
    """A PY for gpu_suite.sh: the CUDA check passes, pytest-xdist reads as missing (no workers to start here), and
    `-m pytest ...` runs the real pytest with --collect-only, listing test ids (-v -qq)."""
    fake = tmp_path / "python"
    fake.write_text(f"""#!/usr/bin/env bash
case "$1 $2" in
    "-c import torch, sys"*) exit 0 ;;
    "-c import xdist") exit 1 ;;
    "-m pytest") exec {sys.executable} "$@" --collect-only -qq ;;
esac
exit 3
""")
    fake.chmod(0o755)
    return fake


def test_the_tests_step_leaves_the_sm90_compile_checks_to_ci(tmp_path: Path) -> None:
    """The sm_90 compile tests need no GPU (CI runs them: that is their point) and were the longest of the lent
    machine's tests step: compiling every decode GEMV tile in one pass and with K split took twice run5's time,
    near the step's per-test limit. The step runs the kernel tests without them."""
    env = {**os.environ, "PY": str(_fake_python(tmp_path)), "OUT": str(tmp_path / "out")}
    run = subprocess.run(["bash", "bench/gpu_suite.sh", "tests"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    collected = [line for line in run.stdout.splitlines() if "::" in line]
    assert any(line.startswith("tests/kernels/test_gemv.py::") for line in collected), run.stdout[-3000:]
    assert any(line.startswith("tests/lm_engine/test_engine_gpu.py::") for line in collected)
    assert not [line for line in collected if "test_compile_hopper" in line]


def test_a_dry_run_prints_every_step_in_order_and_runs_nothing(tmp_path: Path) -> None:
    """--dry-run, on a machine without CUDA and with the real Python: each step's command with its time limit, the
    checkpoint writer's first, nothing run and nothing written under OUT (the shell logic is checked for free)."""
    out = tmp_path / "out"
    env = {**os.environ, "PY": sys.executable, "OUT": str(out), "CKPT": str(tmp_path / "ckpt")}
    run = subprocess.run(["bash", "bench/gpu_suite.sh", "--dry-run", "info", "kernels", "engine", "tts", "report",
                          "tests", "diag"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("=== ")]
    assert [line.split(" ")[1] for line in lines] == ["checkpoint", "info", "kernels", "engine", "tts", "report",
                                                      "tests", "diag"], run.stdout
    assert f"=== kernels (limit 170s): {sys.executable} -m bench.kernels --seqs 16384 --out {out}/kernels.json" \
        in lines
    assert f"=== engine (limit 170s): {sys.executable} -m bench.engine --ckpt {tmp_path}/ckpt --out {out}/engine.json" \
        in lines
    assert not out.exists() and not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("writer", ["hung", "failed"])
def test_a_checkpoint_writer_that_hangs_or_fails_costs_the_engine_and_tts_steps_only(tmp_path: Path,
                                                                                     writer: str) -> None:
    """The engine step waits for the background checkpoint writer within its own limit (CKPT_WAIT here, 2 s): a
    writer still running then is stopped, one that failed is named, and both steps that need the checkpoint are
    skipped while the report step still runs. Before, the wait had no limit: a hung writer ate the whole call."""
    pid_file = tmp_path / "writer.pid"
    behaviour = f"echo $$ > {pid_file}; exec sleep 600" if writer == "hung" else "echo 'OSError: disk full'; exit 1"
    fake = tmp_path / "python"
    fake.write_text(f"""#!/usr/bin/env bash
case "$1 $2" in
    "-c import torch, sys"*) exit 0 ;;
    "-c import xdist") exit 1 ;;
    "-c import pathlib, bench.checkpoint"*) {behaviour} ;;
    "-m bench.report") echo "report ran"; exit 0 ;;
esac
exit 3
""")
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = {**os.environ, "PY": str(fake), "OUT": str(out), "CKPT": str(tmp_path / "ckpt"), "CKPT_WAIT": "2"}
    run = subprocess.run(["bash", "bench/gpu_suite.sh", "engine", "tts", "report"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    summary = (out / "summary.txt").read_text().splitlines()[1:]
    why = "the writer was still writing after 2s and was stopped" if writer == "hung" else \
        f"the writer failed ({out}/ckpt-writer.log): OSError: disk full"
    assert summary[0].startswith("checkpoint failed after ") and summary[0].endswith(f"s: {why}"), summary
    assert summary[1:3] == ["engine skipped: no checkpoint", "tts skipped: no checkpoint"], summary
    assert summary[3].startswith("report rc=0 ") and "report ran" in run.stdout, summary
    if writer == "hung":
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)
