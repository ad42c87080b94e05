"""A token bucket, pure: the caller charges it and sleeps for delay(now) itself."""

from __future__ import annotations


class Throttle:
    """`rate` charges a second on average, in bursts of up to `burst`.

    Charges are never refused: the bucket goes into debt, and delay() says how long the caller should wait to pay it
    back, so that a caller who waits that long after each charge stays at `rate`.
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None

    def charge(self, now: float) -> None:
        self._refill(now)
        self._tokens -= 1.0

    def delay(self, now: float) -> float:
        """Seconds until the bucket is out of debt (0 when it is not in debt)."""
        self._refill(now)
        return max(0.0, -self._tokens) / self.rate

    def _refill(self, now: float) -> None:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
