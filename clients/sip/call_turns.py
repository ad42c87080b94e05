"""One call's turns with the agent, without I/O: what the agent's events do to our outbound audio and the call
log, and when the caller's DTMF keys are to be answered (key_answers.py's rule). The asyncio side (agent_call.py)
feeds it the agent's events and the key pause's timer, and does what it answers (TurnAction).

- The agent's audio deltas go to the outbound stream, except those of a reply the caller talked over.
- speech_started (the caller talks over the agent) flushes the queue and drops the rest of that reply's audio:
  while its audio is queued, and also while its reply is under way with the queue empty for a moment (between
  two synthesized pieces), when the rest still to come must not play over the caller either.
- The agent's words go to the call log with response.output_audio_transcript.done. A reply cut short, by the
  caller talking over it or by the end of the call (the caller hung up mid-reply: that event never comes), is
  logged as far as the caller heard it, marked CUT, and its transcript.done (the whole reply's words) is not:
  each transcript delta is the sentence whose audio follows it, and what is heard is the reply's audio that went
  out (pushed, less what is still queued or was flushed), cut as the server cuts a barged-in reply. Words logged
  whole at transcript.done are cut back so when some of the reply's audio then never plays: it came ahead of
  real time (a server that synthesizes faster and sends at once) or waited out a hold.
- A turn of the caller's that held no words (a cough, a noise its VAD took for speech) gets a reply that says
  nothing: keys left to it are asked for after it.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from clients import events as ev
from clients.sip.call_record import CallRecord
from clients.sip.key_answers import KeyAnswers
from clients.sip.rtp import OutboundStream
from clients.heard import heard_of_sentences

__all__ = ["CUT", "AgentTurns", "TurnAction"]

CUT = " [cut]"  # ends a reply's words in the call log when the call ended while the caller heard it
G711_BYTES_PER_MS = 8  # 8 kHz, a byte a sample


@dataclass(slots=True)
class _Sentence:
    """One transcript delta of the reply under way and the reply's audio bytes pushed before and after it."""

    text: str
    start: int
    end: int


class TurnAction(enum.Enum):
    ASK_REPLY = "ask_reply"              # ask the agent for a reply now (response.create): it answers the keys
    STOP_KEY_PAUSE = "stop_key_pause"    # the keys' pause timer no longer matters: a reply took them


class AgentTurns:
    """The agent side of one call (see the module docstring); counts go to `record`."""

    def __init__(self, outbound: OutboundStream, record: CallRecord,
                 log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.outbound = outbound
        self.record = record
        self.log = log
        self.keys = KeyAnswers()
        self.responding = False  # between response.created and response.done
        self._response_id: str | None = None
        self._dropped_responses: set[str] = set()
        self._sentences: list[_Sentence] = []  # the reply under way's, until its audio has played or was cut
        self._logged_at: int | None = None  # its words' place in agent_transcripts once transcript.done logged them
        self._pushed = 0  # bytes of the reply's audio pushed to the outbound queue and not flushed

    def key_pressed(self) -> None:
        """A key press went to the agent: the pause after it (re)starts."""
        self.keys.key_pressed()

    def keys_paused(self) -> list[TurnAction]:
        """No key came for the pause."""
        return [TurnAction.ASK_REPLY] if self.keys.pause_ended(replying=self.responding) else []

    def on_event(self, event: ev.ServerEvent) -> list[TurnAction]:
        """One event from the agent session; returns what to do about it."""
        t = event.type
        if t == "response.output_audio.delta":
            if event.response_id not in self._dropped_responses:
                self.outbound.push(event.audio)
                self._pushed += len(event.audio)
                if self._sentences:
                    self._sentences[-1].end = self._pushed
        elif t == "response.output_audio_transcript.delta":
            if event.response_id not in self._dropped_responses:
                self._sentences.append(_Sentence(event.delta.strip(), self._pushed, self._pushed))
        elif t == "response.output_audio.done":
            self.outbound.finish()
        elif t == "response.created":
            self._response_id, self.responding = event.response_id, True
            self._sentences, self._pushed, self._logged_at = [], 0, None
            self.keys.reply_started(event.response_id)
            return self._keys_taken()
        elif t == "response.done":
            return self._reply_done(event)
        elif t == "input_audio_buffer.speech_started":
            flushed = self.outbound.flush()
            self._pushed -= flushed
            if (flushed or self.responding) and self._response_id is not None:
                self.record.barge_ins += 1
                self._dropped_responses.add(self._response_id)
                self._log_heard(unheard=flushed > 0)
            self.keys.caller_speaks()  # no reply asked for while the caller speaks
            return self._keys_taken()
        else:
            self._note(event)
        return []

    def call_ended(self) -> None:
        """The call is over: the reply under way is logged as far as the caller heard it."""
        self._log_heard(unheard=self.outbound.queued > 0)

    def _log_heard(self, *, unheard: bool) -> None:
        """The reply under way is cut short: its words go to the call log as far as the caller heard them.
        `unheard`: some of its audio never played (flushed, or still queued); words logged whole stay so without."""
        sentences, logged_at = self._sentences, self._logged_at
        self._sentences, self._logged_at = [], None
        if logged_at is not None and not unheard:
            return
        heard_ms = max(0, self._pushed - self.outbound.queued) / G711_BYTES_PER_MS
        heard = heard_of_sentences(((s.text, s.start / G711_BYTES_PER_MS, s.end / G711_BYTES_PER_MS)
                                    for s in sentences), heard_ms)
        words = [heard + CUT] if heard else []
        if logged_at is None:
            self.record.agent_transcripts += words
        else:
            self.record.agent_transcripts[logged_at:logged_at + 1] = words

    def _reply_done(self, event: ev.ServerEvent) -> list[TurnAction]:
        self.responding = False
        response = event.get("response")
        said_nothing = isinstance(response, dict) and response.get("status") == "completed" \
            and response.get("output") == []
        return [TurnAction.ASK_REPLY] if self.keys.reply_done(event.response_id, said_nothing) else []

    def _keys_taken(self) -> list[TurnAction]:
        return [] if self.keys.pausing else [TurnAction.STOP_KEY_PAUSE]

    def _note(self, event: ev.ServerEvent) -> None:
        """Events that only go to the call log."""
        t = event.type
        if t == "conversation.item.input_audio_transcription.completed":
            self.record.user_transcripts.append(event.transcript or "")
            self.log.debug("caller said: %s", event.transcript)
        elif t == "response.output_audio_transcript.done":
            if event.response_id not in self._dropped_responses:  # a barged-in one was logged as heard then
                self.record.agent_transcripts.append(event.transcript or "")
                self._logged_at = len(self.record.agent_transcripts) - 1
                if not self._sentences:  # no deltas came: the whole text is one sentence over all its audio
                    self._sentences = [_Sentence(event.transcript or "", 0, self._pushed)]
            self.log.debug("agent said: %s", event.transcript)
        elif t == "session.created":
            session = event.get("session")
            if isinstance(session, dict):
                sid = session.get("id")
                self.record.agent_session_id = sid if isinstance(sid, str) else None
                self.log.info("call %s: agent session %s", self.record.call, sid)
        elif t == "error":
            self.log.warning("agent error on %s: %s", self.record.call, event.error)
