"""The Makefile as a new user meets it: `make serve` on a machine whose python3 is too old."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_with_a_python_older_than_3_11_says_so_before_installing(tmp_path: Path) -> None:
    """Ubuntu 22.04's python3 is 3.10: `make serve` made the venv and installed torch, then failed in pip's resolver
    ("requires a different Python"). It now stops at once, naming the version found and how to pick another."""
    old_python = tmp_path / "python3.10"
    old_python.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "Python 3.10.12"; exit 0; }\nexit 1\n')
    old_python.chmod(0o755)
    venv = tmp_path / "venv"
    proc = subprocess.run(["make", "-C", str(ROOT), "serve", f"PY={old_python}", f"VENV={venv}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert (f"make: {old_python} is Python 3.10.12; stepaudio-rt needs Python 3.11 or newer: "
            "make serve PY=python3.11") in proc.stderr, proc.stderr
    assert not venv.exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_serve_with_a_python_that_is_not_installed_says_not_found(tmp_path: Path) -> None:
    """`make serve PY=python3.12` where there is none said "python3.12 is /bin/sh: 1: python3.12: not found;
    stepaudio-rt needs Python 3.11 or newer ... (or python3.12, ...)": too old, and try the one just tried."""
    missing = tmp_path / "python3.12"
    venv = tmp_path / "venv"
    proc = subprocess.run(["make", "-C", str(ROOT), "serve", f"PY={missing}", f"VENV={venv}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"make: {missing} not found (PY names the Python that builds {venv}); install it" in proc.stderr, proc.stderr
    assert "needs Python 3.11 or newer" not in proc.stderr, proc.stderr
    assert not venv.exists()
