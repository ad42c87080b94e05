"""The embedded pipeline's early-prefill warm-up stops inside llama.cpp when the session stops awaiting it (the
session closed, its turn ended): else the LM stays busy with the rest of that prompt and every other session's
next warm-up or reply waits for it."""
from __future__ import annotations

import asyncio
import time

import pytest

from controller.pipeline import EmbeddedConfig, EmbeddedPipeline
from lm_engine import ChatRequest

pytestmark = pytest.mark.slow


def _warm_up(tag: str, words: int) -> ChatRequest:
    return ChatRequest(messages=[{"role": "system", "content": f"Session {tag}."},
                                 {"role": "user", "content": " ".join(f"{tag}{i}" for i in range(words))}],
                       max_tokens=1)


async def _timed(pipeline: EmbeddedPipeline, request: ChatRequest) -> float:
    t0 = time.monotonic()
    await pipeline.prefill(request)
    return time.monotonic() - t0


async def test_a_cancelled_warm_up_frees_the_lm_for_the_next_one() -> None:
    pipeline = EmbeddedPipeline(EmbeddedConfig())
    try:
        whole = await _timed(pipeline, _warm_up("a", 900))  # about 2700 tokens: several of llama.cpp's batches
        abandoned = asyncio.ensure_future(pipeline.prefill(_warm_up("b", 900)))
        await asyncio.sleep(0.5)
        abandoned.cancel()  # as Session.close() cancels its tasks
        next_one = await _timed(pipeline, _warm_up("c", 5))
    finally:
        pipeline.close()
    assert next_one < whole / 2, f"the next warm-up took {next_one:.1f} s (a whole long one: {whole:.1f} s)"
