"""`stepaudio-rt sip-bridge` with an option it cannot work with says which one in a line and exits 2, like its other
option errors, before it answers any call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.sip.media import free_udp_port


@pytest.mark.parametrize(("option", "said"), [
    (["--port", "70000"], "sip-bridge: the SIP port must be within 1-65535, got 70000"),
    (["--port", "0"], "sip-bridge: the SIP port must be within 1-65535, got 0"),
    (["--max-calls", "0"], "sip-bridge: max_calls must be at least 1, got 0"),
])
def test_an_impossible_port_or_call_limit_is_named(option: list[str], said: str) -> None:
    """They had ended in a traceback, "ValueError: invalid UaConfig"."""
    run = subprocess.run([sys.executable, "-m", "clients.sip.cli", "--server-url", "ws://127.0.0.1:9/v1/realtime",
                          *option], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert (run.returncode, run.stderr.strip()) == (2, said)


def test_a_call_log_that_cannot_be_written_stops_the_start(tmp_path: Path) -> None:
    """Found only at the first call's end, every call's line was lost (a traceback per call in the bridge's log)
    while the bridge went on answering: the call log is where calls are counted."""
    missing = tmp_path / "no-such-dir" / "calls.jsonl"
    run = subprocess.run([sys.executable, "-m", "clients.sip.cli", "--server-url", "ws://127.0.0.1:9/v1/realtime",
                          "--port", str(free_udp_port()), "--call-log", str(missing)], capture_output=True, text=True,
                         timeout=20, cwd=Path(__file__).resolve().parents[2])
    assert (run.returncode, run.stderr.strip()) == (
        2, f"sip-bridge: cannot write the call log {missing}: No such file or directory")
