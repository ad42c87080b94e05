"""Talk to a running server over the real wire, as a client would, and keep every raw event."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from websockets.asyncio.client import ClientConnection, connect

RATE = 24000


def load_pcm24k(path: Path) -> np.ndarray:
    """A wav as float32 mono at 24 kHz."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return soxr.resample(data.mean(axis=1), rate, RATE).astype(np.float32)


def to_pcm16(x: np.ndarray) -> bytes:
    return np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()


def from_pcm16(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<i2").astype(np.float32) / 32768.0


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


@dataclass
class Conversation:
    ws: ClientConnection
    raw: list[str] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    _reader: asyncio.Task | None = None
    _new: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            self.raw.append(raw if isinstance(raw, str) else raw.decode())
            self.events.append(json.loads(self.raw[-1]))
            self.times.append(time.monotonic())
            self._new.set()

    async def send(self, event: dict) -> None:
        await self.ws.send(json.dumps(event))

    async def update_session(self, **session: object) -> dict:
        """session.update with these fields ("type": "realtime" added); returns its session.updated."""
        n = len(self.events)
        await self.send({"type": "session.update", "session": {"type": "realtime", **session}})
        return await self.wait_for("session.updated", after=n)

    async def ask(self, text: str) -> int:
        """A user text message, then response.create; returns the event count before them (for `after=`)."""
        n = len(self.events)
        await self.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
        await self.send({"type": "response.create"})
        return n

    async def stream(self, pcm24k: np.ndarray, pace: float = 1.0, chunk_s: float = 0.1) -> float:
        """Send audio in chunks, `pace` = 1 for real time; returns the send time of the last chunk."""
        n = int(chunk_s * RATE)
        t0 = time.monotonic()
        last = t0
        for i in range(0, len(pcm24k), n):
            chunk = pcm24k[i:i + n]
            await self.send({"type": "input_audio_buffer.append",
                             "audio": base64.b64encode(to_pcm16(chunk)).decode()})
            last = time.monotonic()
            if pace > 0:
                delay = t0 + (i + len(chunk)) / RATE / pace - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        return last

    async def wait_for(self, type_: str, *, after: int = 0, timeout: float = 60.0,
                       where: dict | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events[after:]:
                if ev["type"] == type_ and all(_get(ev, k) == v for k, v in (where or {}).items()):
                    return ev
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                types = [e["type"] for e in self.events]
                raise TimeoutError(f"no {type_} within {timeout}s; got {types[-40:]}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), remaining)
            except TimeoutError:
                pass

    def of_type(self, type_: str) -> list[dict]:
        return [e for e in self.events if e["type"] == type_]

    def time_of(self, ev: dict) -> float:
        return self.times[self.events.index(ev)]

    def audio_of(self, response_id: str | None = None) -> np.ndarray:
        chunks = [base64.b64decode(e["delta"]) for e in self.of_type("response.output_audio.delta")
                  if response_id is None or e["response_id"] == response_id]
        return from_pcm16(b"".join(chunks))

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


def _get(ev: dict, dotted: str) -> object:
    cur: object = ev
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


async def open_conversation(url: str, **kwargs: object) -> Conversation:
    ws = await connect(url, max_size=32 * 1024 * 1024, **kwargs)  # type: ignore[arg-type]
    conv = Conversation(ws)
    await conv.start()
    await conv.wait_for("session.created", timeout=10)
    return conv


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0
