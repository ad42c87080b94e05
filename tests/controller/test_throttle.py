"""The token bucket behind the session's error rate: bursts pass, then each charge waits 1/rate."""

from __future__ import annotations

from controller.throttle import Throttle


def test_a_burst_passes_then_the_debt_is_paid_at_the_rate() -> None:
    bucket = Throttle(rate=10.0, burst=3)
    for _ in range(3):
        bucket.charge(now=0.0)
        assert bucket.delay(now=0.0) == 0.0
    bucket.charge(now=0.0)
    assert bucket.delay(now=0.0) == 0.1
    assert bucket.delay(now=0.05) == 0.05
    assert bucket.delay(now=0.1) == 0.0


def test_idle_time_refills_only_up_to_the_burst() -> None:
    bucket = Throttle(rate=10.0, burst=2)
    bucket.charge(now=0.0)
    for _ in range(3):
        bucket.charge(now=100.0)
    assert bucket.delay(now=100.0) == 0.1
