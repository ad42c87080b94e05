"""Helper tasks that live and die with the coroutine that started them."""

from __future__ import annotations

import asyncio


async def cancelled_unless_done(task: asyncio.Task[None]) -> None:
    """A helper task whose owner left early (cancelled, or failed) is stopped with it, and waited for."""
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
