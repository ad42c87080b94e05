"""iterate_in_thread: a worker thread's items reach asyncio once each, in order, with back-pressure."""

from __future__ import annotations

import concurrent.futures
import time
from contextlib import aclosing

from controller.bridge import iterate_in_thread


async def test_a_stalled_event_loop_neither_loses_nor_repeats_items() -> None:
    """The consumer holds the loop longer than the producer's put timeout (a busy loop on two shared cores):
    each item must still arrive exactly once (a repeated item is a repeated word or a stutter in the audio)."""
    got: list[int] = []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        async with aclosing(iterate_in_thread(lambda cancel: iter(range(6)), pool, maxsize=1)) as items:
            async for item in items:
                got.append(item)
                if len(got) > 6:
                    break
                time.sleep(0.3)  # noqa: ASYNC251 - blocks the loop on purpose
    assert got == list(range(6))


async def test_leaving_early_releases_a_producer_blocked_on_the_full_queue() -> None:
    produced: list[int] = []

    def make(cancel: object) -> object:
        for i in range(100):
            produced.append(i)
            yield i

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        async with aclosing(iterate_in_thread(make, pool, maxsize=2)) as items:
            async for item in items:
                if item == 1:
                    break
        started = time.monotonic()
        pool.submit(lambda: None).result(timeout=2)  # the worker thread is free again
    assert time.monotonic() - started < 1.0
    assert len(produced) < 10  # back-pressure held the producer
