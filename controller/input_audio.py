"""The session's input audio at 16 kHz, addressed in audio ms, with the wall time each part arrived."""

from __future__ import annotations

import bisect

import numpy as np

RATE = 16000


class InputAudio:
    """Append-only audio with a moving floor: `trim(ms)` forgets what lies before ms.

    Bounded: at most `max_seconds` are kept; older audio is dropped first (a turn longer than
    that keeps only its end), a tenth of it at a time so that appends at the limit do not each copy it all.
    """

    def __init__(self, max_seconds: float = 300.0) -> None:
        self._chunks: list[np.ndarray] = []
        self._floor = 0  # absolute sample index of the first kept sample
        self._total = 0  # absolute samples appended so far
        self._max = int(max_seconds * RATE)
        self._cut = max(1, self._max // 10)
        self._arrivals_ms: list[float] = []  # audio ms at the end of each append
        self._arrivals_t: list[float] = []   # wall time of that append
        self._dropped_before_ms = 0

    @property
    def total_ms(self) -> int:
        return self._total * 1000 // RATE

    @property
    def dropped_before_ms(self) -> int:
        """Audio before this was dropped for the bound (not trimmed by the caller): a turn that began earlier lost
        its beginning."""
        return self._dropped_before_ms

    @property
    def max_seconds(self) -> float:
        return self._max / RATE

    @property
    def kept_seconds(self) -> float:
        return (self._total - self._floor) / RATE

    def append(self, pcm16k: np.ndarray, now: float) -> None:
        if pcm16k.size == 0:
            return
        self._chunks.append(pcm16k.astype(np.float32, copy=False))
        self._total += pcm16k.size
        self._arrivals_ms.append(self._total * 1000 / RATE)
        self._arrivals_t.append(now)
        if self._total - self._floor > self._max:
            self.trim((self._total - self._max + self._cut) * 1000 // RATE)
            self._dropped_before_ms = -(-self._floor * 1000 // RATE)

    def segment(self, start_ms: int, end_ms: int) -> np.ndarray:
        start = max(self._floor, start_ms * RATE // 1000)
        end = min(self._total, end_ms * RATE // 1000)
        if end <= start:
            return np.zeros(0, np.float32)
        data = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks = [data]
        return data[start - self._floor:end - self._floor].copy()

    def trim(self, before_ms: int) -> None:
        cut = min(self._total, max(self._floor, before_ms * RATE // 1000))
        if cut == self._floor:
            return
        data = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        self._chunks = [data[cut - self._floor:]]
        self._floor = cut
        keep = bisect.bisect_left(self._arrivals_ms, cut * 1000 / RATE)
        del self._arrivals_ms[:max(0, keep - 1)]
        del self._arrivals_t[:max(0, keep - 1)]

    def arrival_time(self, audio_ms: float) -> float | None:
        """Wall time at which the audio up to `audio_ms` had arrived."""
        i = bisect.bisect_left(self._arrivals_ms, audio_ms)
        if i >= len(self._arrivals_t):
            return self._arrivals_t[-1] if self._arrivals_t else None
        return self._arrivals_t[i]
