"""What the client keeps from a server session's events, and what they ask of it. Pure (time is an input).

It keeps the session fields the server accepted (for re-sending after a reconnect), the output audio format, whether
server VAD interrupts a reply, the replies under way (to end them when the connection drops) and the playback
bookkeeping; speech over a playing reply that the server interrupts asks for truncations (barge-in).
"""

from __future__ import annotations

from clients import events as ev
from clients.audio import WIRE_RATE
from clients.events import ServerEvent
from clients.playback import Playback, Truncation

__all__ = ["SessionTracker"]


class SessionTracker:
    """One client's view of its server session, fed every server event in order."""

    def __init__(self) -> None:
        self.playback = Playback(WIRE_RATE)
        self.session = ev.SessionFields()  # what every session.update so far set, less what the server refused
        self._out_bytes_per_sample = ev.BYTES_PER_WIRE_SAMPLE["audio/pcm"]
        self._server_interrupts = True  # the session's turn_detection.interrupt_response
        self._open_responses: dict[str, None] = {}  # ids of replies created and not yet done, in order
        # The session.update to send again: the new server session refused a field of the one sent after a reconnect
        # (dropped from it now), and with it the others.
        self.replay_again: dict[str, object] | None = None

    def on_event(self, event: ServerEvent, now: float, *, auto_truncate: bool) -> list[Truncation]:
        """Take in one server event at `now` (the playback clock); returns the truncations to send: with
        `auto_truncate`, those of the items playing when the server reports speech over them.

        Raises:
            ServerEventError: an audio delta whose audio is not valid base64.
        """
        t = event.type
        if t == "error" and event.error is not None:  # one of our session.updates refused: not re-sent
            if self.session.refused(event.error):
                self.replay_again = self.session.replay()
        elif t in ("session.created", "session.updated"):
            self._out_bytes_per_sample = ev.output_bytes_per_sample(event)
            self._server_interrupts = ev.interrupts_response(event)
        elif t == "response.output_audio.delta" and event.item_id:
            n = int(len(event.audio) / self._out_bytes_per_sample)
            self.playback.enqueue(event.item_id, n, now, event.content_index)
        elif t == "response.output_audio.done" and event.item_id:
            self.playback.finish_item(event.item_id)
        elif t == "response.created" and event.response_id:
            self._open_responses[event.response_id] = None
        elif t == "response.done":
            self._open_responses.pop(event.response_id or "", None)
            self.playback.finish_all()
        elif (t == "input_audio_buffer.speech_started" and auto_truncate and self._server_interrupts
              and self.playback.is_playing(now)):
            # With interrupt_response off the server lets the reply play on over the user: nothing is cut.
            return self.playback.interrupt(now)
        return []

    def lost_responses(self) -> list[ServerEvent]:
        """The connection dropped: a client.response_lost event for each reply under way, which is forgotten. The
        server session that owned them is gone: without an end, an app awaiting response.done waits forever."""
        lost = [ServerEvent(ev.CLIENT_RESPONSE_LOST, {"type": ev.CLIENT_RESPONSE_LOST, "response_id": response_id})
                for response_id in self._open_responses]
        self._open_responses.clear()
        return lost
