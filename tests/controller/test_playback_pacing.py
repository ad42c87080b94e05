"""The pacing of a reply's audio to the client's playback (controller/playback_pacing.py), on a scripted clock."""

from __future__ import annotations

import pytest

from controller.playback_pacing import PacedPlayback


def _send(playback: PacedPlayback, ready_at: float, start_ms: float, end_ms: float) -> float:
    """The time a delta ready at `ready_at` leaves: after the wait the pacing asks for."""
    now = ready_at + playback.wait_s(ready_at)
    playback.sent(start_ms, end_ms, now)
    return now


def test_audio_made_at_once_leaves_the_lead_ahead_of_playback_then_at_real_time() -> None:
    """A second of audio in 100 ms deltas, all made at t=0, lead 0.3 s: the first four leave at once (0.4 s queued at
    the client), each later one when what was sent before it has 0.3 s left to play."""
    playback = PacedPlayback(lead_s=0.3)
    times = [_send(playback, 0.0, i * 100.0, (i + 1) * 100.0) for i in range(10)]
    assert times == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert playback.heard_ms(0.65) == pytest.approx(650.0)  # playing at real time since t=0
    assert playback.heard_ms(2.0) == pytest.approx(1000.0)  # all of it, and no more


def test_after_a_gap_the_listener_resumes_where_they_were() -> None:
    """A sentence slower to make than to play: the client ran dry at 0.1 s, so the next delta (ready at 2.0 s) leaves
    at once and plays from then; what was heard is counted from there, not from the first delta."""
    playback = PacedPlayback(lead_s=0.3)
    assert playback.heard_ms(0.0) == 0.0  # nothing sent yet
    _send(playback, 0.0, 0.0, 100.0)
    assert _send(playback, 2.0, 100.0, 200.0) == 2.0
    assert playback.heard_ms(2.05) == pytest.approx(150.0)
    assert playback.wait_s(2.05) == 0.0  # 0.05 s left to play, within the lead
