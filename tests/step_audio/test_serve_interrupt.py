"""Ctrl-C while `serve --profile tiny` loads its models: the load stops before its next model (the real ones take
minutes each) and the server exits at once with status 0 (as a Ctrl-C'd serve does), no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import pytest

pytestmark = pytest.mark.slow


def test_ctrl_c_while_the_first_model_loads_starts_no_other_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The first Ctrl-C said "stopping once the models have loaded", and the load went on through TTS-3B, both
    decoders, the speakers and the Chat LM (tens of minutes with the real checkpoints) before the server stopped."""
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = _serve_tiny(tiny_model_dir, out)
        try:
            _wait_for_line(log, "Step-Audio-Tokenizer", proc, time.monotonic() + 120, poll_s=0.005)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 0, log.read_text()
        finally:
            proc.kill()
    text = log.read_text()
    before, stop_line, after = text.partition("SIGINT: stopping before the next model loads (the one loading now "
                                              "cannot be cut short; Ctrl-C again to stop now)")
    assert stop_line, text
    assert "loading" in before and "loading" not in after, text  # Step-Audio-Chat's load, for one, never began
    assert after.strip().splitlines()[-1].endswith("INFO controller.app: stopped"), text
    assert "ready" not in text and "Traceback" not in text, text


def test_a_stopped_server_exits_without_more_work(tiny_model_dir: Path, tmp_path: Path) -> None:
    """After its "stopped" line a tiny-profile server went on for 1.4-3.7 s (2 cores): Python's finalisation
    collected and freed every object of torch, onnxruntime and Whisper, though nothing was left to close. The CPU
    time the process spends after the line (not the wall time, which a loaded machine stretches) says so: 0.59 s of
    it before, 0.08 s now."""
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = _serve_tiny(tiny_model_dir, out)
        try:
            deadline = time.monotonic() + 300
            _wait_for_line(log, "ready:", proc, deadline, poll_s=0.05)
            proc.send_signal(signal.SIGINT)
            # Seen while the process still runs (it may stop between the line and the read: then no less work).
            while "INFO controller.app: stopped" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.001)
            at_stopped = _cpu_seconds(proc.pid)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            proc.kill()
    assert proc.returncode == 0, log.read_text()
    after = usage.ru_utime + usage.ru_stime - at_stopped
    assert after < 0.3, f"{after:.2f} s of CPU after 'stopped'"


def _serve_tiny(tiny_model_dir: Path, out: BinaryIO) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "controller.cli", "serve", "--profile", "tiny", "--model-path",
                             str(tiny_model_dir), "--port", "0", "--threads", "2"],
                            stdout=out, stderr=subprocess.STDOUT)


def _wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes], deadline: float, poll_s: float) -> None:
    """Until the server's log holds `text`, or the deadline (time.monotonic()) passes; the server runs till then."""
    while text not in log.read_text() and time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        time.sleep(poll_s)


def _cpu_seconds(pid: int) -> float:
    """The user and system CPU time of a running process, all its threads (proc(5): utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
