"""The per-session turn-taking state machine: a pure core, no I/O, no clock.

Rules (the adapter in controller/session.py feeds events and carries out the actions):

- States: IDLE (nobody speaks, no reply), LISTENING (the user speaks), SPECULATING (the user paused;
  a speculative reply is being prepared on a fork), RESPONDING (a committed reply is being prepared,
  no audio out yet), SPEAKING (the reply's audio is going out).
- VAD events are in audio time (ms since the session's input began); `now` is monotonic seconds and is
  used only for timers (idle_timeout_ms).
- A Pause while LISTENING starts a speculative generation that records its inputs: where the user's
  speech ended and the conversation version. Speech resuming rolls it back (CancelGeneration, reason
  "rollback"). At end of turn it is committed only if its inputs equal the final ones; otherwise it is
  cancelled and a fresh generation starts. A speculative generation's output never leaves before commit:
  the adapter holds it, so GenerationAudioStarted and GenerationFinished only arrive for committed ones.
- response.cancel concerns only what the client can see: while SPECULATING it is refused and the speculation
  goes on.
- Barge-in: SpeechStarted while RESPONDING or SPEAKING with interrupt_response emits speech_started, then cancels
  the reply (CancelGeneration + FlushAudio) and the machine listens to the user again. Without interrupt_response the
  reply goes on, but the VAD events are still emitted and the user's speech is still a turn (as below).
- A reply requested (response.create) while the user speaks starts at once, and the user's turn stays open:
  their SpeechStopped still commits it, and a reply that ends or is cancelled before then leaves the machine
  LISTENING.
- The client truncating the message of the reply in progress (conversation.item.truncate: the listener stopped
  hearing it) ends that reply as a cancel does, but what is owed goes on as when it finishes: an open user turn
  keeps the machine LISTENING, and a turn owed a reply gets it now.
- A turn committed while a reply goes on (spoken over it without interrupt_response, or while a requested reply
  runs) is owed a reply of its own (with create_response): it starts when the current reply finishes, never two
  at once. A client's response.cancel drops what is owed with the reply it cancels (the client took over).
- A commit or clear from the client while the VAD hears the user (speech_started out, the turn open) ends that
  speech for the client: speech_stopped at the commit's or clear's audio time, before the commit (or clear), so
  that every speech_started has its speech_stopped. Speech going on after it is a new turn, with its own pair.
- Turning the VAD off (turn_detection null) drops the user's turn it had opened from turn-taking, its speech_stopped
  at that audio time: the client commits its audio, and speech heard once the VAD is back is a new turn.
- Events about a generation that is not the current one are stale and ignored: adapters may still
  report output from a generation that was just cancelled.
- An event that the table does not list for the current state raises LocalProtocolError and leaves
  the state unchanged; events that are legal but meaningless in a state map to the same state.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.errors import LocalProtocolError
from controller.turn_events import (
    IDLE_TIMER, Action, BufferCleared, BufferCommitted, CancelGeneration, CancelRequested, CancelTimer,
    CommitGeneration, CommitUserTurn, ConfigChanged, ContextChanged, EmitIdleTimeout, EmitSpeechStarted,
    EmitSpeechStopped, Event, FlushAudio, GenerationAudioStarted, GenerationFinished, GenerationReport, Pause,
    RejectRequest, ReplyTruncated, ResponseRequested, SpeechResumed, SpeechStarted, SpeechStopped, StartGeneration,
    StartTimer, TimerFired, TurnConfig,
)


class TurnState(enum.Enum):
    IDLE = "idle"
    LISTENING = "listening"
    SPECULATING = "speculating"
    RESPONDING = "responding"
    SPEAKING = "speaking"


# The API's words for a response.cancel with no response in progress: clients match them to take the error for the
# harmless race it is (a reply that ended as the user interrupted), and show any other error to the user.
NO_ACTIVE_RESPONSE = "Cancellation failed: no active response found"

_S = TurnState
# The transition table. Where the next state depends on config or on the speculation's inputs,
# the entry names the usual target and the handler below decides.
TRANSITIONS: dict[TurnState, dict[type, TurnState]] = {
    _S.IDLE: {
        SpeechStarted: _S.LISTENING, Pause: _S.IDLE, SpeechResumed: _S.IDLE, SpeechStopped: _S.IDLE,
        BufferCommitted: _S.IDLE, BufferCleared: _S.IDLE, ResponseRequested: _S.RESPONDING,
        CancelRequested: _S.IDLE, ReplyTruncated: _S.IDLE, ContextChanged: _S.IDLE, GenerationAudioStarted: _S.IDLE,
        GenerationFinished: _S.IDLE, TimerFired: _S.RESPONDING, ConfigChanged: _S.IDLE,
    },
    _S.LISTENING: {
        SpeechStarted: _S.LISTENING, Pause: _S.SPECULATING, SpeechResumed: _S.LISTENING,
        SpeechStopped: _S.RESPONDING, BufferCommitted: _S.IDLE, BufferCleared: _S.IDLE,
        ResponseRequested: _S.RESPONDING, CancelRequested: _S.LISTENING, ReplyTruncated: _S.LISTENING,
        ContextChanged: _S.LISTENING,
        GenerationAudioStarted: _S.LISTENING, GenerationFinished: _S.LISTENING,
        TimerFired: _S.LISTENING, ConfigChanged: _S.LISTENING,
    },
    _S.SPECULATING: {
        SpeechStarted: _S.SPECULATING, Pause: _S.SPECULATING, SpeechResumed: _S.LISTENING,
        SpeechStopped: _S.RESPONDING, BufferCommitted: _S.IDLE, BufferCleared: _S.IDLE,
        ResponseRequested: _S.SPECULATING, CancelRequested: _S.SPECULATING, ReplyTruncated: _S.SPECULATING,
        ContextChanged: _S.SPECULATING,
        GenerationAudioStarted: _S.SPECULATING, GenerationFinished: _S.SPECULATING,
        TimerFired: _S.SPECULATING, ConfigChanged: _S.LISTENING,
    },
    _S.RESPONDING: {
        SpeechStarted: _S.LISTENING, Pause: _S.RESPONDING, SpeechResumed: _S.RESPONDING,
        SpeechStopped: _S.RESPONDING, BufferCommitted: _S.RESPONDING, BufferCleared: _S.RESPONDING,
        ResponseRequested: _S.RESPONDING, CancelRequested: _S.IDLE, ReplyTruncated: _S.IDLE,
        ContextChanged: _S.RESPONDING,
        GenerationAudioStarted: _S.SPEAKING,
        GenerationFinished: _S.IDLE, TimerFired: _S.RESPONDING, ConfigChanged: _S.RESPONDING,
    },
    _S.SPEAKING: {
        SpeechStarted: _S.LISTENING, Pause: _S.SPEAKING, SpeechResumed: _S.SPEAKING,
        SpeechStopped: _S.SPEAKING, BufferCommitted: _S.SPEAKING, BufferCleared: _S.SPEAKING,
        ResponseRequested: _S.SPEAKING, CancelRequested: _S.IDLE, ReplyTruncated: _S.IDLE,
        ContextChanged: _S.SPEAKING,
        GenerationAudioStarted: _S.SPEAKING,
        GenerationFinished: _S.IDLE, TimerFired: _S.SPEAKING, ConfigChanged: _S.SPEAKING,
    },
}


@dataclass(frozen=True, slots=True)
class _Speculation:
    gen_id: int
    audio_end_ms: int
    context_version: int


@dataclass(slots=True)
class TurnTaking:
    """One session's turn-taking. `handle(event, now)` returns the actions to carry out, in order."""

    config: TurnConfig = field(default_factory=TurnConfig)
    state: TurnState = TurnState.IDLE
    context_version: int = 0
    current_gen: int | None = None
    _next_gen: int = 1
    _speculation: _Speculation | None = None
    _idle_timer: bool = False
    _user_turn_open: bool = False  # speech_started was emitted and the turn is not committed yet
    _reply_owed: bool = False  # a turn committed during a reply waits for it to finish to get its own

    def handle(self, event: Event, now: float) -> list[Action]:
        table = TRANSITIONS[self.state]
        target = table.get(type(event))
        if target is None:
            raise LocalProtocolError(f"{type(event).__name__} is not allowed in state {self.state.value}",
                                     code="invalid_state")
        if isinstance(event, GenerationReport) and event.gen_id != self.current_gen:
            return []  # stale report from a cancelled generation
        actions: list[Action] = []
        handler = _HANDLERS.get(type(event))
        next_state = handler(self, event, target, actions, now) if handler else target
        self.state = next_state
        self._rearm_idle_timer(actions, now)
        return actions

    # ---- helpers used by the handlers ----

    def _new_gen(self, speculative: bool, audio_end_ms: int | None, actions: list[Action]) -> int:
        gen_id = self._next_gen
        self._next_gen += 1
        self.current_gen = gen_id
        self._reply_owed = False  # any reply hears the whole conversation, the owed turn included
        actions.append(StartGeneration(gen_id, speculative, audio_end_ms))
        return gen_id

    def _cancel_current(self, reason: str, actions: list[Action], flush: bool = False) -> None:
        if self.current_gen is None:
            return
        actions.append(CancelGeneration(self.current_gen, reason))
        if flush:
            actions.append(FlushAudio(self.current_gen))
        self.current_gen = None
        self._speculation = None

    def _rearm_idle_timer(self, actions: list[Action], now: float) -> None:
        timeout = self.config.idle_timeout_s if self.config.server_vad else None
        want = timeout is not None and self.state is TurnState.IDLE
        started_generation = any(isinstance(a, StartGeneration) for a in actions)
        if timeout is not None and want and not self._idle_timer:
            actions.append(StartTimer(IDLE_TIMER, now + timeout))
            self._idle_timer = True
        elif self._idle_timer and (not want or started_generation):
            actions.append(CancelTimer(IDLE_TIMER))
            self._idle_timer = False


def _on_speech_started(tt: TurnTaking, ev: SpeechStarted, target: TurnState, actions: list[Action],
                       now: float) -> TurnState:
    replying = tt.state in (TurnState.RESPONDING, TurnState.SPEAKING)
    if tt.state in (TurnState.IDLE, TurnState.RESPONDING, TurnState.SPEAKING):
        actions.append(EmitSpeechStarted(ev.audio_ms))
        tt._user_turn_open = True
    if replying and tt.config.interrupt_response:  # the speech is reported first: it is why the reply stops
        tt._cancel_current("barge_in", actions, flush=True)
    # Without interrupt_response the reply goes on; the user's speech is still a turn, committed at SpeechStopped.
    return tt.state if replying and not tt.config.interrupt_response else target


def _on_pause(tt: TurnTaking, ev: Pause, target: TurnState, actions: list[Action],
              now: float) -> TurnState:
    if tt.state is not TurnState.LISTENING:
        return target
    if not (tt.config.speculation and tt.config.create_response):
        return TurnState.LISTENING
    gen_id = tt._new_gen(True, ev.audio_ms, actions)
    tt._speculation = _Speculation(gen_id, ev.audio_ms, tt.context_version)
    return target


def _on_speech_resumed(tt: TurnTaking, ev: SpeechResumed, target: TurnState, actions: list[Action],
                       now: float) -> TurnState:
    if tt.state is TurnState.SPECULATING:
        tt._cancel_current("rollback", actions)
    return target


def _on_speech_stopped(tt: TurnTaking, ev: SpeechStopped, target: TurnState, actions: list[Action],
                       now: float) -> TurnState:
    if tt.state not in (TurnState.LISTENING, TurnState.SPECULATING):
        if tt._user_turn_open:  # the user spoke through a reply they did not interrupt: keep what they said
            tt._user_turn_open = False
            actions.append(EmitSpeechStopped(ev.audio_ms))
            actions.append(CommitUserTurn(ev.audio_ms))
            tt._reply_owed = tt.config.create_response
        return target
    tt._user_turn_open = False
    actions.append(EmitSpeechStopped(ev.audio_ms))
    actions.append(CommitUserTurn(ev.audio_ms))
    spec = tt._speculation
    if spec is not None and spec.audio_end_ms == ev.audio_ms and spec.context_version == tt.context_version:
        actions.append(CommitGeneration(spec.gen_id))
        tt._speculation = None
        return TurnState.RESPONDING
    if spec is not None:
        tt._cancel_current("stale", actions)
    if not tt.config.create_response:
        return TurnState.IDLE
    tt._new_gen(False, ev.audio_ms, actions)
    return TurnState.RESPONDING


def _on_buffer_committed(tt: TurnTaking, ev: BufferCommitted, target: TurnState, actions: list[Action],
                         now: float) -> TurnState:
    if tt.state is TurnState.SPECULATING:
        tt._cancel_current("stale", actions)
    _close_open_speech(tt, ev.audio_ms, actions)
    actions.append(CommitUserTurn(None))
    return tt.state if tt.state in (TurnState.RESPONDING, TurnState.SPEAKING) else target


def _on_buffer_cleared(tt: TurnTaking, ev: BufferCleared, target: TurnState, actions: list[Action],
                       now: float) -> TurnState:
    if tt.state is TurnState.SPECULATING:
        tt._cancel_current("rollback", actions)  # it answers audio that no longer exists
    _close_open_speech(tt, ev.audio_ms, actions)  # the next speech is a new turn, with its own speech_started
    return target


def _close_open_speech(tt: TurnTaking, audio_ms: int, actions: list[Action]) -> None:
    """The client cut the buffer while the VAD heard the user: the speech_started the client has is answered. The
    GA docs say only that a client "should expect" speech_stopped when speech stops (its item_id may differ after a
    manual commit); ending it at the cut keeps every client's started/stopped pairs balanced."""
    if tt._user_turn_open:
        tt._user_turn_open = False
        actions.append(EmitSpeechStopped(audio_ms))


def _on_response_requested(tt: TurnTaking, ev: ResponseRequested, target: TurnState,
                           actions: list[Action], now: float) -> TurnState:
    if tt.state in (TurnState.RESPONDING, TurnState.SPEAKING, TurnState.SPECULATING):
        if tt.state is not TurnState.SPECULATING:
            actions.append(RejectRequest("conversation_already_has_active_response",
                                         "Conversation already has an active response in progress.", tt.current_gen))
            return tt.state
        tt._cancel_current("stale", actions)
    tt._new_gen(False, None, actions)
    return TurnState.RESPONDING


def _on_cancel_requested(tt: TurnTaking, ev: CancelRequested, target: TurnState, actions: list[Action],
                         now: float) -> TurnState:
    if tt.state in (TurnState.RESPONDING, TurnState.SPEAKING):
        tt._cancel_current("client_cancelled", actions, flush=True)
        tt._reply_owed = False
        return TurnState.LISTENING if tt._user_turn_open else target
    # A speculation is invisible until committed: the client has no response to cancel, and (as the Realtime API
    # documents for a cancel with none in progress) the session stays as it was, so the speculation goes on.
    actions.append(RejectRequest("response_cancel_not_active", NO_ACTIVE_RESPONSE))
    return tt.state


def _on_reply_truncated(tt: TurnTaking, ev: ReplyTruncated, target: TurnState, actions: list[Action],
                        now: float) -> TurnState:
    if tt.state not in (TurnState.RESPONDING, TurnState.SPEAKING):
        return target
    tt._cancel_current("client_cancelled", actions, flush=True)
    return _after_reply(tt, target, actions)


def _on_context_changed(tt: TurnTaking, ev: ContextChanged, target: TurnState, actions: list[Action],
                        now: float) -> TurnState:
    tt.context_version += 1
    return target


def _on_generation_finished(tt: TurnTaking, ev: GenerationFinished, target: TurnState,
                            actions: list[Action], now: float) -> TurnState:
    if tt.state in (TurnState.RESPONDING, TurnState.SPEAKING):
        tt.current_gen = None
        return _after_reply(tt, target, actions)
    return target


def _after_reply(tt: TurnTaking, target: TurnState, actions: list[Action]) -> TurnState:
    """The state once the reply in progress is over: the user's open turn, or the reply a committed turn is owed."""
    if tt._user_turn_open:
        return TurnState.LISTENING
    if tt._reply_owed and tt.config.create_response:
        # The conversation as it is: the owed turn is in it, and its end in audio time is long past.
        tt._new_gen(False, None, actions)
        return TurnState.RESPONDING
    tt._reply_owed = False
    return target


def _on_timer(tt: TurnTaking, ev: TimerFired, target: TurnState, actions: list[Action],
              now: float) -> TurnState:
    if ev.key != IDLE_TIMER or not tt._idle_timer:
        return tt.state
    tt._idle_timer = False
    if tt.state is not TurnState.IDLE:
        return tt.state
    actions.append(EmitIdleTimeout())
    actions.append(CommitUserTurn(None))
    tt._new_gen(False, None, actions)
    return target


def _on_config_changed(tt: TurnTaking, ev: ConfigChanged, target: TurnState, actions: list[Action],
                       now: float) -> TurnState:
    tt.config = ev.config
    if tt.state is TurnState.SPECULATING:
        tt._cancel_current("stale", actions)  # the speculation's inputs (tools, instructions) changed
    tt.context_version += 1
    if not ev.config.server_vad and tt._user_turn_open:
        # No VAD will end the turn it opened: its speech ends for the client here, as at a commit or clear; its audio
        # stays in the buffer for the client to commit, and the next speech a VAD hears (turned on again) is a turn of
        # its own, announced by its own speech_started.
        _close_open_speech(tt, ev.audio_ms, actions)
        if tt.state is TurnState.SPECULATING or target is TurnState.LISTENING:
            return TurnState.IDLE
    return target


# Each handler takes its own event type, so the table's event parameter is Any: handle() looks a handler up by
# that type.
_HANDLERS: dict[type, Callable[[TurnTaking, Any, TurnState, list[Action], float], TurnState]] = {
    SpeechStarted: _on_speech_started,
    Pause: _on_pause,
    SpeechResumed: _on_speech_resumed,
    SpeechStopped: _on_speech_stopped,
    BufferCommitted: _on_buffer_committed,
    BufferCleared: _on_buffer_cleared,
    ResponseRequested: _on_response_requested,
    CancelRequested: _on_cancel_requested,
    ReplyTruncated: _on_reply_truncated,
    ContextChanged: _on_context_changed,
    GenerationFinished: _on_generation_finished,
    TimerFired: _on_timer,
    ConfigChanged: _on_config_changed,
}

