"""The async API never makes the event loop wait for the engine: a step holds the engine's lock for its whole length
(a long prefill on a GPU, any step on a slow CPU), and a stream that starts or stops meanwhile must not stall the
loop that every session of the server shares."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from lm_engine.engine.config import SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)
SLOW_STEP_S = 0.6



async def _max_lag_while(work, period: float = 0.01) -> float:
    """The longest the loop was late for a heartbeat while `work` ran."""
    lags: list[float] = []
    stop = asyncio.Event()

    async def beat() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(period)
            lags.append(time.perf_counter() - t - period)

    beats = asyncio.create_task(beat())
    await asyncio.sleep(3 * period)  # beating before the work begins
    try:
        await work()
    finally:
        stop.set()
        await beats
    return max(lags)


async def test_a_stream_starts_and_stops_without_waiting_on_the_loop_for_a_step_under_way(eng, monkeypatch):
    want = eng.generate([1, 8, 9], GREEDY)
    run = eng.llm._run
    slow = threading.Event()

    def step(batch):  # type: ignore[no-untyped-def]
        if slow.is_set():
            slow.clear()
            time.sleep(SLOW_STEP_S)  # a long prefill of another session, lock held
        return run(batch)

    monkeypatch.setattr(eng.llm, "_run", step)
    slow.set()
    worker = threading.Thread(target=eng.generate, args=([1, 5, 6, 7], GREEDY))
    worker.start()
    await asyncio.sleep(0.1)  # the worker's slow step holds the lock now

    async def start_and_read() -> None:
        async with contextlib.aclosing(eng.stream([1, 8, 9], GREEDY)) as stream:
            assert [t async for t in stream] == want

    assert await _max_lag_while(start_and_read) < SLOW_STEP_S / 3
    worker.join()

    # a stream closed early aborts on a worker thread too, while a slow step runs
    worker = threading.Thread(target=eng.generate, args=([1, 5, 6, 7], GREEDY))

    async def start_then_close() -> None:
        stream = eng.stream([1, 8, 9], SamplingParams(temperature=0.0, max_tokens=50, ignore_eos=True))
        await stream.__anext__()
        slow.set()
        worker.start()
        await asyncio.sleep(0.1)
        await stream.aclose()

    assert await _max_lag_while(start_then_close) < SLOW_STEP_S / 3
    worker.join()
    assert not eng.llm.has_unfinished() and eng.generate([1, 8, 9], GREEDY) == want
