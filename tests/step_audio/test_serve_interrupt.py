"""Ctrl-C while `serve --profile tiny` loads its models: the load stops before its next model (the real ones take
minutes each) and the server exits at once with status 0 (as a Ctrl-C'd serve does), no traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_ctrl_c_while_the_first_model_loads_starts_no_other_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The first Ctrl-C said "stopping once the models have loaded", and the load went on through TTS-3B, both
    decoders, the speakers and the Chat LM (tens of minutes with the real checkpoints) before the server stopped."""
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "controller.cli", "serve", "--profile", "tiny", "--model-path",
                                 str(tiny_model_dir), "--port", "0", "--threads", "2"], stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while "Step-Audio-Tokenizer" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.005)
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
