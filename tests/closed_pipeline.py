"""What a library user sees using a speech pipeline after its close(): each use says the pipeline is closed."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from controller.errors import PipelineClosed


async def drain(chunks: AsyncIterator[object]) -> list[object]:
    return [chunk async for chunk in chunks]


async def assert_each_use_says_closed(name: str, uses: list[tuple[str, Callable[[], object]]]) -> None:
    """Each (part, use): calling use(), and awaiting what it returns when that is a coroutine, raises PipelineClosed
    naming the pipeline and the part."""
    for part, use in uses:
        with pytest.raises(PipelineClosed) as closed:
            used = use()
            if asyncio.iscoroutine(used):
                await used
        assert str(closed.value) == f"the {name} pipeline is closed: no {part} after close()", part
