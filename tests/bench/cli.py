"""Running a benchmark's command line as a user does, from the repository's root."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def assert_refused_in_one_line(module: str, args: list[str], out: Path, named: str) -> None:
    """`python -m module --profile tiny --out OUT ARGS` stops with exit 2 and one argparse-style line naming the
    option, before anything is measured or written."""
    proc = subprocess.run([sys.executable, "-m", module, "--profile", "tiny", "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"python -m {module}: error: {named}")
    assert not out.exists()
