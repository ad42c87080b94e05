"""iterate_in_thread: a cancelled consumer is not held back by a producer stuck in one long blocking call (the tiny
Step-Audio chat LM's prefill of a long history: response.cancel was answered 1.5-2 s late); the producer still
finishes and cleans up by itself."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

from controller.bridge import iterate_in_thread


async def test_cancelling_the_consumer_does_not_wait_for_a_long_blocking_call() -> None:
    cleaned = threading.Event()

    def make(cancel: threading.Event):
        try:
            time.sleep(1.5)  # one uninterruptible model call (a long prefill)
            if cancel.is_set():
                return
            yield 1
        finally:
            cleaned.set()

    async def consume() -> None:
        async for _ in iterate_in_thread(make, pool):
            pass

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        started = time.monotonic()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        waited = time.monotonic() - started
        assert task.cancelled()
        assert waited < 0.5, f"the cancellation waited {waited:.2f} s for the producer's blocking call"
        assert await asyncio.to_thread(cleaned.wait, 3.0)  # the producer still ran its cleanup
