"""The engine on a CUDA device: Triton attention, CUDA-graph decode, against the CPU engine and against itself
without graphs. Skipped without CUDA (CI); run on a GPU machine with `pytest -m gpu`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lm_engine.engine.config import EngineConfig, SamplingParams
from lm_engine.engine_api import Engine
from tests.cuda_streams import pool_draws, pooled_streams

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
PROMPTS = [list(range(7 + 3 * i, 7 + 3 * i + n)) for i, n in enumerate([1, 3, 5, 8, 13, 17, 26, 40])]


def _engine(path: Path, device: str, *, eager: bool, max_model_len: int = 512) -> Engine:
    cfg = EngineConfig(block_size=16, num_kv_blocks=256, enforce_eager=eager, cuda_graph_max_batch=16,
                       max_model_len=max_model_len)
    return Engine.from_pretrained(path, device=device, dtype=torch.float32, progress=False, config=cfg)


def _batched(eng: Engine) -> list[list[int]]:
    ids = [eng.llm.add_request(p, GREEDY) for p in PROMPTS]
    got: dict[int, list[int]] = {i: [] for i in ids}
    while eng.llm.has_unfinished():
        for d in eng.llm.step():
            got[d.seq_id].append(d.token_id)
    return [got[i] for i in ids]


def test_cuda_logits_match_the_cpu_engine(tiny_ckpt):
    path = tiny_ckpt("tts")
    prompt = list(range(5, 70))
    cpu, gpu = _engine(path, "cpu", eager=True), _engine(path, "cuda", eager=False)
    try:
        ref, got = cpu.logits(prompt), gpu.logits(prompt).cpu()
        # fp32 throughout (the kernels' fp32 dots are IEEE, cuBLAS does not use TF32 by default)
        rel = float((got - ref).norm() / ref.norm())
        assert rel < 1e-4, rel
        assert torch.equal(got.argmax(-1), ref.argmax(-1))
    finally:
        cpu.close()
        gpu.close()


def test_cuda_graph_decode_gives_the_eager_tokens(tiny_ckpt):
    path = tiny_ckpt("tts")
    graphed, eager = _engine(path, "cuda", eager=False), _engine(path, "cuda", eager=True)
    try:
        assert graphed.llm.runner.graphs, "no CUDA graph was captured (see the engine's warning)"
        assert not eager.llm.runner.graphs
        side, ms = graphed.llm.runner.graph_sides[1]
        assert set(ms) == {None, "triton", "library"} and side == min(ms, key=ms.__getitem__), ms
        assert all(len(ms) == 3 for _, ms in graphed.llm.runner.graph_sides.values())  # all GEMV-sized: all chose
        got = _batched(graphed)
        assert got == _batched(eager)
        assert got == [graphed.generate(p, GREEDY) for p in PROMPTS]  # batched == alone, through graphs too
    finally:
        graphed.close()
        eager.close()


@pytest.mark.parametrize("side", [None, "triton", "library"])
def test_each_gemv_side_of_the_decode_graphs_gives_the_eager_tokens(tiny_ckpt, monkeypatch, side):
    """The engine captures each GEMV-sized batch's step three ways (kernels.gemv.serve_all_by) and keeps the one
    that replays fastest: whichever it keeps must decode the eager tokens. Forced here, one side at a time."""
    import lm_engine.engine.model_runner as MR

    monkeypatch.setattr(MR, "fastest", lambda sides, time_ms, rounds=3: (side, {s: time_ms(s) for s in sides}))
    path = tiny_ckpt("tts")
    graphed, eager = _engine(path, "cuda", eager=False), _engine(path, "cuda", eager=True)
    try:
        assert {bs: s for bs, (s, _) in graphed.llm.runner.graph_sides.items()} == {1: side, 2: side, 4: side,
                                                                                    8: side, 16: side}
        assert _batched(graphed) == _batched(eager)
    finally:
        graphed.close()
        eager.close()


def test_programmatic_dependent_launch_changes_no_token(tiny_ckpt):
    """With PDL (sm_90+) a kernel starts while the one before it finishes and waits for its results: the decode
    graphs captured with it give the tokens of the graphs captured without, for a batch of 8 over 24 steps (a kernel
    touching memory before its wait would race and differ)."""
    from kernels import set_pdl, use_pdl

    if not use_pdl(torch.empty(0, device="cuda")):
        pytest.skip("programmatic dependent launch needs compute capability 9.0 (or STEPAUDIO_PDL=0 is set)")
    eng = _engine(tiny_ckpt("tts"), "cuda", eager=False)
    try:
        with_pdl = _batched(eng)
        set_pdl(False)
        eng.llm.runner.capture_cuda_graphs()
        assert eng.llm.runner.graphs
        assert _batched(eng) == with_pdl
    finally:
        set_pdl(True)
        eng.close()


def test_two_engines_stepping_at_once_on_their_own_streams_give_their_own_tokens(tiny_ckpt):
    """As served on one GPU: the TTS LM (priority -1) and another engine decode on two threads at once, each on
    a CUDA stream of its own; each gives the greedy tokens it gives alone (a tensor read on the wrong stream, before
    its kernel ran, would not). Their own for good: neither is a stream torch's pool hands out (the 33rd request at
    a priority got the first engine's stream back), and each captures its decode graphs on it."""
    import threading

    path = tiny_ckpt("tts")
    urgent = Engine.from_pretrained(path, device="cuda", dtype=torch.float32, progress=False, config=EngineConfig(
        block_size=16, num_kv_blocks=256, cuda_graph_max_batch=16, max_model_len=512, stream_priority=-1))
    other = _engine(path, "cuda", eager=False)
    try:
        assert urgent.llm.runner.stream is not None and other.llm.runner.stream is not None
        assert urgent.llm.runner.stream.priority < other.llm.runner.stream.priority
        runners = (urgent.llm.runner, other.llm.runner)
        ours = {r.stream.cuda_stream for r in runners if r.stream is not None}
        assert len(ours) == 2 and not ours & pooled_streams(urgent.llm.runner.device)
        assert all(r.capture_stream is r.stream for r in runners)
        alone = [urgent.generate(p, GREEDY) for p in PROMPTS]
        got: dict[str, list[list[int]]] = {}

        def decode(name: str, eng: Engine) -> None:
            got[name] = [eng.generate(p, GREEDY) for p in PROMPTS]

        threads = [threading.Thread(target=decode, args=a) for a in (("urgent", urgent), ("other", other))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got["urgent"] == alone and got["other"] == alone
    finally:
        urgent.close()
        other.close()


def test_loading_an_engine_draws_no_stream_from_torchs_pool(tiny_ckpt):
    """An engine's stream, the decode graphs' capture stream (torch's default one) and the stream of each GEMV
    timing (two a timing, at priority -1, the TTS engine's level) were drawn from torch's round-robin pool of 32 per
    priority: a load wrapped it, so a timing could capture on another engine's stream. Now none is drawn."""
    dev = torch.device("cuda", torch.cuda.current_device())
    with pool_draws(dev, (0, -1)) as drawn:
        eng = _engine(tiny_ckpt("tts"), "cuda", eager=False)
    try:
        assert drawn == {0: 0, -1: 0}
        assert eng.llm.runner.graphs, "no CUDA graph was captured (see the engine's warning)"
        assert eng.llm.runner.capture_stream is not None
    finally:
        eng.close()


def test_cuda_fork_rollback_is_bit_identical(tiny_ckpt):
    eng = _engine(tiny_ckpt("tts"), "cuda", eager=False)
    try:
        sid = eng.open(list(range(10, 41)))
        before, free = eng.next_logits(sid), eng.num_free_blocks
        fork = eng.fork(sid)
        assert len(eng.generate(seq_id=fork, params=GREEDY)) == 24
        assert eng.rollback(fork) > 0 and eng.num_free_blocks == free
        assert torch.equal(eng.next_logits(sid), before)
    finally:
        eng.close()


def test_a_sequence_longer_than_the_graphs_decodes_eagerly(tiny_ckpt):
    """The graphs' block tables are max_model_len wide; a longer sequence takes the eager path instead of failing."""
    path = tiny_ckpt("tts")
    graphed, eager = (_engine(path, "cuda", eager=e, max_model_len=32) for e in (False, True))
    try:
        for e in (graphed, eager):
            e.llm.max_model_len = 64  # past the width the graphs were captured for (the engine would refuse it)
        prompt = list(range(5, 45))  # 40 tokens: 3 blocks of 16, the graphs hold 2
        assert graphed.llm.runner.graphs
        assert graphed.generate(prompt, GREEDY) == eager.generate(prompt, GREEDY)
    finally:
        graphed.close()
        eager.close()



def test_load_tunes_the_prefill_kernel_for_every_prompt_length(tiny_ckpt):
    """The prefill kernel's autotuning (seconds per new key) happens while the engine loads: prompts of any length
    afterwards, one per query-length class here, meet an already tuned kernel instead of stalling a reply."""
    from kernels import _attention_triton as tri

    eng = _engine(tiny_ckpt("tts"), "cuda", eager=True)
    try:
        tuned = set(tri._get_prefill_launcher().cache)
        assert tuned
        for n in (2, 37, 100, 300):
            eng.generate(list(range(5, 5 + n)), SamplingParams(temperature=0.0, max_tokens=1))
        assert set(tri._get_prefill_launcher().cache) == tuned
    finally:
        eng.close()
