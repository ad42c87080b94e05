"""The `openai` package's realtime client on the real server (the scripted pipeline as its models), reading raw
frames, each checked against the package's GA types (tests.realtime_schema)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server
from tests.realtime_schema import validate_server_event


@asynccontextmanager
async def connected(pipeline: ScriptedPipeline, **session: object) -> AsyncIterator[AsyncRealtimeConnection]:
    """The openai client connected to the real server on `pipeline`, its session updated (no turn detection, and
    `session`) and its session.created/.updated read. Key and URL are given, so the client reads neither from the
    environment."""
    async with scripted_server(pipeline) as server:
        client = AsyncOpenAI(api_key="unused", base_url=f"http://127.0.0.1:{server.server.port}/v1")
        async with client.realtime.connect(model="stepaudio-rt") as conn:
            await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}},
                                               **session})
            await read_until(conn, "session.updated")
            yield conn


async def read_until(conn: AsyncRealtimeConnection, type_: str, timeout: float = 10.0) -> list[dict]:
    """The events up to and including the first of `type_`, each validated.

    Raises:
        TimeoutError: no event for `timeout` seconds (the types read so far in its message).
    """
    events: list[dict] = []
    while not events or events[-1]["type"] != type_:
        try:
            frame = await asyncio.wait_for(conn.recv_bytes(), timeout)
        except TimeoutError:
            raise TimeoutError(f"no {type_} within {timeout} s; got {[e['type'] for e in events]}") from None
        validate_server_event(frame.decode())
        events.append(json.loads(frame))
    return events


async def ask(conn: AsyncRealtimeConnection, text: str = "what time is it?", **response: object) -> None:
    await conn.conversation.item.create(item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
    await conn.response.create(response=response or None)


def of_type(events: list[dict], type_: str) -> list[dict]:
    return [e for e in events if e["type"] == type_]
