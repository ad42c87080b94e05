"""Tensor parallelism on CPU: `torchrun --nproc-per-node 2` (gloo) gives the tp=1 greedy tokens and logits.

The test writes a tiny Chat-ratio checkpoint (24 heads : 2 KV groups -> 12 : 1 per rank), runs this file under
torchrun as a subprocess (the __main__ part below), and compares rank 0's results with tp=1 in this process.
"""
from __future__ import annotations

import json
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


def _rank(path: Path, out: Path, rank: int, port: int, log: Path) -> subprocess.Popen[str]:
    """One rank of lose_follower(), started without torchrun (which would stop rank 0 once rank 1 died)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2]), "RANK": str(rank),
           "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, __file__, str(path), str(out), "--lose-follower"], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)


def test_a_dead_follower_takes_the_engine_down_for_good(tmp_path):
    """Rank 1 killed (kill -9) while rank 0 lives on (a follower on another host, a launcher that does not stop the
    others): every later generate() failed on gloo's "Connection closed by peer", and nothing said that the engine
    was down. Now the first failed step takes it down: Engine.problem says why, every later step is refused, and
    gloo's detail is logged once."""
    from lm_engine.checkpoint import write_step1_checkpoint

    path = write_step1_checkpoint(tmp_path / "ckpt", "tiny", "chat")
    out, port = tmp_path / "out.json", _free_port()
    ranks = [_rank(path, out, rank, port, tmp_path / f"rank{rank}.log") for rank in (0, 1)]
    try:
        assert ranks[0].stdout is not None and ranks[0].stdout.readline() == "ready\n"
        ranks[1].kill()
        ranks[1].wait(30)
        ranks[0].communicate("rank 1 is gone\n", timeout=120)
    finally:
        for proc in ranks:
            if proc.poll() is None:
                proc.kill()
    log = (tmp_path / "rank0.log").read_text()
    assert ranks[0].returncode == 0, log[-4000:]
    result = json.loads(out.read_text())
    assert result["problem"] == "a tensor-parallel step failed (a rank hung for 60 s or exited)", result
    assert len(result["errors"]) == 2 and all(result["problem"] in e for e in result["errors"]), result
    assert log.count("tensor-parallel step failed, refusing every later step") == 1, log[-4000:]
    assert "Connection closed by peer" in log, log[-4000:]


def lose_follower(path: Path, out: Path) -> None:
    """test_a_dead_follower_takes_the_engine_down_for_good's ranks: rank 0 generates once, then twice more after the
    test has killed rank 1 (it says so on stdin); rank 1 follows inside from_pretrained."""
    import logging

    from lm_engine.engine.config import EngineConfig, SamplingParams
    from lm_engine.engine.llm_engine import EngineError
    from lm_engine.engine_api import Engine

    logging.basicConfig()
    eng = Engine.from_pretrained(path, device="cpu", dtype=torch.float32, tp=2, progress=False,
                                 config=EngineConfig(block_size=4, num_kv_blocks=64))
    greedy = SamplingParams(temperature=0.0, max_tokens=3)
    eng.generate(PROMPT, greedy)
    print("ready", flush=True)
    sys.stdin.readline()
    errors = []
    for _ in range(2):
        try:
            eng.generate(PROMPT, greedy)
        except EngineError as exc:
            errors.append(str(exc))
    out.write_text(json.dumps({"errors": errors, "problem": eng.problem}))
    eng.close()


if __name__ == "__main__":  # one torchrun rank
    ckpt, dest = Path(sys.argv[1]), Path(sys.argv[2])
    if "--lose-follower" in sys.argv[3:]:
        lose_follower(ckpt, dest)
        raise SystemExit(0)
    # ranks > 0 serve inside from_pretrained and exit there
    logits, tokens = run(ckpt, tp=2, close="--no-close" not in sys.argv[3:])
    torch.save({"logits": logits, "tokens": tokens}, dest)
