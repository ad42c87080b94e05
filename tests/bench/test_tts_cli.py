"""bench.tts's options: a value it cannot measure with is one line naming the option, before any model loads. Too
few --tokens gave figures of nothing (a first chunk of 0 ms, every stream count "real-time"); the others were a
traceback, some after minutes of measuring."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("args", "named"), [
    (["--tokens", "10"], "--tokens 10: at least 75"),
    (["--tts-prompt-len", "10"], "--tts-prompt-len 10: at least 25"),
    (["--streams", "0"], "argument --streams: '0'"),
    (["--streams", "4,x"], "argument --streams: '4,x'"),
    pytest.param(["--device", "cuda"], "--device cuda: torch sees no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")),
])
def test_a_value_it_cannot_measure_with_is_one_line(args: list[str], named: str, tmp_path: Path) -> None:
    out = tmp_path / "tts.json"
    proc = subprocess.run([sys.executable, "-m", "bench.tts", "--profile", "tiny", "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"python -m bench.tts: error: {named}")
    assert not out.exists()
