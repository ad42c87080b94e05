"""A bad request or a failing step must not wedge the engine for every other session."""
from __future__ import annotations

import asyncio

import pytest
import torch

from lm_engine.engine.config import EngineConfig, SamplingParams
from lm_engine.engine.llm_engine import EngineError
from lm_engine.engine_api import Engine

GREEDY = SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True)


@pytest.fixture
def eng(tiny_ckpt):
    e = Engine.from_pretrained(tiny_ckpt("tts"), device="cpu", dtype=torch.float32, progress=False,
                               config=EngineConfig(block_size=4, num_kv_blocks=64))
    yield e
    e.close()


def test_token_ids_outside_the_vocabulary_are_refused_and_the_engine_goes_on(eng):
    vocab = eng.model_config.vocab_size
    want = eng.logits([1, 5, 6])
    for bad in ([1, vocab], [1, -1], [1, 10**6]):
        with pytest.raises(EngineError, match="vocab_size"):
            eng.logits(bad)
        with pytest.raises(EngineError, match="vocab_size"):
            eng.generate(bad, GREEDY)
    sid = eng.open([1, 5])
    with pytest.raises(EngineError, match="vocab_size"):
        eng.extend(sid, [vocab])
    with pytest.raises(EngineError, match="vocab_size"):
        eng.open([vocab])
    assert eng.tokens(sid) == [1, 5]
    assert torch.equal(eng.logits([1, 5, 6]), want)
    assert not eng.llm.has_unfinished()


async def test_a_failing_step_ends_its_streams_with_an_error_and_later_streams_still_run(eng, monkeypatch):
    prompt = [1, 5, 6, 7]
    want = eng.generate(prompt, GREEDY)
    run = eng.llm._run
    calls = {"n": 0}

    def fail_once(step):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("device fell over")
        return run(step)

    monkeypatch.setattr(eng.llm, "_run", fail_once)

    async def collect(prompt):  # type: ignore[no-untyped-def]
        return [t async for t in eng.stream(prompt, GREEDY)]

    with pytest.raises(EngineError, match="device fell over"):
        await asyncio.wait_for(collect(prompt), 20)
    assert await asyncio.wait_for(collect(prompt), 20) == want  # the stepping thread survived
    assert eng.generate(prompt, GREEDY) == want
    assert not eng.llm.has_unfinished()
