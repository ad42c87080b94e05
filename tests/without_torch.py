"""Running a command as after `make serve` alone: in a Python where torch is not importable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_without_torch(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m module ARGS` from the repository's root, in a Python where torch is not importable, as in a venv
    that `make serve` built: a None in sys.modules makes both `import torch` (ModuleNotFoundError) and
    importlib.util.find_spec (None) see no torch."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=ROOT)
