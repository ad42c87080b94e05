"""Barge-in bookkeeping: how much of each assistant item the local player has played. Pure (time is an input).

Model of the player: received audio is queued in arrival order and plays at real time; when the queue is empty
the player idles and the next audio starts the moment it arrives. So a segment of n samples enqueued at `now`
starts at max(now, end of the previous segment) and has played min(n, (t - start) * rate) samples at time t.

Why it matters: the server generates audio faster than real time. When the user interrupts, the server must
learn how much the user actually heard (conversation.item.truncate with audio_end_ms), so that the unheard
text leaves the conversation, and the client must drop the audio it has not played yet.

Invariants: an item is *open* from its first audio until `finish_item` (response.output_audio.done); an
interrupted item is remembered so that its late deltas are dropped instead of played.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Playback", "Truncation"]

_V = TypeVar("_V")
_REMEMBER = 256  # finished/interrupted items kept for lookups; bounds memory on long sessions


@dataclass(frozen=True, slots=True)
class Truncation:
    """What to send as conversation.item.truncate for one item."""

    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(slots=True)
class _Segment:
    item_id: str
    start: float
    n: int


class Playback:
    """Virtual local player that tracks played samples per assistant item (see module docstring)."""

    def __init__(self, sample_rate: int = 24_000) -> None:
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        self.rate = sample_rate
        self._queue: deque[_Segment] = deque()
        self._played: OrderedDict[str, int] = OrderedDict()   # samples of fully played segments per item
        self._content: OrderedDict[str, int] = OrderedDict()   # content_index per known item
        self._open: dict[str, None] = {}                      # items still receiving audio (ordered set)
        self._dropped: OrderedDict[str, None] = OrderedDict()  # interrupted items: late audio is ignored

    # ----- feeding -----

    def enqueue(self, item_id: str, n_samples: int, now: float, content_index: int = 0) -> bool:
        """Queue `n_samples` of `item_id` that arrived at `now`. Returns False if dropped (item interrupted)."""
        if n_samples < 0:
            raise ValueError("n_samples must be >= 0")
        if item_id in self._dropped:
            return False
        self._advance(now)
        if item_id not in self._played:
            _remember(self._played, item_id, 0)
        _remember(self._content, item_id, content_index)
        self._open[item_id] = None
        if n_samples:
            start = max(now, self._queue[-1].start + self._queue[-1].n / self.rate) if self._queue else now
            self._queue.append(_Segment(item_id, start, n_samples))
        return True

    def finish_item(self, item_id: str) -> None:
        """The item's audio is complete (response.output_audio.done); it may still be playing."""
        self._open.pop(item_id, None)

    def finish_all(self) -> None:
        """The response is over (response.done): no item is open any more; queued audio still plays."""
        self._open.clear()

    # ----- queries -----

    def played_samples(self, item_id: str, now: float) -> int:
        self._advance(now)
        total = self._played.get(item_id, 0)
        for seg in self._queue:
            if seg.item_id == item_id:
                total += self._played_of(seg, now)
        return total

    def played_ms(self, item_id: str, now: float) -> int:
        """Whole milliseconds of `item_id` played by `now` (rounded down: never claim unheard audio)."""
        return self.played_samples(item_id, now) * 1000 // self.rate

    def queued_ms(self, now: float) -> int:
        """Milliseconds of received audio not yet played."""
        self._advance(now)
        left = sum(seg.n - self._played_of(seg, now) for seg in self._queue)
        return left * 1000 // self.rate

    def is_playing(self, now: float) -> bool:
        """True while received audio is unplayed or an item is still open (the reply is not over)."""
        self._advance(now)
        return bool(self._queue) or bool(self._open)

    def current_item(self, now: float) -> str | None:
        self._advance(now)
        if self._queue:
            return self._queue[0].item_id
        return next(reversed(self._open), None) if self._open else None

    # ----- barge-in -----

    def interrupt(self, now: float) -> list[Truncation]:
        """The user barged in at `now`: stop playback, drop queued audio, and return one truncation per item
        that was open or not fully played (in order), each with the exact ms played so far."""
        self._advance(now)
        items: dict[str, None] = {seg.item_id: None for seg in self._queue}
        items.update(self._open)
        out = [Truncation(i, self._content.get(i, 0), self.played_ms(i, now)) for i in items]
        for i in items:
            # Freeze what was heard; the item no longer plays or accepts audio.
            self._played[i] = self.played_samples(i, now)
            _remember(self._dropped, i, None)
        self._queue.clear()
        self._open.clear()
        return out

    def reset(self) -> None:
        """Forget everything (e.g. a new server session after a reconnect)."""
        self._queue.clear()
        self._played.clear()
        self._content.clear()
        self._open.clear()
        self._dropped.clear()

    # ----- internals -----

    def _played_of(self, seg: _Segment, now: float) -> int:
        if now <= seg.start:
            return 0
        # round() guards against float error turning an exact sample boundary into n - 1.
        return min(seg.n, int(round((now - seg.start) * self.rate, 6)))

    def _advance(self, now: float) -> None:
        """Fold fully played segments into per-item totals so the queue only holds unplayed audio."""
        while self._queue and self._played_of(self._queue[0], now) >= self._queue[0].n:
            seg = self._queue.popleft()
            _remember(self._played, seg.item_id, self._played.get(seg.item_id, 0) + seg.n)



def _remember(d: OrderedDict[str, _V], key: str, value: _V) -> None:
    d[key] = value
    d.move_to_end(key)
    while len(d) > _REMEMBER:
        d.popitem(last=False)
