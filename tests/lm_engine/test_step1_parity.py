"""Step-1 logits from the engine's paged-cache path vs an independent eager reference (dense sqrt-ALiBi bias)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_step1_reference import load_state, step1_logits  # noqa: E402

from lm_engine.engine.config import EngineConfig, SamplingParams  # noqa: E402
from lm_engine.engine_api import Engine  # noqa: E402

TOL = 1e-4


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest per-position relative error ||got - ref|| / ||ref||."""
    return float(((got - ref).norm(dim=-1) / ref.norm(dim=-1)).max())


def prompt(n: int, vocab: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, vocab, (n,), generator=g).tolist()


@pytest.fixture(scope="module", params=["tts", "chat", "h6g2", "h48g4", "h96g8"])
def case(request, tiny_ckpt):
    path = tiny_ckpt(request.param)
    cfg, sd = load_state(path)
    eng = Engine.from_pretrained(path, device="cpu", dtype=torch.float32, progress=False,
                                 config=EngineConfig(block_size=4, num_kv_blocks=256, max_num_batched_tokens=512))
    yield eng, cfg, sd
    eng.close()


def test_prefill_matches_reference(case):
    eng, cfg, sd = case
    ids = prompt(45, cfg["vocab_size"])
    got = eng.logits(ids)
    assert got.shape == (45, cfg["vocab_size"]) and got.dtype == torch.float32
    assert rel_err(got, step1_logits(cfg, sd, ids)) <= TOL


def test_token_by_token_decode_matches_reference(case):
    eng, cfg, sd = case
    ids = prompt(30, cfg["vocab_size"], seed=1)
    ref = step1_logits(cfg, sd, ids)
    sid = eng.open(ids[:1])
    rows = [eng.next_logits(sid)]
    for t in ids[1:]:
        eng.extend(sid, [t])
        rows.append(eng.next_logits(sid))  # one new token through the paged cache (q_len 1)
    assert rel_err(torch.stack(rows), ref) <= TOL
    eng.release(sid)


def test_greedy_generation_matches_reference(case):
    eng, cfg, sd = case
    ids = prompt(9, cfg["vocab_size"], seed=2)
    out = eng.generate(ids, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))
    seq = list(ids)
    for _ in range(12):
        seq.append(int(step1_logits(cfg, sd, seq)[-1].argmax()))
    assert out == seq[len(ids):]


def test_chunked_prefill_and_prefix_reuse_match_reference(tiny_ckpt):
    path = tiny_ckpt("chat")
    cfg, sd = load_state(path)
    eng = Engine.from_pretrained(path, device="cpu", dtype=torch.float32, progress=False,
                                 config=EngineConfig(block_size=4, num_kv_blocks=64, max_num_batched_tokens=7))
    ids = prompt(33, cfg["vocab_size"], seed=3)
    ref = step1_logits(cfg, sd, ids)
    a = eng.open(ids[:25])
    assert rel_err(eng.next_logits(a)[None], ref[24:25]) <= TOL  # prefill in chunks of 7
    free_before = eng.num_free_blocks
    b = eng.open(ids)  # shares 6 full blocks with a (prefix cache)
    assert rel_err(eng.next_logits(b)[None], ref[32:33]) <= TOL
    assert free_before - eng.num_free_blocks == 9 - 6
    eng.close()
