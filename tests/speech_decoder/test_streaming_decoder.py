"""StreamingDecoder: chunk timing, length, determinism, and chunked vs offline audio.

Rules checked here:
  * fewer than first_chunk_tokens tokens in total -> one flow window -> chunked == offline within 1e-6;
  * total length == offline length (mel frames F(N) * 256) for any push pattern;
  * more tokens -> several flow windows. The released flow is non-causal (full attention, whole-sequence GroupNorm)
    so no chunking can be exact; with the tiny random-init weights the flow's long-range coupling is weak and
    chunked audio stays within 1% of the offline peak outside the cross-fade regions (cross-fade frames plus the
    vocoder's 16-frame reach on each side). This bound is a property of these weights, not a guarantee for trained
    weights; the vocoder half is exact (test_hift.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from speech_decoder.cosyvoice_model import SpeakerPrompt
from speech_decoder.streaming_decoder import (StreamingConfigError, StreamingDecoder, StreamingDecoderConfig,
                                              crossfade_weights, steady_windows)






@pytest.fixture(scope="module")
def prompt():
    g = torch.Generator().manual_seed(0)
    return SpeakerPrompt(torch.randint(0, 5120, (40,), generator=g), torch.randn(83, 80, generator=g) - 5,
                         torch.randn(192, generator=g))


def _tokens(n: int, seed: int = 0) -> list[int]:
    return torch.randint(0, 5120, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_crossfade_weights_sum_to_one_and_rise() -> None:
    fin, fout = crossfade_weights(21)
    assert torch.allclose(fin + fout, torch.ones(21))
    assert (fin[1:] >= fin[:-1]).all() and fin[0] < 0.1 and fin[-1] > 0.9


def test_config_requires_multiples_of_five() -> None:
    with pytest.raises(StreamingConfigError):
        StreamingDecoderConfig(first_chunk_tokens=24)
    with pytest.raises(StreamingConfigError):
        StreamingDecoderConfig(overlap_tokens=25, first_chunk_tokens=25)


def test_short_utterance_equals_offline(model, prompt) -> None:
    tokens = _tokens(20)
    dec = StreamingDecoder(model, prompt, seed=1)
    parts = [dec.push(tokens[:7]), dec.push(tokens[7:])]
    assert all(p.size == 0 for p in parts)
    audio = np.concatenate(parts + [dec.finish()])
    np.testing.assert_allclose(audio, model.token2wav(tokens, prompt, seed=1), atol=1e-6, rtol=0)


def test_first_chunk_at_25_tokens_and_chunks_tile_the_utterance(model, prompt) -> None:
    tokens = _tokens(200)
    dec = StreamingDecoder(model, prompt, seed=1)
    sizes, announced, windows = [], [], []
    for i in range(0, 200, 5):
        announced.append(dec.runs_first_window(5))
        windows.append(dec.runs_window(5))
        sizes.append((i + 5, dec.push(tokens[i:i + 5]).size))
    first = next(n for n, s in sizes if s)
    assert first == 25
    assert announced == [n == 25 for n, _ in sizes]  # the push that runs the first window, and only that one
    assert windows == [s > 0 for _, s in sizes] and sum(windows) == 3  # the pushes with audio, and only those
    assert all(s % 256 == 0 for _, s in sizes)
    tail = dec.finish()
    total = sum(s for _, s in sizes) + tail.size
    assert total == model.cfg.flow.mel_frames(200) * 256
    with pytest.raises(RuntimeError):
        dec.push([1])


def test_chunked_close_to_offline_outside_crossfades(model, prompt) -> None:
    tokens = _tokens(200)
    ref = model.token2wav(tokens, prompt, seed=1)
    dec = StreamingDecoder(model, prompt, seed=1)
    audio = np.concatenate([dec.push(tokens[i:i + 5]) for i in range(0, 200, 5)] + [dec.finish()])
    assert audio.shape == ref.shape and np.isfinite(audio).all()
    cfg, flow = dec.config, model.cfg.flow
    seam = np.zeros(audio.size // 256, dtype=bool)
    start, hop = 0, cfg.first_chunk_tokens - cfg.overlap_tokens
    while start + hop + cfg.overlap_tokens <= 200:
        start += hop
        hop = min(2 * hop, cfg.max_hop_tokens)
        lo, hi = flow.mel_frames(start), flow.mel_frames(start + cfg.overlap_tokens)
        seam[max(0, lo - cfg.vocoder_context): hi + cfg.vocoder_lookahead] = True
    err = np.abs(audio - ref).reshape(-1, 256).max(axis=1)
    peak = np.abs(ref).max()
    assert seam.any() and (~seam).any()
    assert err[~seam].max() <= 0.01 * peak


def test_deterministic_per_seed_and_push_pattern_free(model, prompt) -> None:
    tokens = _tokens(90, seed=3)
    a = StreamingDecoder(model, prompt, seed=2)
    out_a = np.concatenate([a.push(tokens[i:i + 5]) for i in range(0, 90, 5)] + [a.finish()])
    b = StreamingDecoder(model, prompt, seed=2)
    out_b = np.concatenate([b.push(tokens[:33]), b.push(tokens[33:34]), b.push(tokens[34:]), b.finish()])
    np.testing.assert_array_equal(out_a, out_b)


def test_rejects_out_of_range_tokens(model, prompt) -> None:
    dec = StreamingDecoder(model, prompt)
    with pytest.raises(ValueError):
        dec.push([5120])
    assert dec.num_tokens == 0


@pytest.mark.parametrize("config", [StreamingDecoderConfig(),
                                    StreamingDecoderConfig(first_chunk_tokens=20, max_hop_tokens=45),
                                    StreamingDecoderConfig(first_chunk_tokens=25, max_hop_tokens=10)])
def test_steady_windows_are_every_window_push_runs(model, prompt, config) -> None:
    """warm_up captures CUDA graphs for exactly these shapes; a window push() ran outside them would be captured
    while serving (a stall) or run eagerly."""
    seen = []

    def flow(job):  # records the window's shape; the mel's content does not matter here
        seen.append((job.tokens.numel(), job.mel_len2))
        return torch.zeros(80, job.mel_len2)

    dec = StreamingDecoder(model, prompt, config, flow=flow)
    dec.push(_tokens(2000))
    n_push = len(seen)
    dec.finish()
    steady = steady_windows(model.cfg.flow, config)
    assert set(seen[:n_push]) == set(steady)  # all of them occur, and nothing else
    assert len({n for n, _ in steady}) == len(steady) - 1  # the max-hop windows in two frame counts
    assert seen[n_push:] and seen[n_push] not in steady  # the last window: arbitrary, left to the eager flow

