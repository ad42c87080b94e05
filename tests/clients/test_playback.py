"""Barge-in bookkeeping: exact played ms per assistant item on a virtual real-time player."""

from __future__ import annotations

import pytest

from clients.playback import Playback, Truncation

MS = 24  # samples per ms at 24 kHz


def test_audio_plays_in_real_time_from_arrival() -> None:
    p = Playback()
    p.enqueue("a", 1000 * MS, now=10.0)
    assert p.played_ms("a", 10.0) == 0
    assert p.played_ms("a", 10.25) == 250
    assert p.queued_ms(10.25) == 750
    assert p.is_playing(10.25) and p.current_item(10.25) == "a"
    assert p.played_ms("a", 12.0) == 1000  # capped at what was received


def test_segments_queue_back_to_back_and_underrun_waits() -> None:
    p = Playback()
    p.enqueue("a", 100 * MS, now=0.0)    # plays 0.0-0.1
    p.enqueue("a", 100 * MS, now=0.05)   # queued behind: plays 0.1-0.2
    assert p.played_ms("a", 0.15) == 150
    p.enqueue("a", 100 * MS, now=0.5)    # underrun: player idled 0.2-0.5, this plays 0.5-0.6
    assert p.played_ms("a", 0.55) == 250
    p.finish_item("a")
    assert p.is_playing(0.59) and not p.is_playing(0.6)


def test_interrupt_truncates_playing_and_unstarted_items_and_drops_queue() -> None:
    p = Playback()
    p.enqueue("a", 300 * MS, now=0.0, content_index=0)
    p.enqueue("b", 300 * MS, now=0.1, content_index=1)  # starts at 0.3
    p.finish_item("a")
    assert p.interrupt(0.2) == [Truncation("a", 0, 200), Truncation("b", 1, 0)]
    assert not p.is_playing(0.2) and p.queued_ms(0.2) == 0
    assert p.played_ms("a", 5.0) == 200  # frozen at the interruption
    assert not p.enqueue("a", 480, now=0.3)  # late deltas of an interrupted item are dropped
    assert p.interrupt(0.4) == []


def test_open_item_in_underrun_is_still_truncated() -> None:
    """The reply is still streaming (no output_audio.done) but the player has caught up: the user heard
    everything received so far, and the server must learn exactly that."""
    p = Playback()
    p.enqueue("a", 120 * MS, now=1.0)
    assert p.is_playing(2.0)
    assert p.interrupt(2.0) == [Truncation("a", 0, 120)]


def test_finished_and_played_items_are_not_truncated() -> None:
    p = Playback()
    p.enqueue("a", 50 * MS, now=0.0)
    p.finish_all()
    assert not p.is_playing(0.06)
    assert p.interrupt(0.06) == []


def test_ms_rounds_down_and_boundaries_are_exact() -> None:
    p = Playback()
    p.enqueue("a", 481, now=0.0)
    assert p.played_samples("a", 0.02) == 480  # float error must not lose the boundary sample
    assert p.played_ms("a", 1.0) == 20          # 481 samples = 20.04 ms -> 20


def test_reset_and_validation() -> None:
    p = Playback()
    p.enqueue("a", 480, now=0.0)
    p.interrupt(0.001)
    p.reset()
    assert p.enqueue("a", 480, now=1.0)  # a new session may reuse ids
    with pytest.raises(ValueError):
        p.enqueue("a", -1, now=1.0)
    with pytest.raises(ValueError):
        Playback(0)
