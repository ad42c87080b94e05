"""The client library as a user installs it: the wheel that `pip install` builds from this tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_marks_the_client_library_as_typed(tmp_path: Path) -> None:
    """PEP 561: without clients/py.typed in the installed package, mypy said 'Cannot find implementation or library
    stub for module named "clients"' in an app that imports it, and typed everything it got from it as Any (a
    wrong argument to RealtimeClient.connect passed unnoticed)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    for pattern in config["tool"]["setuptools"]["packages"]["find"]["include"]:
        shutil.copytree(REPO / pattern.rstrip("*"), src / pattern.rstrip("*"),
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert "clients/py.typed" in zipfile.ZipFile(wheel).namelist()
