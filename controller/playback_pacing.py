"""When a reply's audio may leave for the client, and how much of it the client has played: pure arithmetic, with
the time (monotonic seconds) an argument of every call.

The client is taken to play audio as it comes, at real time, pausing when it runs dry (clients.playback's model).
Each delta is sent no earlier than `lead_s` before the audio sent so far finishes playing: what was sent stays close
to what was heard, and audio not yet due stays cancellable by a barge-in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class PacedPlayback:
    """One reply's audio at the client, as far as the server knows it."""

    lead_s: float  # how far audio may run ahead of real time at the client
    # When the audio sent so far ends at the client; None before the first delta.
    played_until: float | None = None
    sent_ms: float = 0.0  # the end of the audio that has left, in ms of the reply's audio

    def wait_s(self, now: float) -> float:
        """How long the next delta waits before it leaves (0.0: at once).

        Paced on the client's playback, not on the time since the first delta: after a gap (a sentence slower to
        make than to play) the listener resumes where they were, so what follows is sent at real time again rather
        than at once."""
        if self.played_until is None:
            return 0.0
        return max(0.0, self.played_until - self.lead_s - now)

    def sent(self, start_ms: float, end_ms: float, now: float) -> None:
        """The delta holding the reply's audio [start_ms, end_ms) left at `now`."""
        self.played_until = max(now, self.played_until or 0.0) + (end_ms - start_ms) / 1000.0
        self.sent_ms = end_ms

    def heard_ms(self, now: float) -> float:
        """The audio played by `now`: what was sent, less what the client has yet to play."""
        if self.played_until is None:
            return 0.0
        return max(0.0, self.sent_ms - max(0.0, self.played_until - now) * 1000.0)
