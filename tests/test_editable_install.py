"""The editable install that `make serve` and `make test` do (pip install -e) printed setuptools' ten-line
"Editable installation ... Please be careful with folders in your working directory" banner on every fresh install,
even under pip -q: with several top-level packages and no package-dir, setuptools picks its import-hook strategy
and warns about it. With package-dir {"" = "."} it writes a plain .pth of the checkout instead, quietly."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BUILD_EDITABLE = """
import sys
from setuptools import build_meta
print(build_meta.build_editable(sys.argv[1]))
"""


def test_the_editable_install_is_a_quiet_pth_of_the_checkout(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", BUILD_EDITABLE, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Please be careful" not in proc.stdout + proc.stderr
    with zipfile.ZipFile(tmp_path / proc.stdout.strip().splitlines()[-1]) as wheel:
        pth = [n for n in wheel.namelist() if n.endswith(".pth")]
        assert len(pth) == 1, wheel.namelist()
        assert wheel.read(pth[0]).decode().split() == [str(ROOT)]
