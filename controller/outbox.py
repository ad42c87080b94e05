"""The events waiting to go to one client, in order, and the loop that sends them over its WebSocket.

Only audio deltas are tagged with their reply's generation: a barge-in drops a cancelled reply's audio still queued
(it would play late), never the events that close the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection

from controller.realtime.server_events import Json

AUDIO_DELTA = "response.output_audio.delta"


class Outbox:
    def __init__(self, max_events: int, send_stall_s: float) -> None:
        """max_events: queued past this, put() waits (the client reads slowly). send_stall_s: a send that has waited
        this long on a full socket means a client that stopped reading (SessionDefaults.send_stall_s)."""
        # (audio's generation or None, the event's JSON, the event for the observer)
        self._queue: asyncio.Queue[tuple[int | None, str, Json]] = asyncio.Queue(max_events)
        self._stall_s = send_stall_s

    def __len__(self) -> int:
        return self._queue.qsize()

    async def put(self, event: Json, gen_id: int | None = None) -> None:
        """Queue an event; gen_id: the generation an audio delta belongs to."""
        tag = gen_id if event["type"] == AUDIO_DELTA else None
        await self._queue.put((tag, json.dumps(event, separators=(",", ":")), event))

    def drop_audio(self, gen_id: int) -> None:
        """Barge-in: audio of a cancelled reply that has not left yet is dropped, not sent late."""
        kept = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            self._queue.task_done()  # put back or dropped: not waiting to be sent any more
            if item[0] != gen_id:
                kept.append(item)
        for item in kept:
            self._queue.put_nowait(item)

    async def drain(self, timeout_s: float) -> None:
        """Wait until every event queued is sent, for at most timeout_s."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)

    async def send(self, ws: ServerConnection, on_sent: Callable[[Json], None]) -> None:
        """Send the events as they are queued, until the connection fails (ConnectionClosed) or a send stalls
        (TimeoutError, the connection aborted); on_sent sees each event once it is sent."""
        while True:
            _, data, event = await self._queue.get()
            try:
                async with asyncio.timeout(self._stall_s):
                    await ws.send(data)
            except TimeoutError:
                # No close frame can reach a peer that reads nothing, and websockets' close() would wait on the same
                # full buffer: the connection is aborted, as websockets does itself when a close times out.
                ws.transport.abort()
                raise
            on_sent(event)
            self._queue.task_done()  # drain() waits for the queue to be sent
