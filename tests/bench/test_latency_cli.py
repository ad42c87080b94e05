"""bench.latency's options: a bad value is one line naming the option, before any server is started or any run is
made (it was a traceback, or a run of nothing, after minutes of server start-up)."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args", [["--sessions", "a"], ["--sessions", "0"], ["--sessions", "1,,2"],
                                  ["--runs", "0"], ["--modes", "on,fast"]])
def test_a_bad_value_is_one_line_naming_the_option(args: list[str], tmp_path: Path) -> None:
    # A URL with nothing behind it: were the value taken, no server would start and the run would fail fast.
    url = f"ws://127.0.0.1:{_free_port()}/v1/realtime"
    out = tmp_path / "latency.json"
    proc = subprocess.run([sys.executable, "-m", "bench.latency", "--url", url, "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"argument {args[0]}: {args[1]!r}" in proc.stderr.splitlines()[-1]
    assert not out.exists()
