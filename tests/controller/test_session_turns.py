"""A session's turns end to end over the real server and wire, with a scripted pipeline (no models)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import socket
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect as ws_connect

from controller.errors import RemoteProtocolError
from lm_engine.chat import ChatBackendError
from tests.controller.scripted_pipeline import (ScriptedPipeline, conversation, scripted_server, served_log, speech,
                                               user_messages)
from tests.e2e.helpers import open_conversation, silence
from tests.realtime_schema import validate_server_event

NOON = "It is noon. The sun is high. Lunch is soon."


async def test_push_to_talk_reply_hears_the_committed_turn() -> None:
    """turn_detection null: input_audio_buffer.commit then response.create at once (as the browser's push-to-talk
    and the openai SDK example do). The reply must answer what the user said, even while its transcription runs."""
    pipeline = ScriptedPipeline()
    pipeline.asr_seconds = 0.3
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        await conv.stream(np.concatenate([speech(1.0), silence(0.2)]), pace=0)
        await conv.send({"type": "input_audio_buffer.commit"})
        await conv.send({"type": "response.create"})
        await conv.wait_for("response.done", timeout=10)
    assert [user_messages(r) for r in pipeline.requests] == [["what time is it"]]
    for raw in conv.raw:
        validate_server_event(raw)


async def speak_turn(conv, pause_wait: float = 0.3) -> dict:
    """One spoken turn under server_vad: speech, a pause long enough to speculate (and for the speculation to
    build its prompt), then the rest of the end-of-turn silence; returns the reply's response.done."""
    n = len(conv.events)
    await conv.stream(np.concatenate([speech(1.0), silence(0.3)]), pace=0)
    await asyncio.sleep(pause_wait)
    await conv.stream(silence(0.5), pace=0)
    return await conv.wait_for("response.done", after=n, timeout=10)


async def test_a_committed_speculation_follows_the_turn_it_answers() -> None:
    """The speculation builds its prompt before the user's turn is committed; its reply must still land after
    that turn, in the conversation (the next prompt's order) and on the wire (previous_item_id)."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (server, conv):
        for _ in range(3):
            await speak_turn(conv)
        metrics = server.metrics.render().decode()
    assert "stepaudio_speculations_committed_total 3.0" in metrics  # every reply was a committed speculation
    roles = [m["role"] for m in pipeline.requests[2].messages if m["role"] != "system"]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    committed = [e["item_id"] for e in conv.of_type("input_audio_buffer.committed")]
    replies = [e for e in conv.of_type("conversation.item.added") if e["item"]["role"] == "assistant"]
    assert [e["previous_item_id"] for e in replies] == committed


async def test_a_reply_that_reads_the_turn_s_audio_ids_does_not_wait_for_its_transcript() -> None:
    """Step-Audio's Chat LM reads a turn as its <audio_N> ids; Whisper's transcript is only for the history and the
    client. The reply (speculative or not) must start on the ids, its audio before the transcript is done; the
    transcript still completes, in the conversation the next reply reads."""
    pipeline = ScriptedPipeline()
    pipeline.heard_as = "<audio_7><audio_9>"
    pipeline.transcript_lag_seconds = 1.5
    async with conversation(pipeline) as (server, conv):
        for push_to_talk in (False, True):  # a committed speculation, then a reply to input_audio_buffer.commit
            n = len(conv.events)
            if push_to_talk:
                await conv.update_session(audio={"input": {"turn_detection": None}})
                await conv.stream(np.concatenate([speech(1.0), silence(0.2)]), pace=0)
                await conv.send({"type": "input_audio_buffer.commit"})
                await conv.send({"type": "response.create"})
            else:
                await speak_turn(conv)
            first_audio = await conv.wait_for("response.output_audio.delta", after=n, timeout=5)
            done = await conv.wait_for("conversation.item.input_audio_transcription.completed", after=n, timeout=5)
            assert conv.time_of(done) - conv.time_of(first_audio) > 0.5, push_to_talk
            assert done["transcript"] == "what time is it"
        metrics = server.metrics.render().decode()
    assert "stepaudio_speculations_committed_total 1.0" in metrics
    assert [user_messages(r) for r in pipeline.requests] == [
        ["<audio_7><audio_9>"], ["what time is it", "<audio_7><audio_9>"]]
    for raw in conv.raw:
        validate_server_event(raw)


def closed_in_order(events: list[dict], response_id: str) -> list[str]:
    """The response's lifecycle as the client saw it: each *.added paired with its *.done, response.done last."""
    mine = [e for e in events if e.get("response_id") == response_id or e.get("response", {}).get("id") == response_id]
    types = [e["type"] for e in mine]
    assert types[0] == "response.created" and types[-1] == "response.done", types
    for added, done in (("response.output_item.added", "response.output_item.done"),
                        ("response.content_part.added", "response.content_part.done")):
        assert types.count(added) == types.count(done), types
    return types


async def test_a_speculation_whose_lm_fails_fails_visibly_once_and_the_session_goes_on() -> None:
    pipeline = ScriptedPipeline()
    pipeline.fail_after_words = 1
    async with conversation(pipeline) as (_, conv):
        done = await speak_turn(conv)
        pipeline.fail_after_words = None
        n = await conv.ask("and now?")
        again = await conv.wait_for("response.done", after=n, timeout=10)
    assert done["response"]["status"] == "failed"
    assert done["response"]["status_details"]["error"]["message"] == "the LM backend went away"
    closed_in_order(conv.events, done["response"]["id"])
    assert [e["error"]["code"] for e in conv.of_type("error")] == ["response_failed"]
    assert again["response"]["status"] == "completed"
    for raw in conv.raw:
        validate_server_event(raw)


@pytest.mark.parametrize("fail_with", [ChatBackendError, RuntimeError])
async def test_a_chat_backend_failure_is_logged_in_one_line_and_a_bug_with_its_traceback(fail_with, caplog) -> None:
    """The chat server being down fails every reply until it is back: one line each (its message names the server
    and the cause), not a traceback per turn. Any other exception is a bug and keeps its traceback."""
    pipeline = ScriptedPipeline()
    pipeline.fail_after_words, pipeline.fail_with = 0, fail_with
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = await conv.ask("what time is it?")
        done = await conv.wait_for("response.done", after=n, timeout=10)
    assert done["response"]["status"] == "failed"
    failed = [r for r in caplog.records if r.levelno >= logging.ERROR and done["response"]["id"] in r.getMessage()]
    assert len(failed) == 1
    assert (failed[0].exc_info is None) == (fail_with is ChatBackendError)
    assert "the LM backend went away" in failed[0].getMessage() or fail_with is RuntimeError


async def test_a_misspelt_session_field_is_applied_as_nothing_and_named_in_the_servers_log(caplog) -> None:
    """Unknown session fields are ignored (a newer client's must not break it), but not without a word: the log
    names them, and what was spelt right is applied."""
    async with conversation(ScriptedPipeline()) as (_, conv):
        updated = await conv.update_session(instruction="be brief", audio={"output": {"vioce": "x", "speed": 1.2}})
    assert updated["session"]["audio"]["output"]["speed"] == 1.2 and not conv.of_type("error")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "session.update" in
              r.getMessage()]
    assert len(warned) == 1 and "session.instruction, session.audio.output.vioce" in warned[0]


async def test_reply_fields_sent_to_a_transcription_session_are_named_in_the_log(caplog) -> None:
    """A transcription session has no replies: instructions, tools or a voice sent to it are accepted (the API's
    session object allows them) but do nothing, which the log says instead of nothing."""
    async with scripted_server(ScriptedPipeline()) as server:
        conv = await open_conversation(f"ws://127.0.0.1:{server.server.port}/v1/realtime?intent=transcription")
        try:
            await conv.send({"type": "session.update", "session": {
                "type": "transcription", "instructions": "be brief", "tools": [],
                "audio": {"input": {"transcription": {"language": "en"}}}}})
            await conv.wait_for("session.updated", timeout=5)
        finally:
            await conv.close()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "session.update" in
              r.getMessage()]
    assert warned == ["session.update: instructions, tools: not used by a transcription session, which has no "
                      "replies"], warned
    assert not conv.of_type("error")


async def test_a_reply_whose_lm_fails_mid_way_closes_its_items() -> None:
    pipeline = ScriptedPipeline()
    pipeline.reply_words = ["It", "is", "noon", "and", "the", "sun", "is", "high."]
    pipeline.fail_after_words = 5
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = await conv.ask("what time is it?")
        done = await conv.wait_for("response.done", after=n, timeout=10)
    assert done["response"]["status"] == "failed"
    types = closed_in_order(conv.events, done["response"]["id"])
    assert "response.output_audio_transcript.delta" in types  # the failure came mid-reply
    assert done["response"]["output"][0]["status"] == "incomplete"
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_refused_operator_say_is_not_spoken_later_in_place_of_a_reply() -> None:
    """`say` while a reply is in progress is refused to the operator (the client asked for nothing and hears of
    nothing); the next reply must answer the user, not speak it."""
    pipeline = ScriptedPipeline()
    pipeline.word_seconds = 0.1
    async with conversation(pipeline) as (server, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        session_id = conv.events[0]["session"]["id"]
        n = await conv.ask("what time is it?")
        await conv.wait_for("response.created", after=n)
        with pytest.raises(RemoteProtocolError) as refused:
            await server.command(session_id, "say", {"text": "Hello from the operator."})
        await conv.wait_for("response.done", after=n, timeout=10)
        n = await conv.ask("and the date?")
        done = await conv.wait_for("response.done", after=n, timeout=10)
    assert refused.value.code == "conversation_already_has_active_response"
    assert conv.of_type("error") == []
    said = [e["transcript"] for e in conv.of_type("response.output_audio_transcript.done")]
    assert said == ["It is noon.", "It is noon."]
    assert done["response"]["status"] == "completed"


async def test_cancelling_a_reply_that_already_ended_leaves_the_current_one_alone() -> None:
    """response.cancel naming a response that has finished (a stop button pressed just too late) must not cancel
    the reply that is speaking now: an error names the stale id, and the current reply plays to the end."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = await conv.ask("what time is it?")
        first = await conv.wait_for("response.done", after=n, timeout=10)
        pipeline.word_seconds = 0.2
        n = await conv.ask("and the date?")
        await conv.wait_for("response.created", after=n)
        await conv.send({"type": "response.cancel", "event_id": "ev_stop", "response_id": first["response"]["id"]})
        second = await conv.wait_for("response.done", after=n, timeout=10)
    [error] = conv.of_type("error")
    assert (error["error"]["code"], error["error"]["param"], error["error"]["event_id"]) == (
        "response_cancel_not_active", "response_id", "ev_stop")
    assert second["response"]["status"] == "completed"
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_response_create_and_what_follows_it_at_once_concern_a_response_the_client_saw() -> None:
    """response.create answers with response.created before the server handles the next client event: a
    response.cancel sent right behind it gets that response's response.done (cancelled), as the API documents for
    both events (it had got nothing at all: the reply was cancelled before it announced itself), and a second
    response.create right behind it is refused after the response.created of the reply it collides with."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = len(conv.events)
        await conv.send({"type": "response.create"})
        await conv.send({"type": "response.cancel", "event_id": "c1"})
        cancelled = await conv.wait_for("response.done", after=n, timeout=5)
        n = len(conv.events)
        await conv.send({"type": "response.create"})
        await conv.send({"type": "response.create", "event_id": "r2"})
        refused = await conv.wait_for("error", after=n, timeout=5)
        done = await conv.wait_for("response.done", after=n, timeout=10)
    first, second = conv.of_type("response.created")
    assert cancelled["response"]["id"] == first["response"]["id"] and cancelled["response"]["status"] == "cancelled"
    assert conv.events.index(first) < conv.events.index(cancelled)
    assert (refused["error"]["code"], refused["error"]["event_id"]) == ("conversation_already_has_active_response", "r2")
    assert f"in progress: {second['response']['id']}." in refused["error"]["message"]  # which one, as the API says
    assert conv.events.index(second) < conv.events.index(refused)
    assert done["response"]["id"] == second["response"]["id"] and done["response"]["status"] == "completed"
    assert len(conv.of_type("error")) == 1
    for raw in conv.raw:
        validate_server_event(raw)


async def test_cancelling_the_current_reply_by_its_id_cancels_it() -> None:
    pipeline = ScriptedPipeline()
    pipeline.word_seconds = 0.2
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = await conv.ask("what time is it?")
        created = await conv.wait_for("response.created", after=n)
        await conv.send({"type": "response.cancel", "response_id": created["response"]["id"]})
        done = await conv.wait_for("response.done", after=n, timeout=10)
    assert done["response"]["status"] == "cancelled" and not conv.of_type("error")


async def test_an_audio_item_with_a_split_sample_is_refused_with_an_error() -> None:
    """audio/pcm is whole 16-bit samples: three bytes are bad input. The client must hear so (an error naming its
    event), and no half-made item may join the conversation."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.send({"type": "conversation.item.create", "event_id": "ev_item", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "AAAA"}]}})
        error = await conv.wait_for("error", timeout=5)
        n = await conv.ask("what time is it?")
        await conv.wait_for("response.done", after=n, timeout=10)
    assert (error["error"]["code"], error["error"]["event_id"], error["error"]["param"]) == (
        "invalid_audio", "ev_item", "item.content[0].audio")
    assert [e["item"]["content"][0]["type"] for e in conv.of_type("conversation.item.added")
            if e["item"]["role"] == "user"] == ["input_text"]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_appends_that_split_samples_are_one_byte_stream_and_the_log_says_so_once(caplog) -> None:
    """A client forwarding pipe reads sends appends of any byte count: the audio/pcm appends are one byte stream, so
    the turn is heard whole. The first append that ends mid-sample is logged (a stray byte in a client would shift
    all later audio: the log is where that shows); no error, no second warning."""
    pipeline = ScriptedPipeline()
    pcm = (np.concatenate([speech(1.0), silence(0.3)]) * 32767).astype("<i2").tobytes()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        for i in range(0, len(pcm), 4801):
            await conv.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + 4801]).decode()})
        await conv.send({"type": "input_audio_buffer.commit"})
        await conv.send({"type": "response.create"})
        done = await conv.wait_for("response.done", timeout=10)
    assert done["response"]["status"] == "completed" and not conv.of_type("error")
    assert [user_messages(r) for r in pipeline.requests] == [["what time is it"]]
    warned = [r.getMessage() for r in caplog.records if "ends mid-sample" in r.getMessage()]
    assert len(warned) == 1 and "4801 bytes" in warned[0], warned


@pytest.mark.parametrize("asr_error", [None, "the recogniser went away"])
async def test_an_audio_item_sent_whole_is_done_once_with_its_transcript_or_its_failure(asr_error: str | None) -> None:
    """Every conversation.item.added gets one conversation.item.done: an audio item's comes after its transcription
    (it came twice: at once without the transcript, then with it), and still comes when the transcription fails."""
    pipeline = ScriptedPipeline()
    pipeline.asr_error = asr_error
    audio = base64.b64encode((speech(0.5) * 32767).astype("<i2").tobytes()).decode()
    async with conversation(pipeline) as (_, conv):
        await conv.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}})
        done = await conv.wait_for("conversation.item.done", timeout=5)
        await asyncio.sleep(0.2)
    item_id = conv.of_type("conversation.item.added")[0]["item"]["id"]
    assert [e["item"]["id"] for e in conv.of_type("conversation.item.done")] == [item_id]
    transcripts = [c.get("transcript") for c in done["item"]["content"]]
    if asr_error is None:
        assert transcripts == ["what time is it"]
        assert conv.of_type("conversation.item.input_audio_transcription.completed")
    else:
        assert transcripts == [None]
        assert conv.of_type("conversation.item.input_audio_transcription.failed")
    for raw in conv.raw:
        validate_server_event(raw)


async def test_transcripts_complete_in_the_order_the_turns_were_spoken() -> None:
    """The first turn's speech recognition finishes last: its transcription.completed still comes first (the API
    leaves the order open; a client printing transcripts as they complete prints them as spoken)."""
    pipeline = ScriptedPipeline()
    pipeline.turn_scripts = [(0.4, "ever tried"), (0.0, "ever failed"), (0.1, "no matter")]
    pcm = base64.b64encode((speech(0.3) * 32767).astype("<i2").tobytes()).decode()
    async with conversation(pipeline) as (_, conv):
        await conv.send({"type": "session.update", "session": {"type": "realtime",
                                                               "audio": {"input": {"turn_detection": None}}}})
        for _ in range(3):
            await conv.send({"type": "input_audio_buffer.append", "audio": pcm})
            await conv.send({"type": "input_audio_buffer.commit"})
        for _ in range(3):
            await conv.wait_for("conversation.item.input_audio_transcription.completed", timeout=5)
    committed = [e["item_id"] for e in conv.of_type("input_audio_buffer.committed")]
    done = conv.of_type("conversation.item.input_audio_transcription.completed")
    assert [(e["item_id"], e["transcript"]) for e in done] == list(zip(committed, ["ever tried", "ever failed",
                                                                                   "no matter"]))


async def test_a_commit_of_100_ms_is_accepted_and_a_shorter_one_refused_with_its_true_length() -> None:
    """The API's floor is 100 ms of audio; the resampler's filter held ~9 ms back, so exactly 100 ms was refused as
    "91ms". The refusal names what the buffer really holds."""
    def pcm(ms: int) -> str:
        return base64.b64encode((speech(ms / 1000) * 32767).astype("<i2").tobytes()).decode()

    async with conversation(ScriptedPipeline()) as (_, conv):
        await conv.send({"type": "session.update", "session": {"type": "realtime",
                                                               "audio": {"input": {"turn_detection": None}}}})
        await conv.send({"type": "input_audio_buffer.append", "audio": pcm(90)})
        await conv.send({"type": "input_audio_buffer.commit", "event_id": "short"})
        err = await conv.wait_for("error", timeout=5)
        assert (err["error"]["code"], err["error"]["event_id"]) == ("input_audio_buffer_commit_empty", "short")
        assert "buffer only has 90ms" in err["error"]["message"], err
        await conv.send({"type": "input_audio_buffer.clear"})
        await conv.send({"type": "input_audio_buffer.append", "audio": pcm(100)})
        await conv.send({"type": "input_audio_buffer.commit"})
        await conv.wait_for("input_audio_buffer.committed", timeout=5)
    assert len(conv.of_type("error")) == 1


async def test_what_the_user_says_while_a_requested_reply_starts_is_kept() -> None:
    """The client sends response.create (after a text item, as after a tool result) while the user is speaking.
    The reply goes ahead; the user's speech must still end in speech_stopped and a committed, transcribed turn
    that later replies hear."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.stream(speech(0.6), pace=0)
        await conv.wait_for("input_audio_buffer.speech_started")
        n = await conv.ask("the weather tool says: sunny")
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        await conv.wait_for("conversation.item.input_audio_transcription.completed", timeout=10)
        first = await conv.wait_for("response.done", after=n, timeout=10)
        owed = await conv.wait_for("response.done", after=conv.events.index(first) + 1, timeout=10)
    assert len(conv.of_type("input_audio_buffer.speech_stopped")) == 1
    assert len(conv.of_type("input_audio_buffer.committed")) == 1
    assert first["response"]["status"] == "completed"  # the requested reply was not interrupted
    # The turn got its own reply after it, which heard it last.
    assert owed["response"]["status"] == "completed"
    assert user_messages(pipeline.requests[-1])[-1] == "what time is it"
    assert len(conv.of_type("response.created")) == 2
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_response_input_naming_a_missing_item_is_refused_as_bad_input() -> None:
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.send({"type": "response.create", "event_id": "ev_r", "response": {
            "conversation": "none", "input": [{"type": "item_reference", "id": "item_nope"}]}})
        error = await conv.wait_for("error", timeout=5)
        n = await conv.ask("what time is it?")
        done = await conv.wait_for("response.done", after=n, timeout=10)
    assert error["error"] == {**error["error"], "type": "invalid_request_error", "code": "item_not_found",
                              "param": "response.input[0].id", "event_id": "ev_r"}
    assert done["response"]["status"] == "completed" and len(conv.of_type("error")) == 1


async def test_a_session_s_opening_and_its_end_are_logged_with_the_close_code() -> None:
    """An operator finds a session's start and end (and why it ended: a client cut by the keepalive, say) in the log,
    each line naming the session once (the message named it, and the log's session tag again)."""
    pipeline = ScriptedPipeline()
    with served_log() as log:
        async with conversation(pipeline) as (server, conv):
            session_id = conv.of_type("session.created")[0]["session"]["id"]
            await conv.ws.close(1000, "bye")
            deadline = time.monotonic() + 5
            while server.sessions and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
    lines = [line.split(" INFO ", 1)[1] for line in log.getvalue().splitlines() if session_id in line]
    assert lines[0].startswith(f"controller.session {session_id}: session opened (realtime, from ('127.0.0.1', "), lines
    assert re.fullmatch(rf"controller\.session {session_id}: session closed after \d+\.\d s: code 1000 \(bye\)",
                        lines[-1]), lines
    assert all(line.count(session_id) == 1 for line in lines), lines


async def test_an_item_longer_than_the_prompt_budget_is_refused_and_the_conversation_goes_on() -> None:
    """The newest turn is always sent whole: a 25,000-character message (or tool output) used to be accepted, then
    every reply failed with the LM's context overflow. It is refused where it is sent, naming the field."""
    pipeline = ScriptedPipeline()  # 4 characters a token: the 1500-token budget is 6000 characters
    long_text = "word " * 5000
    async with conversation(pipeline) as (_, conv):
        await conv.send({"type": "conversation.item.create", "event_id": "ev_long", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": long_text}]}})
        await conv.send({"type": "conversation.item.create", "event_id": "ev_out", "item": {
            "type": "function_call_output", "call_id": "call_1", "output": long_text}})
        await conv.send({"type": "response.create", "event_id": "ev_inline", "response": {
            "conversation": "none", "input": [{"type": "message", "role": "user",
                                               "content": [{"type": "input_text", "text": long_text}]}]}})
        n = await conv.ask("what time is it?")
        done = await conv.wait_for("response.done", after=n, timeout=10)
    errors = {e["error"]["event_id"]: e["error"] for e in conv.of_type("error")}
    assert {k: (e["code"], e["param"]) for k, e in errors.items()} == {
        "ev_long": ("invalid_value", "item.content"), "ev_out": ("invalid_value", "item.output"),
        "ev_inline": ("invalid_value", "response.input[0].content")}, errors
    assert "1500 tokens" in errors["ev_long"]["message"]
    assert done["response"]["status"] == "completed"
    assert [user_messages(r) for r in pipeline.requests] == [["what time is it?"]]  # nothing refused was kept


async def test_clearing_the_buffer_mid_turn_drops_the_speculation_and_the_next_speech_starts_a_turn() -> None:
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.stream(np.concatenate([speech(1.0), silence(0.3)]), pace=0)  # a pause: a speculation starts
        await asyncio.sleep(0.2)
        await conv.send({"type": "input_audio_buffer.clear"})
        await conv.wait_for("input_audio_buffer.cleared")
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        done = await conv.wait_for("response.done", timeout=10)
    types = [e["type"] for e in conv.events if e["type"].startswith("input_audio_buffer.")]
    assert types == ["input_audio_buffer.speech_started", "input_audio_buffer.cleared",
                     "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                     "input_audio_buffer.committed"]
    assert done["response"]["status"] == "completed"
    assert len(conv.of_type("response.created")) == 1


async def test_cancelling_while_only_a_speculation_runs_is_refused_and_the_speculation_goes_on() -> None:
    """While the user pauses, the reply being prepared is invisible: the client has no response to cancel. As the
    Realtime API documents for response.cancel with none in progress: an error, and the session is unaffected, so
    the speculation still answers the turn when it ends."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (server, conv):
        await conv.stream(np.concatenate([speech(1.0), silence(0.3)]), pace=0)  # a pause: a speculation starts
        await conv.send({"type": "response.cancel", "event_id": "ev_stop"})
        error = await conv.wait_for("error", timeout=5)
        await asyncio.sleep(0.3)
        await conv.stream(silence(0.5), pace=0)
        done = await conv.wait_for("response.done", timeout=10)
        metrics = server.metrics.render().decode()
    assert (error["error"]["code"], error["error"]["event_id"]) == ("response_cancel_not_active", "ev_stop")
    assert done["response"]["status"] == "completed" and len(conv.of_type("response.created")) == 1
    assert "stepaudio_speculations_committed_total 1.0" in metrics
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_user_turn_deleted_while_it_is_transcribed_is_gone_for_the_client_and_the_reply() -> None:
    """The client deletes the user's turn right after input_audio_buffer.committed, while its transcription runs
    (before any response.created). After conversation.item.deleted, nothing more may come about that item (no
    transcript, no conversation.item.done bringing it back), and the reply must not answer it or follow it."""
    pipeline = ScriptedPipeline()
    pipeline.asr_seconds = 0.5
    async with conversation(pipeline) as (_, conv):
        await conv.stream(np.concatenate([speech(1.0), silence(0.8)]), pace=0)
        committed = await conv.wait_for("input_audio_buffer.committed", timeout=5)
        await conv.send({"type": "conversation.item.delete", "item_id": committed["item_id"]})
        deleted = await conv.wait_for("conversation.item.deleted", timeout=5)
        await conv.wait_for("response.done", timeout=10)
        await asyncio.sleep(0.3)  # the transcription has long finished
    after = conv.events[conv.events.index(deleted) + 1:]
    assert [e["type"] for e in after if committed["item_id"] in (e.get("item_id"), e.get("item", {}).get("id"),
                                                                  e.get("previous_item_id"))] == []
    assert [user_messages(r) for r in pipeline.requests] == [[]]
    assert not conv.of_type("error")
    for raw in conv.raw:
        validate_server_event(raw)


@pytest.mark.timeout(60)
async def test_a_client_that_stops_reading_then_drops_ends_its_session() -> None:
    """A client stops reading: the server's socket buffers fill, then the session's output queue. The client sends
    more events and its connection drops. The session must end and free everything, not wait for ever to queue an
    event for a connection that is gone."""
    pipeline = ScriptedPipeline()
    pipeline.count_tokens = lambda text: 1  # type: ignore[method-assign]  # the big items below are within budget
    async with scripted_server(pipeline) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.server.port))
        # max_queue=1: the client reads nothing past the first message.
        ws = await ws_connect(f"ws://127.0.0.1:{server.server.port}/v1/realtime", sock=sock, max_queue=1)
        big = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a" * 1_000_000}]}
        for _ in range(20):  # each item comes back twice (item.added, item.done): 40 MB, more than the buffers hold
            await ws.send(json.dumps({"type": "conversation.item.create", "item": big}))
        for _ in range(300):  # each is answered by an error event: more than the session's output queue holds
            await ws.send(json.dumps({"type": "response.cancel"}))
        await asyncio.sleep(2.0)
        ws.transport.abort()
        deadline = time.monotonic() + 10
        while server.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        live = len(server.sessions)
        metrics = server.metrics.render().decode()
    assert live == 0
    assert "stepaudio_sessions_live 0.0" in metrics


async def test_with_interrupt_response_off_the_user_speaking_over_a_reply_is_a_turn_and_the_reply_goes_on() -> None:
    """turn_detection.interrupt_response false: the Realtime API still emits the VAD events and only leaves the reply
    uncancelled. What the user says over the reply must be a committed, transcribed turn that later replies hear."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                            "twelve."]
    pipeline.word_seconds = 0.05
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "interrupt_response": False}}})
        n = await conv.ask("count to twelve")
        await conv.wait_for("response.output_audio.delta", after=n, timeout=10)
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        transcribed = await conv.wait_for("conversation.item.input_audio_transcription.completed", timeout=10)
        done = await conv.wait_for("response.done", after=n, timeout=10)
        owed = await conv.wait_for("response.done", after=conv.events.index(done) + 1, timeout=10)
    assert done["response"]["status"] == "completed"
    assert [len(conv.of_type(t)) for t in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                                           "input_audio_buffer.committed")] == [1, 1, 1]
    assert transcribed["transcript"] == "what time is it"
    # The question spoken over the reply is answered once that reply has finished, and its reply heard it last.
    assert owed["response"]["status"] == "completed"
    assert user_messages(pipeline.requests[-1])[-1] == "what time is it"
    assert len(conv.of_type("response.created")) == 2
    # On the wire the spoken turn follows the reply it was spoken over, as in the conversation the LM is given
    # (it said the item before the reply, which joins the conversation only when it ends).
    spoken_over = conv.of_type("input_audio_buffer.committed")[0]
    assert spoken_over["previous_item_id"] == done["response"]["output"][0]["id"]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_barge_in_reports_the_speech_before_the_reply_it_cancels(caplog) -> None:
    """server_vad with interrupt_response: the API cancels the reply "when a VAD start event occurs", so the client
    hears of the speech (input_audio_buffer.speech_started, on which it stops its playback) before the reply's
    response.done (cancelled, turn_detected) and conversation.item.truncated; they had come the other way round.
    The server's log has a line for the cancelled reply, as for every other (it had none)."""
    caplog.set_level(logging.INFO)
    pipeline = ScriptedPipeline()
    pipeline.reply_words = NOON.split()
    pipeline.word_seconds = 0.1
    async with conversation(pipeline) as (_, conv):
        n = await conv.ask("what time is it?")
        delta = await conv.wait_for("response.output_audio.delta", after=n, timeout=10)
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        truncated = await conv.wait_for("conversation.item.truncated", after=n, timeout=10)
    started = conv.of_type("input_audio_buffer.speech_started")[0]
    done = conv.of_type("response.done")[0]
    assert done["response"]["id"] == delta["response_id"]
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    assert truncated["item_id"] == delta["item_id"]
    assert conv.events.index(started) < conv.events.index(done) < conv.events.index(truncated)
    assert any(r.getMessage().startswith(f"response {delta['response_id']} cancelled (barge_in, ") for r in
               caplog.records), [r.getMessage() for r in caplog.records]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_client_that_truncates_the_reply_spoken_over_gets_the_answer_to_what_the_user_said() -> None:
    """interrupt_response false and a client that does its own barge-in: the user speaks over the reply, the client
    stops playing it and truncates its message at what it played. The reply stops there (cancelled, no more audio),
    and the question spoken over it is answered next, by a reply that heard only the words played before it."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words = ["one", "two", "three.", "four", "five", "six.", "seven", "eight", "nine."]
    pipeline.word_seconds = 0.1
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "interrupt_response": False}}})
        n = await conv.ask("count to nine")
        delta = await conv.wait_for("response.output_audio.delta", after=n, timeout=10)
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        await conv.wait_for("input_audio_buffer.committed", after=n, timeout=10)
        await conv.send({"type": "conversation.item.truncate", "item_id": delta["item_id"], "content_index": 0,
                         "audio_end_ms": 100})
        truncated = await conv.wait_for("conversation.item.truncated", after=n, timeout=5)
        answer = await conv.wait_for("response.done", after=conv.events.index(truncated), timeout=10)
    assert not conv.of_type("error"), conv.of_type("error")
    cut = conv.of_type("response.done")[0]
    assert cut["response"]["id"] == delta["response_id"] and cut["response"]["status"] == "cancelled"
    assert conv.events.index(cut) < conv.events.index(truncated) < conv.events.index(answer)
    assert not [e for e in conv.events[conv.events.index(cut):] if e.get("response_id") == delta["response_id"]]
    assert answer["response"]["status"] == "completed"
    prompt = [(m["role"], m["content"]) for m in pipeline.requests[-1].messages if m["role"] != "system"]
    assert prompt == [("user", "count to nine"), ("assistant", "one two"), ("user", "what time is it")]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_reply_cancelled_while_its_turn_is_transcribed_ends_with_response_done_cancelled() -> None:
    """Push-to-talk: commit, response.create, and response.cancel while the turn's transcription (which the reply's
    prompt waits for) still runs. The client must see the reply created and then cancelled, not nothing at all."""
    pipeline = ScriptedPipeline()
    pipeline.asr_seconds = 0.5
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        await conv.stream(np.concatenate([speech(1.0), silence(0.2)]), pace=0)
        await conv.send({"type": "input_audio_buffer.commit"})
        await conv.send({"type": "response.create"})
        created = await conv.wait_for("response.created", timeout=0.3)  # before the transcription is done
        await conv.send({"type": "response.cancel", "event_id": "ev_cancel"})
        done = await conv.wait_for("response.done", timeout=5)
    assert done["response"]["id"] == created["response"]["id"] and done["response"]["status"] == "cancelled"
    assert not conv.of_type("error"), conv.of_type("error")
    assert pipeline.requests == []  # cancelled before its prompt was built: the LM never ran
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_turn_detection_update_in_the_silence_after_speech_still_ends_that_turn() -> None:
    """The client retunes server_vad (a longer silence) between the user's last word and the end of their turn.
    The turn must still end, under the new silence, and get its reply (it used to stay open until they spoke again)."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.stream(np.concatenate([speech(0.8), silence(0.15)]), pace=0)
        await conv.wait_for("input_audio_buffer.speech_started")
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "silence_duration_ms": 700}}})
        await conv.stream(silence(1.0), pace=0)
        stopped = await conv.wait_for("input_audio_buffer.speech_stopped", timeout=10)
        await conv.wait_for("response.done", timeout=10)
    assert 750 <= stopped["audio_end_ms"] <= 900
    assert len(conv.of_type("input_audio_buffer.speech_started")) == 1
    assert user_messages(pipeline.requests[-1])[-1] == "what time is it"


async def test_a_commit_while_the_user_speaks_ends_the_turn_there_and_what_follows_is_the_next_turn() -> None:
    pipeline = ScriptedPipeline()
    pipeline.transcript = ""  # replies would need something said: this test is about the turns only
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "create_response": False}}})
        await conv.stream(speech(0.8), pace=0)
        await conv.wait_for("input_audio_buffer.speech_started")
        await conv.send({"type": "input_audio_buffer.commit"})
        first = await conv.wait_for("input_audio_buffer.committed", timeout=5)
        await conv.stream(np.concatenate([speech(0.8), silence(0.8)]), pace=0)
        second = await conv.wait_for("input_audio_buffer.committed", after=conv.events.index(first) + 1, timeout=10)
    started = conv.of_type("input_audio_buffer.speech_started")
    stopped = conv.of_type("input_audio_buffer.speech_stopped")
    assert len(started) == 2 and len(stopped) == 1
    assert started[1]["item_id"] == stopped[0]["item_id"] == second["item_id"] != first["item_id"]
    assert 1500 <= stopped[0]["audio_end_ms"] <= 1700
    assert not conv.of_type("error")


async def test_an_idle_timeout_marks_the_silence_after_the_reply_and_the_assistant_speaks_again() -> None:
    """turn_detection.idle_timeout_ms: after a reply, silence as long as the timeout ends in timeout_triggered, whose
    audio_start_ms..audio_end_ms is that silence (the Realtime API: "the segment of audio after the last model
    response up to the triggering time", about the timeout long), an empty committed turn, and a new reply."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "idle_timeout_ms": 1000}}})
        await conv.stream(silence(2.0), pace=0)  # the user listens for a while first
        n = await conv.ask("hello")
        await conv.wait_for("response.done", after=n, timeout=10)
        streaming = asyncio.create_task(conv.stream(silence(3.0), pace=1.0))
        triggered = await conv.wait_for("input_audio_buffer.timeout_triggered", after=n, timeout=10)
        committed = await conv.wait_for("input_audio_buffer.committed", after=n, timeout=10)
        done = await conv.wait_for("response.done", after=conv.events.index(triggered), timeout=10)
        streaming.cancel()
    assert done["response"]["output"] and len(pipeline.requests) == 2, done  # the assistant speaks again
    assert triggered["audio_start_ms"] >= 1900  # after the reply, not the start of the session's audio
    assert 700 <= triggered["audio_end_ms"] - triggered["audio_start_ms"] <= 1400, triggered
    assert committed["item_id"] == triggered["item_id"]


async def test_a_committed_speculation_cut_at_once_by_new_speech_counts_as_committed_not_rolled_back() -> None:
    """The end of the turn commits the speculation and the user speaks again in the same audio append, before the
    committed reply has sent anything: a barge-in on a committed reply. /metrics must count it as committed only
    (it also counted a rollback, so committed + rolled back exceeded started); a speech resumption during the
    pause, before any commit, is the rollback."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (server, conv):
        await conv.stream(np.concatenate([speech(1.0), silence(0.3)]), pace=0)  # pause: speculation 1
        await asyncio.sleep(0.3)
        await conv.stream(np.concatenate([speech(0.5), silence(0.3)]), pace=0)  # resumed: rolled back; 2 starts
        await asyncio.sleep(0.3)
        await conv.stream(np.concatenate([silence(0.5), speech(1.0)]), pace=0)  # end of turn, then speech again
        await conv.wait_for("input_audio_buffer.speech_started", after=len(conv.events) - 1, timeout=5)
        await asyncio.sleep(0.3)
        metrics = server.metrics.render().decode()
    counts = {k: float(m.group(1)) for k in ("started", "committed", "rolled_back")
              if (m := re.search(rf"^stepaudio_speculations_{k}_total (\S+)$", metrics, re.M))}
    assert counts == {"started": 2.0, "committed": 1.0, "rolled_back": 1.0}
    # The committed turn's reply is a response the client saw: created at the commit, then cancelled by the speech
    # (it got none at all, so the client could not tell a turn answered and cut from one never answered).
    committed = conv.of_type("input_audio_buffer.committed")
    created, done = conv.of_type("response.created"), conv.of_type("response.done")
    assert len(committed) == len(created) == len(done) == 1, [e["type"] for e in conv.events]
    assert conv.events.index(committed[0]) < conv.events.index(created[0])
    assert done[0]["response"]["id"] == created[0]["response"]["id"]
    assert done[0]["response"]["status"] == "cancelled"
    assert done[0]["response"]["status_details"]["reason"] == "turn_detected"
    assert done[0]["response"]["output"] == []
    for raw in conv.raw:
        validate_server_event(raw)


async def test_every_sentence_of_a_reply_is_synthesised_through_that_reply_s_own_text_hook() -> None:
    """A reply's sentences reach the synthesiser through the pipeline's per-reply hook (new_reply_text): with
    Step-Audio's, the (tag) the LM leads a reply with leads each of its sentences (it reached only the first, so
    the rest were read in another manner), and the next reply, without a tag, is read without it. The transcript
    is the text as the LM wrote it."""
    from speech_decoder.step_tts import ReplyTag

    pipeline = ScriptedPipeline()
    pipeline.reply_text = ReplyTag
    pipeline.reply_words = "(高兴1)It is noon. The sun is high, lunch is soon.".split()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = await conv.ask("what time is it?")
        await conv.wait_for("response.done", after=n, timeout=10)
        pipeline.reply_words = "It is noon. The sun is high.".split()
        n = await conv.ask("and now?")
        await conv.wait_for("response.done", after=n, timeout=10)
    assert pipeline.synthesized == ["(高兴1)It is noon.", "(高兴1)The sun is high, lunch is soon.",
                                    "It is noon.", "The sun is high."]
    assert [e["transcript"] for e in conv.of_type("response.output_audio_transcript.done")] == [
        "(高兴1)It is noon. The sun is high, lunch is soon.", "It is noon. The sun is high."]


async def test_silence_between_turns_is_not_kept_and_the_next_turn_still_has_its_padding() -> None:
    """A session whose microphone sends only silence held up to 300 s of it (and, at that limit, copied all of it on
    every append): between turns only the next speech start's prefix padding is ever read back."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (app, conv):
        [session] = app.sessions.values()
        await conv.stream(silence(40.0), pace=0)
        # answered in order, after every append above: a sync point that touches no audio
        await conv.send({"type": "conversation.item.retrieve", "item_id": "sync", "event_id": "sync"})
        await conv.wait_for("error")
        assert session.audio.kept_seconds < 8.0
        await conv.stream(np.concatenate([speech(0.8), silence(0.8)]), pace=0)
        started = await conv.wait_for("input_audio_buffer.speech_started")
        await conv.wait_for("input_audio_buffer.committed", timeout=10)
    # the speech began 40 s in; its start carries the 300 ms of padding before it
    assert 39_500 <= started["audio_start_ms"] <= 40_000, started


async def test_a_minute_of_audio_in_one_append_does_not_hold_the_server_for_its_whole_vad_pass() -> None:
    """One client sends a minute of audio in one input_audio_buffer.append (the API allows 15 MiB events). Its pass
    through the real silero VAD took the event loop for its whole length, every other session's audio and events
    stalled meanwhile; heard a second at a time, the loop is free between. The server runs in this test's loop: a
    ticker measures the longest time it could not run."""
    from vad import SileroModel, SileroVad

    model = SileroModel.load()
    pipeline = ScriptedPipeline()
    pipeline.new_vad = lambda: SileroVad(model)  # type: ignore[method-assign]
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "create_response": False}}})
        gaps: list[float] = []

        async def tick() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.002)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        began = time.monotonic()
        pcm = (np.clip(speech(60.0), -1, 1) * 32767).astype("<i2").tobytes()
        await conv.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
        await conv.send({"type": "input_audio_buffer.clear"})
        await conv.wait_for("input_audio_buffer.cleared", timeout=60)
        took = time.monotonic() - began
        ticker.cancel()
    assert max(gaps) < took / 3, (max(gaps), took)


async def test_a_reply_in_progress_at_shutdown_ends_with_response_done_before_the_1001_close() -> None:
    """Ctrl-C or SIGTERM closed the connection (1001) in the middle of a reply: the client got response.created and
    never its response.done, and waited for the end of a reply that had ended. Now it is told, then the close."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words, pipeline.word_seconds = ("word " * 100).split(), 0.1
    async with scripted_server(pipeline) as server:
        conv = await open_conversation(f"ws://127.0.0.1:{server.server.port}/v1/realtime")
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = await conv.ask("talk for a while")
        await conv.wait_for("response.output_audio.delta", after=n, timeout=10)
    await conv.close()  # the server closed it: this only waits for the client to read what came before
    done = conv.of_type("response.done")
    assert conv.ws.close_code == 1001 and len(done) == 1, [e["type"] for e in conv.events][-8:]
    assert done[0]["response"]["status"] == "cancelled" and conv.events[-1] is done[0]
    validate_server_event(json.dumps(done[0]))
    metrics = server.metrics.render().decode()
    assert 'stepaudio_responses_total{status="cancelled"} 1.0' in metrics, metrics


class _SlowLink:
    """A client connection (the port Session.run uses) whose sends wait while `flowing` is clear, as on a slow
    network, and whose client events are put in `incoming` (None hangs up)."""

    remote_address = ("127.0.0.1", 40000)
    close_code, close_reason = 1000, ""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[dict] = []
        self.flowing = asyncio.Event()
        self.flowing.set()

    async def send(self, data: str) -> None:
        await self.flowing.wait()
        self.sent.append(json.loads(data))

    def __aiter__(self) -> _SlowLink:
        return self

    async def __anext__(self) -> str:
        raw = await self.incoming.get()
        if raw is None:
            raise StopAsyncIteration
        return raw


async def test_the_event_bus_counts_the_reply_audio_the_client_was_sent_not_what_a_barge_in_dropped() -> None:
    """A barge-in drops the reply's audio still queued for a slow client; the bus had counted it when it was queued,
    so response.output_audio.done's audio_bytes on MQTT said more than the client got."""
    from controller.metrics import Metrics
    from controller.mqtt_bus import MqttBus
    from controller.mqtt_protocol import parse_mqtt_url
    from controller.session import Session, SessionDefaults

    async def no_commands(*_: object) -> None:
        raise AssertionError("no commands here")

    pipeline = ScriptedPipeline()
    pipeline.reply_words = ("word " * 200).split()
    bus = MqttBus(parse_mqtt_url("mqtt://b", default_node_id="n"), Metrics(), no_commands)  # never connected
    session = Session(session_id="sess_slow", model="m", pipeline=pipeline, metrics=Metrics(),
                      defaults=SessionDefaults())
    session.observer = bus.session_event
    link = _SlowLink()
    running = asyncio.create_task(session.run(link))  # type: ignore[arg-type]
    await link.incoming.put(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "talk"}]}}))
    await link.incoming.put(json.dumps({"type": "response.create"}))
    for _ in range(300):
        if any(e["type"] == "response.output_audio.delta" for e in link.sent):
            break
        await asyncio.sleep(0.05)
    link.flowing.clear()  # the network stalls: the paced audio queues up
    await asyncio.sleep(1.5)
    pcm = (speech(0.6) * 32767).astype("<i2").tobytes()
    await link.incoming.put(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}))
    for _ in range(300):  # the barge-in is handled (its speech_started queued behind the stalled audio)
        if session.turns.current_gen is None:
            break
        await asyncio.sleep(0.05)
    link.flowing.set()
    for _ in range(300):
        if any(e["type"] == "response.done" for e in link.sent):
            break
        await asyncio.sleep(0.05)
    await link.incoming.put(None)
    await asyncio.wait_for(running, 30)
    done = [e for e in link.sent if e["type"] == "response.done"]
    assert done and done[0]["response"]["status"] == "cancelled", [e["type"] for e in link.sent][-10:]
    sent = sum(len(base64.b64decode(e["delta"])) for e in link.sent if e["type"] == "response.output_audio.delta")
    published = [json.loads(m.payload) for m in bus._buffer if m.topic.endswith("/response.output_audio.done")]
    assert [m["audio_bytes"] for m in published] == [sent], (published, sent)
