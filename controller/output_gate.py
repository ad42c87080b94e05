"""A reply's way out to the client: its events held while it is speculative and sent in order once it is released
(the commit), its audio deltas paced to the client's playback (playback_pacing), each closing event sent once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from controller.playback_pacing import PacedPlayback
from controller.realtime.server_events import Json

Emit = Callable[[Json], Awaitable[None]]

# The events that close a reply's output, each sent once per item (OutputGate.close).
_CLOSING_EVENTS = frozenset({"response.output_audio.done", "response.output_audio_transcript.done",
                             "response.output_text.done", "response.content_part.done", "response.output_item.done",
                             "conversation.item.done", "response.function_call_arguments.done"})

AudioSpan = tuple[float, float]  # an audio delta's [start_ms, end_ms) in the reply's audio


def _closing_key(event: Json) -> tuple[str, str]:
    return str(event["type"]), _item_id(event)


def _item_id(event: Json) -> str:
    # The item's own events carry the item; its parts' events carry its id.
    item = event.get("item")
    return str(item["id"]) if isinstance(item, dict) else str(event["item_id"])


class OutputGate:
    def __init__(self, *, released: bool, pacing_lead_s: float, emit: Emit,
                 on_first_audio: Callable[[], None]) -> None:
        self.released = released
        self.visible = False  # some event of the reply reached the client
        self.ended = False  # its response.done went out: the reply is over for the client
        self.first_audio_at: float | None = None  # monotonic time its first audio delta went out
        self.playback = PacedPlayback(lead_s=pacing_lead_s)
        self._emit_out = emit
        self._on_first_audio = on_first_audio
        self._held: list[tuple[Json, AudioSpan | None]] = []
        self._closes_sent: set[tuple[str, str]] = set()  # (type, item id) of the closing events sent
        self._release_event = asyncio.Event()
        if released:
            self._release_event.set()

    async def emit(self, event: Json) -> None:
        if self.released:
            await self._send(event)
        else:
            self._held.append((event, None))

    async def emit_audio(self, event: Json, span: AudioSpan) -> None:
        """An output_audio.delta carrying the reply's audio `span`: it waits for its turn at the client's playback."""
        if self.released:
            await self._pace(span)
            await self._send(event)
        else:
            self._held.append((event, span))

    async def close(self, event: Json) -> None:
        """A closing event, unless the client has it: a reply cancelled while its closing events go out is not closed
        a second time, and one whose closing events were still held when it was cancelled (a finished speculation's,
        behind its paced audio) is closed again, as the client saw its items open."""
        if _closing_key(event) not in self._closes_sent:
            await self.emit(event)

    async def send_held_created(self) -> None:
        """A held response.created goes out now, ahead of what else is held (a speculation's first event)."""
        if self._held and self._held[0][0]["type"] == "response.created":
            await self._send(self._held.pop(0)[0])

    async def release(self) -> None:
        """Everything held goes out now (audio beyond the pacing lead waits its turn).

        The gate opens only once the backlog is drained, so events produced meanwhile keep their order.
        """
        while self._held:
            event, span = self._held.pop(0)
            if span is not None:
                await self._pace(span)
            await self._send(event)
        self.released = True
        self._release_event.set()

    async def wait_released(self) -> None:
        await self._release_event.wait()

    def drop_held(self) -> set[str]:
        """Drops what is held (the reply was cancelled); returns the items whose output_item.added was held, which
        the client never saw."""
        unseen = {_item_id(e) for e, _ in self._held if e["type"] == "response.output_item.added"}
        self._held.clear()
        return unseen

    def let_out(self) -> None:
        """Nothing more will be generated (the reply was cancelled): its closing events go straight out."""
        self.released = True

    def heard_ms_now(self) -> float:
        return self.playback.heard_ms(time.monotonic())

    async def _pace(self, span: AudioSpan) -> None:
        wait = self.playback.wait_s(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
        self.playback.sent(*span, time.monotonic())

    async def _send(self, event: Json) -> None:
        self.visible = True
        if event["type"] in _CLOSING_EVENTS:
            self._closes_sent.add(_closing_key(event))
        if event["type"] == "response.output_audio.delta" and self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
            self._on_first_audio()
        # Over for the client once its response.done is queued, before the put returns: a cancel handled while the
        # put waits (a full outbox, a slow client) cancelled the task mid-put, and the response.done, counted as sent
        # above, never went out; the cancel got no answer either.
        self.ended = self.ended or event["type"] == "response.done"
        await self._emit_out(event)
