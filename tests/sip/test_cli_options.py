"""`stepaudio-rt sip-bridge` with an impossible option says which one in a line and exits 2, like its other option
errors; a --port or --max-calls out of range had ended in a traceback ("ValueError: invalid UaConfig")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(("option", "said"), [
    (["--port", "70000"], "sip-bridge: the SIP port must be within 1-65535, got 70000"),
    (["--port", "0"], "sip-bridge: the SIP port must be within 1-65535, got 0"),
    (["--max-calls", "0"], "sip-bridge: max_calls must be at least 1, got 0"),
])
def test_an_impossible_port_or_call_limit_is_named(option: list[str], said: str) -> None:
    run = subprocess.run([sys.executable, "-m", "clients.sip.cli", "--server-url", "ws://127.0.0.1:9/v1/realtime",
                          *option], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert (run.returncode, run.stderr.strip()) == (2, said)
