"""bench.tts's options: a value it cannot measure with is one line naming the option, before any model loads. Too
few --tokens gave figures of nothing (a first chunk of 0 ms, every stream count "real-time"); the others were a
traceback, some after minutes of measuring."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.bench.cli import assert_refused_in_one_line


@pytest.mark.parametrize(("args", "named"), [
    (["--tokens", "10"], "--tokens 10: at least 75"),
    (["--tts-prompt-len", "10"], "--tts-prompt-len 10: at least 25"),
    (["--streams", "0"], "argument --streams: '0'"),
    (["--streams", "4,x"], "argument --streams: '4,x'"),
    pytest.param(["--device", "cuda"], "--device cuda: torch sees no CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")),
])
def test_a_value_it_cannot_measure_with_is_one_line(args: list[str], named: str, tmp_path: Path) -> None:
    assert_refused_in_one_line("bench.tts", args, tmp_path / "tts.json", named)
