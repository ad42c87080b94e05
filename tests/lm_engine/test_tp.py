"""Tensor parallelism on CPU: `torchrun --nproc-per-node 2` (gloo) gives the tp=1 greedy tokens and logits.

The test writes a tiny Chat-ratio checkpoint (24 heads : 2 KV groups -> 12 : 1 per rank), runs this file under
torchrun as a subprocess (the __main__ part below), and compares rank 0's results with tp=1 in this process.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

PROMPT = [1, 4, 17, 99, 250, 1030, 2048, 5000, 6143, 3, 4, 77, 12]
MAX_NEW = 10


def run(path: Path, tp: int, close: bool = True) -> tuple[torch.Tensor, list[int]]:
    from lm_engine.engine.config import EngineConfig, SamplingParams
    from lm_engine.engine_api import Engine

    eng = Engine.from_pretrained(path, device="cpu", dtype=torch.float32, tp=tp, progress=False,
                                 config=EngineConfig(block_size=4, num_kv_blocks=64))
    logits = eng.logits(PROMPT)
    tokens = eng.generate(PROMPT, SamplingParams(temperature=0.0, max_tokens=MAX_NEW, ignore_eos=True))
    if close:
        eng.close()
    return logits, tokens


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
         __file__, str(path), str(out), *extra],
        env=env, capture_output=True, text=True, timeout=240)


def test_tp2_equals_tp1(tmp_path):
    from lm_engine.checkpoint import write_step1_checkpoint

    path = write_step1_checkpoint(tmp_path / "ckpt", "tiny", "chat")
    out = tmp_path / "tp2.pt"
    proc = _torchrun(path, out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = torch.load(out)
    logits, tokens = run(path, tp=1)
    assert got["tokens"] == tokens
    assert (got["logits"] - logits).abs().max() <= 1e-4
    assert torch.equal(got["logits"].argmax(-1), logits.argmax(-1))


def test_tp2_script_that_never_closes_its_engine_ends_cleanly(tmp_path):
    """A script may end without engine.close(), as it can at tp=1. Rank 1 then waited for a step that never came,
    died on gloo's "Connection closed by peer" with a traceback, and torchrun failed the run (exit 1)."""
    from lm_engine.checkpoint import write_step1_checkpoint

    path = write_step1_checkpoint(tmp_path / "ckpt", "tiny", "chat")
    proc = _torchrun(path, tmp_path / "tp2.pt", "--no-close")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "[rank1]" not in proc.stderr, proc.stderr[-4000:]
    assert torch.load(tmp_path / "tp2.pt")["tokens"] == run(path, tp=1)[1]


if __name__ == "__main__":  # one torchrun rank
    ckpt, dest = Path(sys.argv[1]), Path(sys.argv[2])
    # ranks > 0 serve inside from_pretrained and exit there
    logits, tokens = run(ckpt, tp=2, close="--no-close" not in sys.argv[3:])
    torch.save({"logits": logits, "tokens": tokens}, dest)
