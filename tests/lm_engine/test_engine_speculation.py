"""Fork / generate / rollback / commit on a session, and continuous batching against single-sequence runs."""
from __future__ import annotations

import asyncio
import contextlib

import pytest
import torch

from lm_engine.engine.config import EngineConfig, SamplingParams
from lm_engine.engine.llm_engine import EngineError
from lm_engine.engine_api import Engine

GREEDY = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)



def test_fork_generate_rollback_leaves_the_session_bit_identical(eng):
    sid = eng.open(list(range(10, 31)))  # 21 tokens: the last block is partly filled, so forks share it
    before = eng.next_logits(sid)
    free_before = eng.num_free_blocks
    fork = eng.fork(sid)
    assert eng.num_free_blocks == free_before  # a fork shares every block
    out = eng.generate(seq_id=fork, params=GREEDY)
    assert len(out) == 20
    used = free_before - eng.num_free_blocks
    # 1 copy-on-write of the shared last block + 4 new blocks for positions 24..39 (token 41 is not computed yet)
    assert used == 5
    freed = eng.rollback(fork)
    assert freed == used and eng.num_free_blocks == free_before
    assert torch.equal(eng.next_logits(sid), before)
    assert eng.tokens(sid) == list(range(10, 31))


def test_commit_makes_the_fork_the_session(eng):
    prompt = list(range(40, 57))
    sid = eng.open(prompt)
    fork = eng.fork(sid)
    spec = eng.generate(seq_id=fork, params=SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True))
    fork_next = eng.next_logits(fork)
    assert eng.commit(fork) == sid
    assert eng.tokens(sid) == prompt + spec
    assert torch.equal(eng.next_logits(sid), fork_next)
    cont = eng.generate(seq_id=sid, params=SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True))
    # The continuation is what the fork would have produced with 14 tokens in one go.
    ref = eng.generate(prompt, SamplingParams(temperature=0.0, max_tokens=14, ignore_eos=True))
    assert spec + cont == ref
    eng.release(sid)


def test_eight_concurrent_sequences_give_their_solo_greedy_tokens(eng):
    prompts = [list(range(7 + 3 * i, 7 + 3 * i + n)) for i, n in enumerate([1, 3, 5, 8, 13, 17, 26, 40])]
    alone = [eng.generate(p, GREEDY) for p in prompts]
    free = eng.num_free_blocks
    ids = [eng.llm.add_request(p, GREEDY) for p in prompts]
    got: dict[int, list[int]] = {i: [] for i in ids}
    steps = 0
    while eng.llm.has_unfinished():
        for d in eng.llm.step():
            got[d.seq_id].append(d.token_id)
        steps += 1
    assert [got[i] for i in ids] == alone
    assert steps == 20  # all eight prefill together, then decode together
    assert eng.num_free_blocks == free


async def test_eight_concurrent_streams_give_their_solo_greedy_tokens(eng):
    """The same through the public async API, as the server uses it: eight streams at once on the stepping thread,
    batched (fewer steps than run one after another), each with its solo greedy tokens."""
    prompts = [list(range(9 + 2 * i, 9 + 2 * i + n)) for i, n in enumerate([2, 4, 6, 9, 12, 18, 25, 33])]
    alone = [eng.generate(p, GREEDY) for p in prompts]
    free, steps = eng.num_free_blocks, 0
    step = eng.llm.step

    def counted():  # type: ignore[no-untyped-def]
        nonlocal steps
        steps += 1
        return step()

    eng.llm.step = counted  # type: ignore[method-assign]

    async def collect(prompt: list[int]) -> list[int]:
        return [t async for t in eng.stream(prompt, GREEDY)]

    # The eight start before any of them steps: on a loaded machine the streams' starts (each on an executor
    # thread) came far enough apart that the first ran many steps alone (87 steps seen, against ~20 together).
    with eng.hold():
        tasks = [asyncio.ensure_future(collect(p)) for p in prompts]
        async with asyncio.timeout(30):
            while eng.active_streams < len(prompts):
                await asyncio.sleep(0.01)
    assert await asyncio.gather(*tasks) == alone
    assert steps < 8 * GREEDY.max_tokens / 2, steps  # one after another: 8 x 20
    assert eng.num_free_blocks == free


async def test_async_stream_and_cancellation(eng):
    prompt = list(range(100, 112))
    want = eng.generate(prompt, GREEDY)
    got = [t async for t in eng.stream(prompt, GREEDY)]
    assert got == want
    free = eng.num_free_blocks
    seen = []
    stream = eng.stream(prompt, SamplingParams(temperature=0.0, max_tokens=500, ignore_eos=True))
    async with contextlib.aclosing(stream):
        async for t in stream:
            seen.append(t)
            if len(seen) == 3:
                break  # closing the stream aborts the generation and frees its blocks
    assert seen == want[:3]
    assert not eng.llm.has_unfinished()
    assert eng.num_free_blocks == free


async def test_a_hold_stops_streams_stepping_until_released(eng):
    """Engine.hold(): a stream takes no step while it is held (the speech path's first window has the device),
    then goes on to the tokens it gives unheld; active_streams counts it meanwhile."""
    import asyncio

    prompt = list(range(30, 40))
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    want = eng.generate(prompt, params)
    stream = eng.stream(prompt, params)
    with eng.hold():
        first = asyncio.ensure_future(anext(stream))  # the stream starts: its request and the engine's thread
        await asyncio.sleep(0.2)  # unheld, a tiny model gives its first token in milliseconds
        assert not first.done() and eng.active_streams == 1
    got = [await first] + [t async for t in stream]
    assert got == want
    for _ in range(100):  # the engine thread drops the listener just after it hands over the last token
        if eng.active_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert eng.active_streams == 0


def test_stop_token_and_length(eng):
    prompt = list(range(60, 70))
    free_run = eng.generate(prompt, GREEDY)
    stop_at = free_run[5]
    first = free_run.index(stop_at)
    out = eng.generate(prompt, SamplingParams(temperature=0.0, max_tokens=20, stop_token_ids=(stop_at,)))
    assert out == free_run[:first + 1]
    assert eng.generate(prompt, SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)) == free_run[:3]


def test_two_engines_stepping_on_two_threads_match_their_solo_runs(tiny_ckpt):
    """The Step-Audio profile runs the Chat and TTS engines at once; their forward metadata must not mix."""
    import threading

    cfg = EngineConfig(block_size=4, num_kv_blocks=128)
    engines = [Engine.from_pretrained(tiny_ckpt(what), device="cpu", dtype=torch.float32, progress=False,
                                      config=cfg) for what in ("tts", "chat")]
    prompts = [list(range(10, 31)), list(range(40, 53))]
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    try:
        alone = [e.generate(p, params) for e, p in zip(engines, prompts)]
        together: list[list[int]] = [[], []]
        threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, engines[i].generate(prompts[i], params)))
                   for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for e in engines:
            e.close()
    assert together == alone


def test_the_context_limit_refuses_long_prompts_and_ends_generation(tiny_ckpt):
    e = Engine.from_pretrained(tiny_ckpt("tts"), device="cpu", dtype=torch.float32, progress=False,
                               config=EngineConfig(block_size=4, num_kv_blocks=128, max_model_len=32))
    try:
        with pytest.raises(EngineError, match="33 tokens exceed the model's context of 32"):
            e.generate(list(range(5, 38)), GREEDY)
        sid = e.open(list(range(5, 25)))
        with pytest.raises(EngineError, match="context"):
            e.extend(sid, list(range(13)))
        assert e.tokens(sid) == list(range(5, 25))  # a refused extension changes nothing
        assert len(e.generate(list(range(5, 25)), GREEDY)) == 12  # 20 + 12 = 32: "length", not 20 tokens
        assert len(e.generate(list(range(5, 25)), GREEDY)) == 12  # and the engine goes on
        full = e.open(list(range(5, 37)))  # exactly the context: its next token can be sampled, not computed
        assert len(e.generate(seq_id=full, params=GREEDY)) == 1
        with pytest.raises(EngineError, match="33 tokens exceed"):
            e.generate(seq_id=full, params=GREEDY)
    finally:
        e.close()



def test_prefill_warm_up_runs_each_query_class_once_and_touches_no_session(tiny_ckpt, monkeypatch):
    """ModelRunner.warm_up_prefill (run at load on CUDA, where it compiles and autotunes the prefill kernel):
    one prefill per query-length class up to the step's token budget, at a multiple of 16 and one less; no KV
    written, so an open session's next logits are bit-identical afterwards."""
    eng = Engine.from_pretrained(tiny_ckpt("tts"), device="cpu", dtype=torch.float32, progress=False,
                                 config=EngineConfig(block_size=4, num_kv_blocks=128, max_num_batched_tokens=300))
    try:
        sid = eng.open(list(range(10, 31)))
        runner = eng.llm.runner
        before, cache = eng.next_logits(sid), runner.kv_cache.clone()
        lengths: list[int] = []
        model = runner.model
        monkeypatch.setattr(runner, "model", lambda ids, pos: lengths.append(len(ids)) or model(ids, pos))
        runner.warm_up_prefill()
        monkeypatch.undo()
        assert lengths == [63, 64, 299, 300]  # classes 64 and 512 (capped by the budget); 4096 is out of reach
        assert torch.equal(runner.kv_cache, cache)
        assert torch.equal(eng.next_logits(sid), before)
    finally:
        eng.close()
