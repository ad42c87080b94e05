"""Run blocking model code on worker threads and hand its output to asyncio without blocking the loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Done:
    """The producer's end: no item follows. A class of its own, so that the consumer's isinstance checks leave the
    queue's items typed T."""

    __slots__ = ()


_DONE = _Done()


async def call_in_thread(executor: concurrent.futures.Executor, fn: Callable[..., R], *args: object) -> R:
    """`fn(*args, cancel)` on a worker thread. Cancelling the awaiting task sets `cancel`: a call that already left
    the executor's queue (running, or waiting for its model's lock) cannot be stopped from asyncio, and would hold
    its thread and model for whoever comes next unless it gives up when it sees the event."""
    cancel = threading.Event()
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(fn, *args, cancel))
    finally:
        cancel.set()


async def iterate_in_thread(make_iter: Callable[[threading.Event], Iterator[T]],
                            executor: concurrent.futures.Executor, *, maxsize: int = 64
                            ) -> AsyncGenerator[T, None]:
    """Yield the items of `make_iter(cancel)` as they are produced on a worker thread.

    The queue is bounded: a slow consumer blocks the producer thread (back-pressure), never the
    event loop. Leaving the `async for` early (break, exception, task cancellation) sets `cancel`,
    which the producer must check between items; the thread is then released promptly.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[T | _Failure | _Done] = asyncio.Queue(maxsize)
    cancel = threading.Event()

    def put(item: T | _Failure | _Done) -> bool:
        if cancel.is_set():
            return False
        try:
            fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        except RuntimeError:
            return False  # loop closed: nobody is listening any more
        # One put per item, waited on until it lands or the consumer leaves. Never a second put after a timeout:
        # the first may already have queued the item (its future completes a loop iteration later), and the
        # consumer would get the item twice.
        while True:
            try:
                fut.result(timeout=0.25)
                return True
            except concurrent.futures.TimeoutError:
                if cancel.is_set() or loop.is_closed():
                    fut.cancel()
                    return False
            except concurrent.futures.CancelledError:
                return False

    def produce() -> None:
        try:
            for item in make_iter(cancel):
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # the consumer re-raises it on the loop thread
            put(_Failure(exc))

    task = loop.run_in_executor(executor, produce)
    cancelled = False
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _Done):
                break
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    except asyncio.CancelledError:
        cancelled = True
        raise
    finally:
        cancel.set()
        # Unblock a producer waiting on a full queue, then wait for the thread to let go.
        while not queue.empty():
            queue.get_nowait()
        if cancelled and not task.done():
            # Cancelled (a response.cancel, a barge-in) while the producer is inside one blocking call, which may be
            # a prefill of seconds: the thread sees `cancel` when that call returns and cleans up by itself; waiting
            # for it here would hold back the cancellation (response.done) by as long.
            task.add_done_callback(_retrieve)
        else:
            await asyncio.shield(task)


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()  # produce() catches everything; this only marks the future's result as seen


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
