"""Runs this directory's Triton tests under TRITON_INTERPRET=1 in a child pytest (see conftest.py for why)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CHILD_ENV = "STEPAUDIO_KERNELS_CHILD"  # same name as in conftest.py

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


# The limits only stop a hang: the child took 604 s on a 2-core machine busy with other jobs (530 s was the limit).
@pytest.mark.timeout(1200)
def test_triton_kernels_under_interpreter() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the Triton tests run natively in this process")
    if os.environ.get(CHILD_ENV) == "1":
        pytest.skip("already the interpreter child")
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", **{CHILD_ENV: "1"})
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not gpu",
           "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), str(HERE)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1190)
    tail = (proc.stdout + proc.stderr)[-6000:]
    print(tail)
    assert proc.returncode == 0, f"interpreter child failed (rc {proc.returncode}):\n{tail}"
    last = proc.stdout.strip().splitlines()[-1]
    assert " passed" in last and "failed" not in last and "error" not in last, last
