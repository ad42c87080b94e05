"""How long a connection's pings take while something else fills its socket (the keepalive tests)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from websockets.asyncio.connection import Connection


async def ping_round_trips(ws: Connection, count: int, every_s: float = 2.0, timeout_s: float = 12.0) -> list[float]:
    """The times of `count` pings, one every `every_s`, as websockets' keepalive sends them; one unanswered after
    `timeout_s` counts as timeout_s."""
    rtts = []
    for _ in range(count):
        await asyncio.sleep(every_s)
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(await ws.ping(), timeout_s)
        rtts.append(time.monotonic() - started)
    return rtts
