"""When the agent is asked to answer the caller's DTMF keys: the rule of a call's key presses, without I/O.

A key press is a turn of the caller's, as speech is, but a caller keying in a number presses several keys: the
agent answers them all once no key came for the pause (the caller's timer, outside this class). A reply under way
when the pause ends answers nothing of them (the server refuses a second reply meanwhile): they are asked for at its
end. A reply that starts after the keys (the caller spoke, or another was asked for) sees their items and answers
them too, so none is asked for on top of it, unless it says nothing (the caller's speech held no words): then the
keys are asked for after it, once.
"""
from __future__ import annotations

__all__ = ["KeyAnswers"]


class KeyAnswers:
    """Says when to ask the agent for a reply to the caller's keys. Each method that returns True means: ask now."""

    def __init__(self) -> None:
        self.pausing = False  # keys came and the pause after the last one is still running (the caller's timer)
        self._unanswered = False  # the pause ended while a reply was under way: the keys' reply is due after it
        self._ride = False  # keys left to the next reply to start
        self._reply: str | None = None  # the reply that took them: if it says nothing, they are asked for again

    def key_pressed(self) -> None:
        """A key came: the caller's pause timer (re)starts."""
        self.pausing = True

    def pause_ended(self, replying: bool) -> bool:
        """No key came for the pause; `replying`: a reply is under way (its end then asks)."""
        self.pausing, self._unanswered = False, True
        return not replying and self._ask()

    def caller_speaks(self) -> None:
        """The caller speaks after its keys: its turn's reply will answer them (stops the pause timer)."""
        self._leave_to_next_reply()

    def reply_started(self, response_id: str | None) -> None:
        self._leave_to_next_reply()
        if self._ride:
            self._reply, self._ride = response_id, False

    def reply_done(self, response_id: str | None, said_nothing: bool) -> bool:
        took_keys = response_id is not None and response_id == self._reply
        self._reply = None
        return (self._unanswered or (took_keys and said_nothing)) and self._ask()

    def _ask(self) -> bool:
        self._unanswered = self._ride = False
        return True

    def _leave_to_next_reply(self) -> None:
        if self.pausing or self._unanswered:
            self._ride = True
        self.pausing = self._unanswered = False
