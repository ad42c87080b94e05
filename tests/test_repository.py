"""What a fresh clone holds: no run-time leftovers (logs, pid files) at the top of the tree."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_no_log_or_pid_file_is_committed_at_the_top() -> None:
    """A broker's or server's log and pid file written in the repository root during a test must not land in a
    commit: a newcomer's clone would show them beside the README. (bench/gpu_runs/ keeps its logs on purpose.)"""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert [f for f in files if "/" not in f and f.endswith((".log", ".pid"))] == []
