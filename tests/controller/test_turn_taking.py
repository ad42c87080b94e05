"""Scripted timelines through the turn-taking core: exact actions, exact states."""

from __future__ import annotations

import pytest

from controller.errors import LocalProtocolError
from controller.turn_events import (
    IDLE_TIMER, BufferCleared, BufferCommitted, CancelGeneration, CancelRequested, CancelTimer, CommitGeneration,
    CommitUserTurn, ConfigChanged, ContextChanged, EmitIdleTimeout, EmitSpeechStarted, EmitSpeechStopped,
    FlushAudio, GenerationAudioStarted, GenerationFinished, Pause, RejectRequest, ReplyTruncated, ResponseRequested,
    SpeechResumed, SpeechStarted, SpeechStopped, StartGeneration, StartTimer, TimerFired, TurnConfig,
)
from controller.turn_taking import TurnState, TurnTaking

S = TurnState


def test_pause_speculates_then_end_of_turn_commits_it() -> None:
    tt = TurnTaking()
    assert tt.handle(SpeechStarted(500), 0.5) == [EmitSpeechStarted(500)]
    assert tt.state is S.LISTENING
    assert tt.handle(Pause(2500), 2.7) == [StartGeneration(1, True, 2500)]
    assert tt.state is S.SPECULATING
    assert tt.handle(SpeechStopped(2500), 3.0) == [
        EmitSpeechStopped(2500), CommitUserTurn(2500), CommitGeneration(1)]
    assert tt.state is S.RESPONDING
    assert tt.handle(GenerationAudioStarted(1), 3.1) == []
    assert tt.state is S.SPEAKING
    assert tt.handle(GenerationFinished(1), 5.0) == []
    assert tt.state is S.IDLE and tt.current_gen is None


def test_speech_resuming_rolls_the_speculation_back_and_a_fresh_one_follows() -> None:
    tt = TurnTaking()
    tt.handle(SpeechStarted(0), 0.0)
    tt.handle(Pause(1000), 1.2)
    assert tt.handle(SpeechResumed(1300), 1.3) == [CancelGeneration(1, "rollback")]
    assert tt.state is S.LISTENING
    assert tt.handle(Pause(2000), 2.2) == [StartGeneration(2, True, 2000)]
    # A report from the rolled-back generation is stale and changes nothing.
    assert tt.handle(GenerationAudioStarted(1), 2.3) == []
    assert tt.state is S.SPECULATING
    assert tt.handle(SpeechStopped(2000), 2.5)[-1] == CommitGeneration(2)


def test_speculation_with_changed_context_is_cancelled_at_end_of_turn() -> None:
    tt = TurnTaking()
    tt.handle(SpeechStarted(0), 0.0)
    tt.handle(Pause(1000), 1.2)
    tt.handle(ContextChanged(), 1.3)
    assert tt.handle(SpeechStopped(1000), 1.5) == [
        EmitSpeechStopped(1000), CommitUserTurn(1000), CancelGeneration(1, "stale"),
        StartGeneration(2, False, 1000)]
    assert tt.state is S.RESPONDING


def test_without_speculation_end_of_turn_starts_the_reply() -> None:
    tt = TurnTaking(config=TurnConfig(speculation=False))
    tt.handle(SpeechStarted(0), 0.0)
    assert tt.handle(Pause(1000), 1.2) == []
    assert tt.state is S.LISTENING
    assert tt.handle(SpeechStopped(1000), 1.5) == [
        EmitSpeechStopped(1000), CommitUserTurn(1000), StartGeneration(1, False, 1000)]


def test_barge_in_cancels_and_flushes_and_listens() -> None:
    tt = TurnTaking()
    tt.handle(SpeechStarted(0), 0.0)
    tt.handle(Pause(1000), 1.2)
    tt.handle(SpeechStopped(1000), 1.5)
    tt.handle(GenerationAudioStarted(1), 1.8)
    assert tt.handle(SpeechStarted(4000), 4.0) == [
        EmitSpeechStarted(4000), CancelGeneration(1, "barge_in"), FlushAudio(1)]
    assert tt.state is S.LISTENING and tt.current_gen is None


def test_no_barge_in_when_interrupt_response_is_off() -> None:
    tt = TurnTaking(config=TurnConfig(interrupt_response=False))
    tt.handle(ResponseRequested(), 0.0)
    tt.handle(GenerationAudioStarted(1), 0.5)
    assert tt.handle(SpeechStarted(900), 0.9) == [EmitSpeechStarted(900)]
    assert tt.state is S.SPEAKING


def test_manual_turns_commit_and_response_create() -> None:
    tt = TurnTaking(config=TurnConfig(server_vad=False))
    assert tt.handle(BufferCommitted(0), 0.0) == [CommitUserTurn(None)]
    assert tt.handle(ResponseRequested(), 0.1) == [StartGeneration(1, False, None)]
    assert tt.handle(ResponseRequested(), 0.2) == [
        RejectRequest("conversation_already_has_active_response",
                      "Conversation already has an active response in progress.", 1)]
    assert tt.handle(CancelRequested(), 0.3) == [CancelGeneration(1, "client_cancelled"), FlushAudio(1)]
    assert tt.state is S.IDLE
    assert tt.handle(CancelRequested(), 0.4)[0].code == "response_cancel_not_active"  # type: ignore[union-attr]


def test_create_response_false_commits_the_turn_only() -> None:
    tt = TurnTaking(config=TurnConfig(create_response=False))
    tt.handle(SpeechStarted(0), 0.0)
    assert tt.handle(Pause(800), 1.0) == []
    assert tt.handle(SpeechStopped(800), 1.3) == [EmitSpeechStopped(800), CommitUserTurn(800)]
    assert tt.state is S.IDLE


def test_idle_timeout_timer_is_armed_and_fires_a_response() -> None:
    tt = TurnTaking(config=TurnConfig(idle_timeout_s=5.0))
    assert tt.handle(ConfigChanged(TurnConfig(idle_timeout_s=5.0), 0), 10.0) == [StartTimer(IDLE_TIMER, 15.0)]
    assert tt.handle(TimerFired(IDLE_TIMER), 15.0) == [
        EmitIdleTimeout(), CommitUserTurn(None), StartGeneration(1, False, None)]
    assert tt.state is S.RESPONDING
    tt.handle(GenerationFinished(1), 17.0)
    assert tt.handle(SpeechStarted(20000), 20.0) == [EmitSpeechStarted(20000), CancelTimer(IDLE_TIMER)]


def test_unknown_event_raises_and_leaves_state_unchanged() -> None:
    tt = TurnTaking()
    tt.handle(SpeechStarted(0), 0.0)

    class Bogus:
        pass

    with pytest.raises(LocalProtocolError):
        tt.handle(Bogus(), 1.0)  # type: ignore[arg-type]
    assert tt.state is S.LISTENING


def test_config_change_while_speculating_drops_the_speculation() -> None:
    tt = TurnTaking()
    tt.handle(SpeechStarted(0), 0.0)
    tt.handle(Pause(600), 0.8)
    assert tt.handle(ConfigChanged(TurnConfig(), 900), 0.9) == [CancelGeneration(1, "stale")]
    assert tt.state is S.LISTENING


def test_a_reply_asked_for_while_the_user_speaks_does_not_swallow_their_turn() -> None:
    """response.create (say, after a tool result) while the user is mid-sentence: the reply starts, and the
    user's speech still ends in speech_stopped and a committed turn; the reply in progress is not interrupted,
    and the turn gets its own reply once that one has finished (never two at once)."""
    tt = TurnTaking()
    tt.handle(SpeechStarted(300), 0.3)
    assert tt.handle(ResponseRequested(), 0.8) == [StartGeneration(1, False, None)]
    assert tt.handle(Pause(1500), 1.7) == []
    assert tt.handle(SpeechStopped(1500), 2.0) == [EmitSpeechStopped(1500), CommitUserTurn(1500)]
    assert tt.state is S.RESPONDING
    assert tt.handle(GenerationFinished(1), 3.0) == [StartGeneration(2, False, None)]
    assert tt.state is S.RESPONDING
    assert tt.handle(GenerationFinished(2), 4.0) == []
    assert tt.state is S.IDLE


def test_a_question_spoken_over_a_reply_that_plays_on_is_answered_after_it() -> None:
    tt = TurnTaking(config=TurnConfig(interrupt_response=False))
    tt.handle(ResponseRequested(), 0.0)
    tt.handle(GenerationAudioStarted(1), 0.5)
    tt.handle(SpeechStarted(900), 0.9)
    assert tt.handle(SpeechStopped(2000), 2.2) == [EmitSpeechStopped(2000), CommitUserTurn(2000)]
    assert tt.handle(ResponseRequested(), 2.3)[0].code == "conversation_already_has_active_response"  # type: ignore
    assert tt.handle(GenerationFinished(1), 4.0) == [StartGeneration(2, False, None)]
    assert tt.state is S.RESPONDING
    # Spoken over again, and the user is still talking when the reply ends: the end of that turn answers both.
    tt.handle(GenerationAudioStarted(2), 4.5)
    tt.handle(SpeechStarted(5000), 5.0)
    tt.handle(SpeechStopped(6000), 6.2)
    tt.handle(SpeechStarted(6500), 6.5)
    assert tt.handle(GenerationFinished(2), 7.0) == []
    assert tt.state is S.LISTENING
    assert tt.handle(SpeechStopped(8000), 8.2) == [
        EmitSpeechStopped(8000), CommitUserTurn(8000), StartGeneration(3, False, 8000)]
    assert tt.handle(GenerationFinished(3), 9.0) == []
    assert tt.state is S.IDLE


@pytest.mark.parametrize("config", [TurnConfig(interrupt_response=False, create_response=False),
                                    TurnConfig(interrupt_response=False)])
def test_nothing_is_owed_without_create_response_or_after_the_client_cancels(config: TurnConfig) -> None:
    tt = TurnTaking(config=config)
    tt.handle(ResponseRequested(), 0.0)
    tt.handle(SpeechStarted(900), 0.9)
    tt.handle(SpeechStopped(2000), 2.2)
    if config.create_response:
        assert tt.handle(CancelRequested(), 2.5) == [CancelGeneration(1, "client_cancelled"), FlushAudio(1)]
    else:
        assert tt.handle(GenerationFinished(1), 4.0) == []
    assert tt.state is S.IDLE and tt.current_gen is None


def test_truncating_the_reply_in_progress_stops_it_and_the_turn_spoken_over_it_is_answered() -> None:
    """conversation.item.truncate of the message being spoken: the reply is cancelled and its audio flushed, but
    unlike response.cancel the turn owed a reply (spoken over it, interrupt_response off) gets it now."""
    tt = TurnTaking(config=TurnConfig(interrupt_response=False))
    tt.handle(ResponseRequested(), 0.0)
    tt.handle(GenerationAudioStarted(1), 0.5)
    tt.handle(SpeechStarted(900), 0.9)
    tt.handle(SpeechStopped(2000), 2.2)
    assert tt.handle(ReplyTruncated(1), 2.5) == [
        CancelGeneration(1, "client_cancelled"), FlushAudio(1), StartGeneration(2, False, None)]
    assert tt.state is S.RESPONDING
    assert tt.handle(ReplyTruncated(1), 2.6) == []  # about the reply already stopped: stale
    # Truncated while the user still speaks over it: their turn stays open and its end gets the reply.
    tt.handle(GenerationAudioStarted(2), 3.0)
    tt.handle(SpeechStarted(3500), 3.5)
    assert tt.handle(ReplyTruncated(2), 3.6) == [CancelGeneration(2, "client_cancelled"), FlushAudio(2)]
    assert tt.state is S.LISTENING
    assert tt.handle(SpeechStopped(4500), 4.7) == [
        EmitSpeechStopped(4500), CommitUserTurn(4500), StartGeneration(3, False, 4500)]
    # Nothing owed: the machine is idle.
    assert tt.handle(ReplyTruncated(3), 5.0) == [CancelGeneration(3, "client_cancelled"), FlushAudio(3)]
    assert tt.state is S.IDLE and tt.current_gen is None


def test_a_reply_that_ends_while_the_user_still_speaks_leaves_the_machine_listening() -> None:
    tt = TurnTaking()
    tt.handle(SpeechStarted(300), 0.3)
    tt.handle(ResponseRequested(), 0.8)
    assert tt.handle(GenerationFinished(1), 1.2) == []
    assert tt.state is S.LISTENING
    assert tt.handle(SpeechStopped(2000), 2.5) == [
        EmitSpeechStopped(2000), CommitUserTurn(2000), StartGeneration(2, False, 2000)]
    tt2 = TurnTaking()
    tt2.handle(SpeechStarted(300), 0.3)
    tt2.handle(ResponseRequested(), 0.8)
    assert tt2.handle(CancelRequested(), 1.0) == [CancelGeneration(1, "client_cancelled"), FlushAudio(1)]
    assert tt2.state is S.LISTENING


def test_clearing_the_buffer_mid_turn_rolls_the_speculation_back_and_the_next_speech_is_a_new_turn() -> None:
    tt = TurnTaking()
    tt.handle(SpeechStarted(0), 0.0)
    tt.handle(Pause(1000), 1.2)
    assert tt.handle(BufferCleared(1250), 1.3) == [CancelGeneration(1, "rollback"), EmitSpeechStopped(1250)]
    assert tt.state is S.IDLE and tt.current_gen is None
    assert tt.handle(SpeechStarted(1500), 1.5) == [EmitSpeechStarted(1500)]
    assert tt.handle(SpeechStopped(2500), 3.0) == [
        EmitSpeechStopped(2500), CommitUserTurn(2500), StartGeneration(2, False, 2500)]


def test_cancel_while_speculating_is_refused_and_the_speculation_is_committed_at_end_of_turn() -> None:
    tt = TurnTaking()
    tt.handle(SpeechStarted(0), 0.0)
    tt.handle(Pause(1000), 1.2)
    [reject] = tt.handle(CancelRequested(), 1.3)
    assert isinstance(reject, RejectRequest) and reject.code == "response_cancel_not_active"
    assert tt.state is S.SPECULATING and tt.current_gen == 1
    assert tt.handle(SpeechStopped(1000), 1.5) == [EmitSpeechStopped(1000), CommitUserTurn(1000), CommitGeneration(1)]


def test_random_sessions_keep_the_turn_taking_invariants() -> None:
    """20,000 random but well-formed event sequences (VAD events in the order a detector gives them, generation
    reports only for the current, committed reply). Whatever happens: one reply at a time, speech_started and
    speech_stopped alternate, a reply exists exactly in the replying states, an open user turn exactly while
    listening or speculating, and a cancellation says "rollback" or "stale" (what the session counts as a
    speculation rolled back) exactly when it drops a speculation not yet committed."""
    import random

    rng = random.Random(7)
    configs = [TurnConfig(), TurnConfig(interrupt_response=False), TurnConfig(create_response=False),
               TurnConfig(speculation=False), TurnConfig(interrupt_response=False, create_response=False)]
    for _ in range(400):
        tt = TurnTaking(config=rng.choice(configs))
        vad, ms, now, turn_open, uncommitted = "silence", 0, 0.0, False, set()
        for _ in range(50):
            ms += rng.randint(30, 600)
            now += 0.1
            choices = ["commit", "clear", "create", "cancel", "context", "config", "timer"]
            choices += {"silence": ["start"] * 4, "speech": ["pause"] * 4, "paused": ["resume", "stop", "stop"]}[vad]
            if tt.state in (S.RESPONDING, S.SPEAKING):
                choices += ["audio", "finished", "finished", "truncated"]
            kind = rng.choice(choices)
            event = {
                "start": lambda: SpeechStarted(ms), "pause": lambda: Pause(ms), "resume": lambda: SpeechResumed(ms),
                "stop": lambda: SpeechStopped(ms - 500), "commit": lambda: BufferCommitted(ms),
                "clear": lambda: BufferCleared(ms),
                "create": ResponseRequested, "cancel": CancelRequested, "context": ContextChanged,
                "config": lambda: ConfigChanged(rng.choice(configs), ms), "timer": lambda: TimerFired(IDLE_TIMER),
                "audio": lambda: GenerationAudioStarted(tt.current_gen),  # type: ignore[arg-type]
                "finished": lambda: GenerationFinished(tt.current_gen),  # type: ignore[arg-type]
                "truncated": lambda: ReplyTruncated(tt.current_gen),  # type: ignore[arg-type]
            }[kind]()
            vad = {"start": "speech", "pause": "paused", "resume": "speech", "stop": "silence", "commit": "silence",
                   "clear": "silence"}.get(kind, vad)
            live = None if isinstance(event, GenerationFinished) else tt.current_gen
            for action in tt.handle(event, now):
                if isinstance(action, CancelGeneration):
                    assert action.gen_id == live
                    assert (action.reason in ("rollback", "stale")) == (action.gen_id in uncommitted), action
                    live = None
                elif isinstance(action, StartGeneration):
                    assert live is None, "a second reply started while one was live"
                    live = action.gen_id
                    if action.speculative:
                        uncommitted.add(action.gen_id)
                elif isinstance(action, CommitGeneration):
                    uncommitted.discard(action.gen_id)
                elif isinstance(action, EmitSpeechStarted):
                    assert not turn_open
                    turn_open = True
                elif isinstance(action, EmitSpeechStopped):
                    assert turn_open
                    turn_open = False
                elif isinstance(action, CommitUserTurn):
                    turn_open = False
            assert live == tt.current_gen
            replying = tt.state in (S.SPECULATING, S.RESPONDING, S.SPEAKING)
            assert (tt.current_gen is not None) == replying, (tt.state, tt.current_gen)
            if tt.state in (S.LISTENING, S.SPECULATING):
                assert turn_open
            if tt.state is S.IDLE:
                assert not turn_open
