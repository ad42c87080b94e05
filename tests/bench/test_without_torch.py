"""After `make serve` alone (no torch), the torch benchmarks as the README runs them: `python -m bench.engine` was a
ModuleNotFoundError traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.without_torch import run_without_torch


@pytest.mark.parametrize("module", ["bench.engine", "bench.tts", "bench.kernels", "bench.flow_kernel_count"])
def test_a_torch_benchmark_without_torch_says_what_to_install_in_one_line(tmp_path: Path, module: str) -> None:
    proc = run_without_torch(tmp_path, module)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"python -m {module}: error: {module} needs torch (the `engine` extra), which `make serve` does not install: "
        "run `make venv` to add it to .venv (or pip install -c constraints.txt '.[engine]')"]
    assert proc.stdout == ""
