"""bench.engine's upstream-style baseline is the engine's model run another way: on the same weights it gives the
engine's greedy tokens, so the speed-up it reports compares two ways of computing one thing."""
from __future__ import annotations

import pytest
import torch

from bench.engine import UpstreamStyle
from lm_engine.engine.config import EngineConfig, SamplingParams
from lm_engine.engine_api import Engine


@pytest.mark.parametrize("name", ["tts", "chat"])
def test_the_baseline_decodes_the_engines_greedy_tokens(tiny_ckpt, name):
    eng = Engine.from_pretrained(tiny_ckpt(name), device="cpu", dtype=torch.float32, progress=False,
                                 config=EngineConfig(block_size=4, num_kv_blocks=128))
    try:
        prompts = [list(range(5, 5 + 19)), list(range(40, 40 + 19))]
        want = [eng.generate(p, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)) for p in prompts]
        up = UpstreamStyle(eng)
        tok, cache = up.forward(torch.tensor(prompts), None)  # a batch of 2: prefill, then 11 steps
        got = [tok]
        for _ in range(11):
            tok, cache = up.forward(tok, cache)
            got.append(tok)
        assert torch.cat(got, dim=1).tolist() == want
        assert cache[0][0].shape[1] == 19 + 11  # kv heads only, concatenated per step
    finally:
        eng.close()
