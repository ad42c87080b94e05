"""A caller's mistakes get errors that name them, and a bad request or a failing step never wedges the engine for
every other session."""
from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
import torch

from lm_engine.engine.config import SamplingParams
from lm_engine.engine.llm_engine import EngineDown, EngineError
from lm_engine.engine_api import Engine

GREEDY = SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True)



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


async def test_an_engine_that_went_down_says_why_in_its_own_words(eng, monkeypatch):
    """A tensor-parallel rank lost (EngineDown from the runner): a Python API user read "engine step failed for
    sequences [3]: EngineDown: ..."; now the engine's own sentence, each time, and Engine.problem says the same."""
    why = "a tensor-parallel step failed (a rank hung for 60 s or exited)"

    def down(step):  # type: ignore[no-untyped-def]
        raise EngineDown(why)

    monkeypatch.setattr(eng.llm, "_run", down)
    for _ in range(2):
        with pytest.raises(EngineError) as info:
            await asyncio.wait_for(anext(aiter(eng.stream([1, 5, 6], GREEDY))), 20)
        assert str(info.value) == why
    assert eng.problem == why


class DeviceFault(RuntimeError):
    """A step's failure a test can hold a weak reference to (a bare RuntimeError takes none)."""


async def test_a_failed_stream_closed_before_it_read_its_error_keeps_nothing_of_that_failure(eng, monkeypatch):
    """A client that leaves while its reply's step fails closes the stream before it reads the error: the failure
    (its traceback holds the step's frames) must go with the stream, not stay in the engine for good."""
    run = eng.llm._run
    calls = {"n": 0}
    failure: list[weakref.ref[DeviceFault]] = []

    def fail_second(step):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            exc = DeviceFault("device fell over")
            failure.append(weakref.ref(exc))
            raise exc
        return run(step)

    monkeypatch.setattr(eng.llm, "_run", fail_second)
    stream = eng.stream([1, 5, 6, 7], GREEDY)
    await asyncio.wait_for(anext(stream), 20)
    for _ in range(200):  # the stepping thread fails the next step on its own
        if failure and not eng.llm.has_unfinished():
            break
        await asyncio.sleep(0.05)
    await stream.aclose()  # the error delta is still queued, unread
    gc.collect()
    assert failure and failure[0]() is None
    assert eng.num_sequences == 0


def test_loading_mistakes_are_named(tiny_ckpt, tmp_path):
    """What a newcomer gets wrong first: the folder above the model, a path that is not there, a dtype as a string
    or not a float type, a tensor-parallel size below 1."""
    ckpt = tiny_ckpt("tts")
    root = tmp_path / "models"
    (root / "Step-Audio-TTS-3B").mkdir(parents=True)
    (root / "Step-Audio-TTS-3B" / "config.json").write_text((ckpt / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="not a model folder .*the model folders in it: Step-Audio-TTS-3B"):
        Engine.from_pretrained(root, device="cpu")
    with pytest.raises(FileNotFoundError, match="no such model folder or .gguf file"):
        Engine.from_pretrained(tmp_path / "nope.gguf", device="cpu")
    for dtype in (torch.int32, "int8", "half-ish"):
        with pytest.raises(EngineError, match="dtype must be a floating torch.dtype"):
            Engine.from_pretrained(ckpt, device="cpu", dtype=dtype)
    for tp in (0, -1):
        with pytest.raises(EngineError, match="tp .* must be an int >= 1"):
            Engine.from_pretrained(ckpt, device="cpu", tp=tp)
    e = Engine.from_pretrained(ckpt, device="cpu", dtype="float32", progress=False)
    try:
        assert e.logits([1, 5]).shape == (2, e.model_config.vocab_size)
    finally:
        e.close()


@pytest.mark.parametrize(("kw", "message"), [
    ({"max_tokens": 0}, "max_tokens must be >= 1, got 0"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
    ({"temperature": -1.0, "top_k": -2}, "temperature must be >= 0 .*; top_k must be >= 0"),
])
def test_bad_sampling_params_name_the_field(kw, message):
    from lm_engine.engine.config import EngineConfigError

    with pytest.raises(EngineConfigError, match=message):
        SamplingParams(**kw)


def test_a_step_that_failed_only_another_sessions_work_does_not_fail_this_call(eng, monkeypatch):
    """Scoring steps whatever work is queued: a step of another session's that fails in this caller's thread was
    raised to this caller (whose own request then never ran), while that session's own caller was told "engine is
    idle but the request has not completed" instead of its step's error."""
    a, b = eng.open([1, 5, 6]), eng.open([1, 7, 8, 9])
    want = eng.next_logits(a)
    eng.next_logits(b)  # both computed: both are scheduled as running sequences, in the order they ask
    eng.extend(a, [3])
    eng.extend(b, [4])
    run = eng.llm._run

    def fail_steps_of_b(step):  # type: ignore[no-untyped-def]
        if any(s.seq_id == b for s in eng.llm.scheduler.running):
            raise RuntimeError("device fell over")
        return run(step)

    monkeypatch.setattr(eng.llm, "_run", fail_steps_of_b)
    monkeypatch.setattr(eng.llm.scheduler, "max_num_seqs", 1)  # one session a step: b's step, then a's
    with eng._cv:
        eng.llm.score(b)  # b's scoring is queued first, as another thread's would be
    got = eng.next_logits(a)
    with pytest.raises(EngineError, match="device fell over"):  # b's caller, waiting in its own call meanwhile
        eng._drive(b, lambda: b in eng.llm.scores)
    assert got.shape == want.shape and torch.isfinite(got).all()
    assert not eng.llm.has_unfinished()
