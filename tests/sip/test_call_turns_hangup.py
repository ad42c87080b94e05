"""The caller hangs up or talks while the agent speaks: the call log keeps what the caller heard of that reply,
marked cut (after a hang-up its response.output_audio_transcript.done never comes, since the bridge closes the
session; after a barge-in it comes with every word of the reply). Pure: AgentTurns
fed the agent's events, the outbound stream ticked as the 20 ms clock would."""

from __future__ import annotations

import base64
import logging
import random

from clients import events as ev
from clients.sip.call_record import CallRecord
from clients.sip.call_turns import AgentTurns
from clients.sip.rtp import OutboundStream

FIRST = "Our opening hours are nine to five on weekdays."
SECOND = "On Saturdays we open at ten."


def _turns() -> tuple[AgentTurns, CallRecord]:
    record = CallRecord("call1", "c1", "sip:a@127.0.0.1", "PCMU")
    return AgentTurns(OutboundStream(0, 0xFF, random.Random(0)), record, logging.LoggerAdapter(logging.getLogger())), \
        record


def _event(kind: str, **data: object) -> ev.ServerEvent:
    return ev.ServerEvent(kind, {"type": kind, "response_id": "resp_1", **data})


def _speak(turns: AgentTurns, text: str, seconds: float, *, first: bool) -> None:
    """One sentence of the reply: its transcript delta, then its audio (G.711: 8000 bytes a second)."""
    turns.on_event(_event("response.output_audio_transcript.delta", delta=text if first else " " + text))
    audio = base64.b64encode(b"\x55" * int(8000 * seconds)).decode()
    turns.on_event(_event("response.output_audio.delta", delta=audio))


def test_a_reply_cut_by_the_callers_hangup_is_logged_as_far_as_it_was_heard() -> None:
    turns, record = _turns()
    turns.on_event(ev.ServerEvent("response.created", {"type": "response.created", "response": {"id": "resp_1"}}))
    _speak(turns, FIRST, 4.0, first=True)
    _speak(turns, SECOND, 2.0, first=False)
    for _ in range(100):  # 2 s of the reply's 6 s went out before the BYE
        turns.outbound.tick()
    turns.call_ended()
    assert record.agent_transcripts == ["Our opening hours are [cut]"]  # half its first sentence, whole words


def test_a_reply_heard_to_its_end_is_logged_once_and_uncut() -> None:
    turns, record = _turns()
    turns.on_event(ev.ServerEvent("response.created", {"type": "response.created", "response": {"id": "resp_1"}}))
    _speak(turns, FIRST, 1.0, first=True)
    turns.on_event(_event("response.output_audio_transcript.done", transcript=FIRST))
    for _ in range(50):
        turns.outbound.tick()
    turns.call_ended()
    assert record.agent_transcripts == [FIRST]


def test_a_reply_the_caller_heard_nothing_of_leaves_no_words() -> None:
    turns, record = _turns()
    turns.on_event(ev.ServerEvent("response.created", {"type": "response.created", "response": {"id": "resp_1"}}))
    _speak(turns, FIRST, 1.0, first=True)
    turns.call_ended()  # the BYE came before its first packet went out
    assert record.agent_transcripts == []


def test_a_reply_talked_over_is_logged_as_far_as_it_was_heard_not_as_its_transcript_says() -> None:
    """The caller barges in 2 s into a 6 s reply: the server's transcript.done still carries all its words, but the
    call log keeps only what the caller heard, marked cut, once (not again at the end of the call)."""
    turns, record = _turns()
    turns.on_event(ev.ServerEvent("response.created", {"type": "response.created", "response": {"id": "resp_1"}}))
    _speak(turns, FIRST, 4.0, first=True)
    _speak(turns, SECOND, 2.0, first=False)
    for _ in range(100):
        turns.outbound.tick()
    turns.on_event(ev.ServerEvent("input_audio_buffer.speech_started", {"type": "input_audio_buffer.speech_started"}))
    _speak(turns, "And on Sundays.", 1.0, first=False)  # what was still on its way is not heard either
    turns.on_event(_event("response.output_audio_transcript.done", transcript=f"{FIRST} {SECOND}"))
    turns.call_ended()
    assert record.agent_transcripts == ["Our opening hours are [cut]"] and record.barge_ins == 1


def test_a_reply_whose_words_all_came_before_its_audio_played_is_cut_back_to_what_was_heard() -> None:
    """A server that synthesizes faster than real time sends a reply's transcript.done long before its audio has
    played (here at once: 6 s of audio queued). The caller hangs up, or talks over it, 2 s in: the words logged
    whole are cut back to what the caller heard."""
    for barge_in in (False, True):
        turns, record = _turns()
        turns.on_event(ev.ServerEvent("response.created", {"type": "response.created", "response": {"id": "resp_1"}}))
        _speak(turns, FIRST, 4.0, first=True)
        _speak(turns, SECOND, 2.0, first=False)
        turns.on_event(_event("response.output_audio_transcript.done", transcript=f"{FIRST} {SECOND}"))
        assert record.agent_transcripts == [f"{FIRST} {SECOND}"]
        for _ in range(100):
            turns.outbound.tick()
        if barge_in:
            turns.on_event(ev.ServerEvent("input_audio_buffer.speech_started",
                                          {"type": "input_audio_buffer.speech_started"}))
        turns.call_ended()
        assert record.agent_transcripts == ["Our opening hours are [cut]"], barge_in
