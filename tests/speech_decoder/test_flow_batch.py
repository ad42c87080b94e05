"""Flow windows of several sessions batched together give what each gives alone (tiny random CosyVoice)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from speech_decoder.cosyvoice_model import SpeakerPrompt
from speech_decoder.flow_batch import FlowBatcher, FlowJob, run_flow_jobs
from speech_decoder.streaming_decoder import StreamingDecoder


def _prompt(seed: int, n_tokens: int = 40, frames: int = 83) -> SpeakerPrompt:
    g = torch.Generator().manual_seed(seed)
    return SpeakerPrompt(torch.randint(0, 5120, (n_tokens,), generator=g), torch.randn(frames, 80, generator=g) - 5,
                         torch.randn(192, generator=g))


def _tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 5120, (n,), generator=torch.Generator().manual_seed(seed))


def test_a_batch_of_equal_shapes_equals_each_window_alone(model) -> None:
    # Two voices with prompts of one length, different seeds and frame offsets, and one window of another shape.
    jobs = [FlowJob(model, _tokens(25, 1), _prompt(0), 50, seed=0, first_frame=0),
            FlowJob(model, _tokens(25, 2), _prompt(1), 50, seed=7, first_frame=120),
            FlowJob(model, _tokens(35, 3), _prompt(0), 70, seed=0, first_frame=30),
            FlowJob(model, _tokens(25, 4), _prompt(0), 50, seed=3, first_frame=40)]
    together = run_flow_jobs(jobs)
    alone = [run_flow_jobs([job])[0] for job in jobs]
    for t, a, job in zip(together, alone, jobs):
        assert t.shape == (80, job.mel_len2)
        torch.testing.assert_close(t, a, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(together[0], together[3], atol=1e-3)  # rows kept their own tokens and noise


def test_the_batched_path_matches_the_flow_called_directly(model) -> None:
    p = _prompt(5)
    job = FlowJob(model, _tokens(30, 9), p, 60, seed=2, first_frame=10)
    direct = model.flow.inference(job.tokens[None], p.tokens[None], p.mel[None], p.embedding[None],
                                  mel_len2=60, seed=2, first_frame=10)[0].float()
    torch.testing.assert_close(run_flow_jobs([job])[0], direct, rtol=0, atol=0)


def test_concurrent_decoders_through_the_batcher_equal_decoders_alone(model) -> None:
    sessions = [(_prompt(0), _tokens(120, s).tolist(), s) for s in range(4)]
    alone = []
    for prompt, tokens, seed in sessions:
        dec = StreamingDecoder(model, prompt, seed=seed)
        alone.append(np.concatenate([dec.push(tokens[i:i + 5]) for i in range(0, len(tokens), 5)] + [dec.finish()]))
    batcher = FlowBatcher(max_batch=8)
    results: list[np.ndarray | None] = [None] * len(sessions)
    start = threading.Barrier(len(sessions))

    def speak(k: int) -> None:
        prompt, tokens, seed = sessions[k]
        dec = StreamingDecoder(model, prompt, seed=seed, flow=batcher.run)
        start.wait()
        parts = [dec.push(tokens[i:i + 5]) for i in range(0, len(tokens), 5)]
        results[k] = np.concatenate(parts + [dec.finish()])

    threads = [threading.Thread(target=speak, args=(k,)) for k in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    batcher.close()
    for got, want in zip(results, alone):
        assert got is not None and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    # Sessions in lockstep share window shapes: fewer flow calls than windows.
    assert batcher.batches_run < batcher.jobs_run


def test_a_failing_window_fails_only_its_callers_and_the_batcher_goes_on(model) -> None:
    batcher = FlowBatcher()
    bad = FlowJob(model, _tokens(25, 1), _prompt(0), 50, seed=0, first_frame=0)
    bad = FlowJob(model, bad.tokens, SpeakerPrompt(bad.prompt.tokens, bad.prompt.mel[:, :7], bad.prompt.embedding),
                  50, seed=0, first_frame=0)  # a prompt mel with 7 bins instead of 80
    with pytest.raises(RuntimeError):
        batcher.run(bad)
    good = FlowJob(model, _tokens(25, 1), _prompt(0), 50, seed=0, first_frame=0)
    torch.testing.assert_close(batcher.run(good), run_flow_jobs([good])[0])
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.run(good)
