"""Slots: replies go before warm-ups; a waiter nobody wants any more gives up."""
from __future__ import annotations

import threading
import time

from lm_engine.backends.slots import Slots


def _never() -> bool:
    return False


def test_a_waiting_reply_gets_the_slot_before_a_warm_up_that_waited_longer() -> None:
    slots = Slots(1)
    assert slots.acquire(reply=True, unwanted=_never)  # a reply in progress
    order: list[str] = []
    warm_up = threading.Thread(target=lambda: slots.acquire(reply=False, unwanted=_never) and order.append("warm-up"))
    warm_up.start()
    time.sleep(0.1)
    reply = threading.Thread(target=lambda: slots.acquire(reply=True, unwanted=_never) and order.append("reply"))
    reply.start()
    time.sleep(0.1)
    assert slots.replies_waiting
    slots.release(reply=True)
    reply.join(5)
    assert order == ["reply"]
    assert not slots.replies_waiting
    slots.release(reply=True)
    warm_up.join(5)
    assert order == ["reply", "warm-up"]


def test_an_unwanted_waiter_gives_up_without_a_slot() -> None:
    slots = Slots(1)
    assert slots.acquire(reply=True, unwanted=_never)
    hung_up_at = time.monotonic() + 0.2
    assert not slots.acquire(reply=True, unwanted=lambda: time.monotonic() > hung_up_at)
    assert not slots.replies_waiting
    slots.release(reply=True)
    assert slots.acquire(reply=False, unwanted=_never)  # the slot was not lost


def test_a_reply_waits_for_a_warm_up_to_give_up_its_slot_even_with_another_slot_free() -> None:
    # llama.cpp then gives the reply the slot the warm-up filled (the longest common prefix), not the other one.
    slots = Slots(2)
    assert slots.acquire(reply=False, unwanted=_never)  # a warm-up in progress; one slot still free
    got: list[str] = []
    reply = threading.Thread(target=lambda: slots.acquire(reply=True, unwanted=_never) and got.append("reply"))
    reply.start()
    time.sleep(0.2)
    assert got == [] and slots.replies_waiting  # the warm-up is told to stop
    slots.release(reply=False)
    reply.join(5)
    assert got == ["reply"]
    assert slots.acquire(reply=True, unwanted=_never)  # a second reply takes the other slot at once


def test_a_warm_up_takes_a_slot_beside_a_reply() -> None:
    slots = Slots(2)
    assert slots.acquire(reply=True, unwanted=_never)
    assert slots.acquire(reply=False, unwanted=_never)
