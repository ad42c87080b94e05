"""The LM's slots as the in-process backends hand them out: replies go first, warm-ups take what replies leave.

A warm-up (a prompt-cache prefill while the user speaks) only saves time for a reply that has not been asked for
yet, so it never keeps a slot from a reply that is waiting now: it waits while any reply waits, and one that holds a
slot gives it up at its next chance (`replies_waiting`). A reply also waits until no warm-up holds a slot, even
where another slot is free: llama.cpp gives a request the idle slot whose cache shares the longest prefix with its
prompt, so the reply then gets the slot the warm-up just filled, instead of evaluating that prompt again in another.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

_POLL_S = 0.05  # how soon a waiter that nobody wants any more gives up


class Slots:
    """`n` slots shared by replies and warm-ups. Thread-safe."""

    def __init__(self, n: int) -> None:
        self._cond = threading.Condition()
        self._free = n
        self._replies_waiting = 0
        self._warm_ups_in = 0

    @property
    def replies_waiting(self) -> bool:
        """Whether a reply waits for a slot (a warm-up holding one should give it up)."""
        return self._replies_waiting > 0

    def acquire(self, *, reply: bool, unwanted: Callable[[], bool]) -> bool:
        """Wait for a slot; False (and no slot) once `unwanted()` says the request is no longer wanted."""
        with self._cond:
            if reply:
                self._replies_waiting += 1
            try:
                while not unwanted():
                    if self._free and not (self._warm_ups_in if reply else self._replies_waiting):
                        self._free -= 1
                        self._warm_ups_in += not reply
                        return True
                    self._cond.wait(_POLL_S)
                return False
            finally:
                if reply:
                    self._replies_waiting -= 1
                    self._cond.notify_all()  # a warm-up may wait for no reply to be waiting

    def release(self, *, reply: bool) -> None:
        with self._cond:
            self._free += 1
            self._warm_ups_in -= not reply
            self._cond.notify_all()
