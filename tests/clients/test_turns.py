"""Per-turn latency bookkeeping (client view), on a scripted event timeline."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from clients.audio import SendLog
from clients.events import ServerEvent
from clients.turns import TurnTracker


def E(type_: str, **data: object) -> ServerEvent:  # noqa: N802
    return ServerEvent(type_, {"type": type_, **data})


def _log() -> SendLog:
    log = SendLog()
    for k in range(1, 101):  # 2 s of 20 ms chunks, chunk k sent at t = 0.02 k
        log.record(480 * k, 0.02 * k)
    return log


def test_vad_turn_timeline() -> None:
    voiced = np.array([100, 20_000, 23_999], np.int64)  # speech ends at sample 23999 (chunk 50, sent at 1.0 s)
    tr = TurnTracker(_log(), voiced)
    audio = base64.b64encode(b"\x00\x00" * 2400).decode()
    tr.feed(E("input_audio_buffer.speech_stopped", item_id="u1", audio_end_ms=980), 1.6)
    turn = tr.feed(E("input_audio_buffer.committed", item_id="u1"), 1.6)
    assert turn is not None and turn.end_of_speech == pytest.approx(1.0) and turn.audio_end_ms == 980
    tr.feed(E("response.created", response={"id": "r1"}), 1.7)
    tr.feed(E("response.output_audio.delta", response_id="r1", item_id="a1", delta=audio), 1.9)
    tr.feed(E("response.output_audio_transcript.delta", response_id="r1", delta="Hi"), 1.9)
    tr.feed(E("conversation.item.input_audio_transcription.completed", item_id="u1", transcript="hello"), 2.0)
    tr.feed(E("response.output_audio.delta", response_id="r1", item_id="a1", delta=audio), 2.0)
    assert not tr.all_done()
    tr.feed(E("response.done", response={"id": "r1", "status": "completed"}), 2.1)
    assert tr.all_done() and tr.transcripts_done()
    assert turn.first_audio_latency == pytest.approx(0.9)
    assert turn.transcript_latency == pytest.approx(1.0)
    assert turn.done_latency == pytest.approx(1.1)
    assert turn.audio_s == pytest.approx(0.2)
    assert turn.tts_rtf == pytest.approx(2.0)  # 0.2 s of audio over 0.1 s between first and last delta
    assert (turn.user_transcript, turn.assistant_transcript, turn.status) == ("hello", "Hi", "completed")


def test_manual_commit_uses_last_voiced_sample_sent() -> None:
    tr = TurnTracker(_log(), np.array([5_000, 9_599], np.int64))
    turn = tr.feed(E("input_audio_buffer.committed", item_id="u1"), 2.5)
    assert turn is not None and turn.end_of_speech == pytest.approx(0.4)  # sample 9599 is in chunk 20


def test_response_announced_before_commit_belongs_to_that_turn() -> None:
    tr = TurnTracker(_log(), np.array([1_000], np.int64))
    tr.feed(E("response.created", response={"id": "r1"}), 1.0)
    tr.feed(E("input_audio_buffer.committed", item_id="u1"), 1.1)
    tr.feed(E("response.done", response={"id": "r1", "status": "completed"}), 1.5)
    assert len(tr.turns) == 1 and tr.all_done()
    assert tr.turns[0].user_item_id == "u1"


def test_a_turn_spoken_over_before_its_reply_showed_is_skipped_and_the_next_reply_is_the_next_turns() -> None:
    tr = TurnTracker(_log(), np.array([1_000, 30_000], np.int64))
    tr.feed(E("input_audio_buffer.committed", item_id="u1"), 1.0)  # "Fail again." ...
    tr.feed(E("input_audio_buffer.speech_started", item_id="u2"), 1.3)  # ... spoken over: its reply never showed
    tr.feed(E("conversation.item.input_audio_transcription.completed", item_id="u1", transcript="Fail again."), 1.4)
    tr.feed(E("input_audio_buffer.committed", item_id="u2"), 2.0)
    assert not tr.all_done()
    tr.feed(E("response.created", response={"id": "r2"}), 2.1)
    assert [t.response_id for t in tr.turns] == [None, "r2"]
    assert not tr.all_done()
    tr.feed(E("response.done", response={"id": "r2", "status": "completed"}), 2.5)
    tr.feed(E("conversation.item.input_audio_transcription.completed", item_id="u2", transcript="Fail better."), 2.1)
    assert tr.all_done() and tr.transcripts_done()
    assert tr.turns[1].user_transcript == "Fail better."


def test_the_last_turn_without_a_reply_is_not_done() -> None:
    tr = TurnTracker(_log(), np.array([1_000], np.int64))
    tr.feed(E("input_audio_buffer.committed", item_id="u1"), 1.0)
    tr.feed(E("response.created", response={"id": "r1"}), 1.1)
    tr.feed(E("response.done", response={"id": "r1", "status": "completed"}), 1.5)
    tr.feed(E("input_audio_buffer.committed", item_id="u2"), 2.0)
    assert not tr.all_done()


def test_a_reply_lost_with_the_connection_ends_its_turn() -> None:
    """A reply cut by a dropped connection gets client.response_lost, never response.done: talk waited for it."""
    tr = TurnTracker(_log(), np.array([1_000], np.int64))
    tr.feed(E("input_audio_buffer.committed", item_id="u1"), 1.0)
    tr.feed(E("response.created", response={"id": "r1"}), 1.1)
    assert not tr.all_done()
    turn = tr.feed(E("client.response_lost", response_id="r1"), 1.5)
    assert tr.all_done() and turn is not None and (turn.status, turn.reason) == ("lost", "connection_lost")


def test_an_operators_say_while_the_user_talks_is_not_the_reply_to_that_speech() -> None:
    """`stepaudio-rt talk` with an MQTT `cmd/say` sent while the user spoke: the say's reply took the user's turn,
    whose line showed a negative first-audio latency, and the user's own reply came under a line of n/a. The say
    now has its own line, the operator's, and the user's turn 1 is timed from its own reply."""
    import io

    from clients.talk_printer import TranscriptPrinter

    out = io.StringIO()
    tr, printer = TurnTracker(_log(), np.array([1_000, 23_999], np.int64)), TranscriptPrinter(out)  # speech ends 1.0 s
    audio = base64.b64encode(b"\x00\x00" * 2400).decode()
    for now, data in (
            (0.1, {"type": "input_audio_buffer.speech_started", "item_id": "u1", "audio_start_ms": 40}),
            (0.5, {"type": "response.created", "response": {"id": "say"}}),
            (0.6, {"type": "response.output_audio.delta", "response_id": "say", "delta": audio}),
            (0.6, {"type": "response.output_audio_transcript.delta", "response_id": "say", "delta": "Hello."}),
            (1.5, {"type": "input_audio_buffer.speech_stopped", "item_id": "u1", "audio_end_ms": 980}),
            (1.5, {"type": "input_audio_buffer.committed", "item_id": "u1"}),
            (1.8, {"type": "response.done", "response": {"id": "say", "status": "completed"}}),
            (1.9, {"type": "response.created", "response": {"id": "r2"}}),
            (2.0, {"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1",
                   "transcript": "Ever tried."}),
            (2.2, {"type": "response.output_audio.delta", "response_id": "r2", "delta": audio}),
            (2.2, {"type": "response.output_audio_transcript.delta", "response_id": "r2", "delta": "Yes."}),
            (2.5, {"type": "response.done", "response": {"id": "r2", "status": "completed"}})):
        event = E(data.pop("type"), **data)
        printer.event(event, tr.feed(event, now))
    lines = out.getvalue().splitlines()
    assert [line.split(" from ")[0] for line in lines] == [
        "assistant> Hello.", "  [operator's say: completed] reply audio 0.10 s", "user> Ever tried.",
        "assistant> Yes.", "  [turn 1: completed]"]
    assert "first audio  1.200 s | input transcript  1.000 s | response.done  1.500 s" in lines[4]
    assert tr.all_done() and [t.user_item_id for t in tr.turns] == [None, "u1"]


def test_a_say_after_a_turn_that_was_spoken_over_is_not_that_turns_reply() -> None:
    """Beckett's "Fail again." spoken over by "Fail better." before its reply showed, then an operator's MQTT
    `cmd/say`: the say's reply took "Fail again."'s turn, timed from that turn's end of speech long before."""
    tr = TurnTracker(_log(), np.array([1_000, 30_000], np.int64))
    tr.feed(E("input_audio_buffer.committed", item_id="u1"), 1.0)  # "Fail again." ...
    tr.feed(E("input_audio_buffer.speech_started", item_id="u2"), 1.3)  # ... spoken over: its reply never showed
    tr.feed(E("input_audio_buffer.committed", item_id="u2"), 2.0)
    tr.feed(E("response.created", response={"id": "r2"}), 2.1)
    tr.feed(E("response.done", response={"id": "r2", "status": "completed"}), 2.5)
    say = tr.feed(E("response.created", response={"id": "say"}), 30.0)
    assert say is not None and (say.user_item_id, say.end_of_speech) == (None, None)
    assert [t.response_id for t in tr.turns] == [None, "r2", "say"]
