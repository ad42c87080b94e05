"""A session's replies end to end over the real server and wire, with a scripted pipeline (no models):
response.create and cancel, LM failures, refused input, the server's log, shutdown and the event bus's count.
The user's turns that start replies are in test_session_turns.py."""

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

from clients import g711
from controller.errors import RemoteProtocolError
from lm_engine.chat import ChatBackendError
from tests.controller.openai_conn import connected, of_type, read_until
from tests.controller.scripted_pipeline import (ScriptedPipeline, conversation, push_to_talk_turn, scripted_server,
                                               served_log, speak_turn, speech, user_messages)
from tests.e2e.helpers import open_conversation, silence
from tests.realtime_schema import validate_server_event

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


async def test_fields_the_api_does_not_have_are_refused_as_unknown_parameters_and_change_nothing() -> None:
    """The API refuses a session.update or response.create holding a field it does not have ("Unknown parameter:
    'session.tools[0].meta'.", code unknown_parameter, the field as param); the update or reply does not happen. This
    server took them as nothing, the rest applied: a misspelt "instruction" or "max_output_token" gave the default
    persona or reply length, with no word to the client; a session field sent in a response (model, tracing,
    turn_detection, audio.input) or a response's in a session (metadata) likewise, and a misspelt key of an event
    itself ("previous_itemid": "root" added the item at the end). Each is now refused, naming the field, and the
    session goes on with its settings and conversation as they were."""
    refused = [
        ("s1", {"type": "session.update", "session": {"type": "realtime", "instruction": "be brief"}},
         "session.instruction"),
        ("s2", {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"vioce": "x",
                                                                                            "speed": 1.2}}}},
         "session.audio.output.vioce"),
        ("s3", {"type": "session.update", "session": {"type": "realtime", "metadata": {"k": "v"}}}, "session.metadata"),
        ("s4", {"type": "session.update", "session": {"type": "realtime", "tools": [
            {"type": "function", "name": "get_time", "meta": {}}]}}, "session.tools[0].meta"),
        ("r1", {"type": "response.create", "response": {"max_output_token": 5}}, "response.max_output_token"),
        ("r2", {"type": "response.create", "response": {"model": "gpt-realtime-mini"}}, "response.model"),
        ("r3", {"type": "response.create", "response": {"audio": {"input": {"transcription": None}}}},
         "response.audio.input"),
        ("e1", {"type": "conversation.item.create", "previous_itemid": "root", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "first"}]}},
         "previous_itemid"),
        ("e2", {"type": "response.cancel", "response": "resp_1"}, "response"),
    ]
    async with connected(ScriptedPipeline()) as conn:
        for event_id, event, _ in refused:
            await conn.send({**event, "event_id": event_id})
        events = []
        while len(of_type(events, "error")) < len(refused):
            events += await read_until(conn, "error")
        await conn.session.update(session={"type": "realtime", "instructions": "be brief"})
        events += await read_until(conn, "session.updated")
    assert [(e["error"]["type"], e["error"]["code"], e["error"]["param"], e["error"]["event_id"], e["error"]["message"])
            for e in of_type(events, "error")] == [
        ("invalid_request_error", "unknown_parameter", param, event_id, f"Unknown parameter: '{param}'.")
        for event_id, _, param in refused]
    assert [e["type"] for e in events if e["type"] != "error"] == ["session.updated"]
    session = events[-1]["session"]
    assert (session["instructions"], session["audio"]["output"]["speed"], session["tools"]) == ("be brief", 1.0, [])


async def test_reasoning_fields_of_a_response_are_named_in_the_log_as_those_of_a_session_are(caplog) -> None:
    """response.create's reasoning and parallel_tool_calls (GA, for the API's reasoning models) were accepted with no
    word anywhere, where the same fields in session.update are named in the log as not taken."""
    async with conversation(ScriptedPipeline()) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = len(conv.events)
        await conv.send({"type": "response.create", "response": {"reasoning": {"effort": "low"},
                                                                  "parallel_tool_calls": False}})
        done = await conv.wait_for("response.done", after=n, timeout=10)
    assert done["response"]["status"] == "completed" and not conv.of_type("error")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [f"response.create: response.{key}: for the API's reasoning models; this server's chat LM does "
                      "not take it" for key in ("parallel_tool_calls", "reasoning")], warned


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
    assert (refused["error"]["code"], refused["error"]["event_id"]) == (
        "conversation_already_has_active_response", "r2")
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


async def test_a_response_input_giving_an_item_id_twice_is_refused_as_bad_input() -> None:
    """response.input mixes new items and item_references; one id given twice (the same reference repeated, or a new
    item under a referenced item's id) is the client's mistake: an invalid_request_error naming the entry, with the
    client's event_id, and no response. It had started the response and failed it as a server_error ("item 'u1'
    already exists"), with a traceback in the server's log. A mix with distinct ids is answered from those items."""
    pipeline = ScriptedPipeline()
    u1 = {"type": "message", "role": "user", "id": "u1", "content": [{"type": "input_text", "text": "it is noon"}]}
    async with conversation(pipeline) as (_, conv):
        await conv.send({"type": "conversation.item.create", "item": u1})
        await conv.wait_for("conversation.item.done", timeout=5)
        n = len(conv.events)
        for event_id, second in (("twice", {"type": "item_reference", "id": "u1"}),
                                 ("clash", {**u1, "content": [{"type": "input_text", "text": "shadowed"}]})):
            await conv.send({"type": "response.create", "event_id": event_id, "response": {
                "conversation": "none", "input": [{"type": "item_reference", "id": "u1"}, second]}})
        await conv.send({"type": "response.create", "response": {"conversation": "none", "metadata": {"k": "mix"},
                                                                  "input": [{"type": "item_reference", "id": "u1"},
                                                                            {**u1, "id": "u2"}]}})
        done = await conv.wait_for("response.done", after=n, timeout=10)
    errors = [(e["error"]["type"], e["error"]["code"], e["error"]["param"], e["error"]["event_id"])
              for e in conv.of_type("error")]
    assert errors == [("invalid_request_error", "invalid_value", "response.input[1].id", "twice"),
                      ("invalid_request_error", "invalid_value", "response.input[1].id", "clash")]
    assert [c["response"]["metadata"] for c in conv.of_type("response.created")] == [{"k": "mix"}]
    assert (done["response"]["status"], done["response"]["metadata"]) == ("completed", {"k": "mix"})
    assert [user_messages(r) for r in pipeline.requests] == [["it is noon", "it is noon"]]
    for raw in conv.raw:
        validate_server_event(raw)


@pytest.mark.parametrize("response", [{}, {"input": []}, {"conversation": "none"}])
async def test_a_reply_with_an_empty_prompt_is_an_empty_reply_not_a_server_failure(response: dict) -> None:
    """A session with no instructions asked for a reply before anything was said (or given response.input []): the
    prompt holds no message for the LM. The reply failed as a server_error ("messages must not be empty") with a
    traceback in the log; it is answered as a turn that held no words is, an empty completed reply."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(instructions="")
        await conv.send({"type": "response.create", "event_id": "empty", "response": response})
        done = await conv.wait_for("response.done", timeout=10)
        await conv.ask("Hello?")
        second = await conv.wait_for("response.done", after=conv.events.index(done) + 1, timeout=10)
    assert done["response"]["status"] == "completed" and done["response"]["output"] == [], done
    assert second["response"]["status"] == "completed"
    assert not conv.of_type("error")
    assert [user_messages(r) for r in pipeline.requests] == [["Hello?"]]
    closed_in_order(conv.events, done["response"]["id"])


async def test_a_function_call_output_in_response_input_without_its_call_is_refused_not_dropped() -> None:
    """response.input is the reply's whole prompt: a function_call_output there whose function_call is not before it
    (only in the conversation) was left out of the prompt without a word, and the model answered without the tool's
    result. It is refused, naming the entry's call_id; with the call referenced first the output reaches the model."""
    pipeline = ScriptedPipeline()
    output = {"type": "function_call_output", "call_id": "c1", "output": "{\"time\": \"noon\"}"}
    async with conversation(pipeline) as (_, conv):
        await conv.send({"type": "conversation.item.create", "item": {
            "type": "function_call", "id": "fc1", "call_id": "c1", "name": "get_time", "arguments": "{}"}})
        await conv.wait_for("conversation.item.done", timeout=5)
        n = len(conv.events)
        await conv.send({"type": "response.create", "event_id": "orphan", "response": {
            "conversation": "none", "output_modalities": ["text"], "input": [output]}})
        await conv.send({"type": "response.create", "response": {
            "conversation": "none", "output_modalities": ["text"],
            "input": [{"type": "item_reference", "id": "fc1"}, output]}})
        done = await conv.wait_for("response.done", after=n, timeout=10)
    errors = [(e["error"]["code"], e["error"]["param"], e["error"]["event_id"]) for e in conv.of_type("error")]
    assert errors == [("invalid_tool_call_id", "response.input[0].call_id", "orphan")]
    assert done["response"]["status"] == "completed" and len(conv.of_type("response.created")) == 1
    [request] = pipeline.requests
    assert [m for m in request.messages if m["role"] == "tool"] == [
        {"role": "tool", "tool_call_id": "c1", "content": output["output"]}]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_an_item_a_response_input_names_may_be_deleted_while_the_prompt_waits_for_a_transcription() -> None:
    """response.create's input is checked when it comes, but the prompt is built once the transcriptions still
    running are done: deleting a referenced item in between made the reply fail (server_error "no item with id",
    and a traceback in the server's log). The reply now goes on without the deleted item."""
    pipeline = ScriptedPipeline()
    pipeline.asr_seconds = 1.5  # the delete is handled well within it, even on a loaded machine
    audio = base64.b64encode((speech(0.5) * 32767).astype("<i2").tobytes()).decode()
    async with conversation(pipeline) as (_, conv):
        for item_id, text in (("kept", "it is noon"), ("gone", "forget this")):
            await conv.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "id": item_id, "content": [{"type": "input_text", "text": text}]}})
        await conv.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}})
        await conv.send({"type": "response.create", "response": {"conversation": "none", "input": [
            {"type": "item_reference", "id": "kept"}, {"type": "item_reference", "id": "gone"}]}})
        await conv.send({"type": "conversation.item.delete", "item_id": "gone"})
        done = await conv.wait_for("response.done", timeout=10)
    assert done["response"]["status"] == "completed" and not conv.of_type("error")
    assert [user_messages(r) for r in pipeline.requests] == [["it is noon"]]


async def test_response_input_audio_is_heard_in_the_format_it_was_sent_in() -> None:
    """response.input's audio is decoded when response.create comes, in the session's input format then, and that
    audio is what the prompt hears. It was decoded again when the prompt was built, after the transcriptions still
    running, in the format of then: a session.update to audio/pcm in between made the reply to audio sent (and
    accepted) as audio/pcmu fail (response_failed, "audio/pcm data must be whole 16-bit little-endian samples")."""
    pipeline = ScriptedPipeline()
    pipeline.asr_seconds = 1.0  # the session.update is handled well within it, even on a loaded machine
    pipeline.transcript = "is it noon"
    pcm = base64.b64encode((speech(0.5) * 32767).astype("<i2").tobytes()).decode()
    ulaw = base64.b64encode(g711.ulaw_encode((speech(0.3)[::3][:2399] * 32767).astype("<i2"))).decode()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}})
        await conv.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": pcm[:4]}]}})
        await conv.send({"type": "response.create", "response": {"conversation": "none", "input": [{
            "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": ulaw}]}]}})
        await conv.send({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}}})
        done = await conv.wait_for("response.done", timeout=10)
    assert done["response"]["status"] == "completed" and not conv.of_type("error")
    assert [user_messages(r) for r in pipeline.requests] == [["is it noon"]]
    for raw in conv.raw:
        validate_server_event(raw)


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


async def test_a_speculation_dropped_by_a_client_leaving_mid_pause_counts_as_rolled_back() -> None:
    """Every speculation started ends committed or rolled back in /metrics (the commit rate's two sides): one
    whose client hung up during the pause had counted as neither."""
    pipeline = ScriptedPipeline()
    async with scripted_server(pipeline) as server:
        conv = await open_conversation(f"ws://127.0.0.1:{server.server.port}/v1/realtime")
        await conv.stream(np.concatenate([speech(1.0), silence(0.3)]), pace=0)  # a pause: a speculation starts
        deadline = time.monotonic() + 10
        while "stepaudio_speculations_started_total 1.0" not in server.metrics.render().decode():
            assert time.monotonic() < deadline, "no speculation started"
            await asyncio.sleep(0.05)
        await conv.close()
        while server.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        metrics = server.metrics.render().decode()
    assert "stepaudio_speculations_committed_total 0.0" in metrics
    assert "stepaudio_speculations_rolled_back_total 1.0" in metrics, metrics


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


async def test_a_reply_cancelled_while_its_turn_is_transcribed_ends_with_response_done_cancelled() -> None:
    """Push-to-talk: commit, response.create, and response.cancel while the turn's transcription (which the reply's
    prompt waits for) still runs. The client must see the reply created and then cancelled, not nothing at all."""
    pipeline = ScriptedPipeline()
    pipeline.asr_seconds = 0.5
    async with conversation(pipeline) as (_, conv):
        await push_to_talk_turn(conv)
        created = await conv.wait_for("response.created", timeout=0.3)  # before the transcription is done
        await conv.send({"type": "response.cancel", "event_id": "ev_cancel"})
        done = await conv.wait_for("response.done", timeout=5)
    assert done["response"]["id"] == created["response"]["id"] and done["response"]["status"] == "cancelled"
    assert not conv.of_type("error"), conv.of_type("error")
    assert pipeline.requests == []  # cancelled before its prompt was built: the LM never ran
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
    from controller.session import Session
    from controller.session_defaults import SessionDefaults

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


class _CancelOnDone:
    """An event sink (the App's event-bus port) that, as the session opens, has the session handle a
    response.cancel the moment the reply's response.done is queued for the client: a client's stop button pressed as
    the reply ends, handled before the reply's task resumes to take the reply off the session's list (the protocol
    fuzzer's window). Hooked at the session's emit, not at the bus, which sees an event only once the outbox writer
    has sent it: under load the reply's task had left the list by then (state 'idle'), and the window was missed."""

    def __init__(self, server) -> None:
        self.server = server
        self.state_then: str | None = None

    def session_opened(self, session_id: str) -> None:
        session = self.server.sessions[session_id]
        emit = session.emit

        async def emit_then_cancel(event: dict, gen_id: int | None = None) -> None:
            await emit(event, gen_id)
            if event["type"] != "response.done" or self.state_then is not None:
                return
            self.state_then = session.turns.state.value
            # The cancel's handling never waits (an error put on a queue with room), so it completes in this one
            # step, as the reader's would in the same turn of the event loop.
            handling = session.receive(json.dumps({"type": "response.cancel", "event_id": "ev_late"}))
            with pytest.raises(StopIteration):
                handling.send(None)

        session.emit = emit_then_cancel

    def session_event(self, session_id: str, event: dict) -> None:
        pass

    def session_closed(self, session_id: str) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_a_cancel_just_after_a_reply_ended_is_answered_with_an_error() -> None:
    """response.cancel without a response_id, handled once a reply's response.done was on its way (queued, or the
    put still waiting on a full outbox) but before its task took the reply off the session's list, got no answer at
    all (the client waits on a response.done or an error); in the put's wait it cancelled the reply's task mid-put, and
    the response.done itself was lost. As the API: the response is over, nothing is active,
    response_cancel_not_active with the event's id, after the reply's one response.done (completed)."""
    pipeline = ScriptedPipeline()
    async with scripted_server(pipeline) as server:
        sink = _CancelOnDone(server)
        server.sinks.append(sink)
        conv = await open_conversation(f"ws://127.0.0.1:{server.server.port}/v1/realtime")
        try:
            done = await speak_turn(conv)
            error = await conv.wait_for("error", timeout=5)
            await asyncio.sleep(0.2)
        finally:
            await conv.close()
    assert sink.state_then in ("responding", "speaking")  # the window: the session still held the reply
    assert (error["error"]["code"], error["error"]["event_id"]) == ("response_cancel_not_active", "ev_late")
    assert done["response"]["status"] == "completed"
    assert len(conv.of_type("response.done")) == 1
    for raw in conv.raw:
        validate_server_event(raw)


async def test_every_response_done_has_usage_counted_by_the_server_when_the_lm_reported_none() -> None:
    """The scripted LM, as a reply cancelled before its end or a --chat-url server that sends no counts, reports no
    token counts: response.done's usage was null, and a client reading usage.input_tokens with no None check (pipecat)
    crashed on each such reply. The server counts them itself: the prompt as its budget counts it (ChatML's 3 tokens
    of reply opening, 5 of markers a message, the scripted tokenizer's len // 4 a text), the reply's text."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(instructions="Be brief.", audio={"input": {"turn_detection": None}})
        n = await conv.ask("what time is it?")
        completed = await conv.wait_for("response.done", after=n, timeout=10)
        pipeline.word_seconds = 0.3
        n = len(conv.events)
        await conv.send({"type": "response.create"})
        await conv.wait_for("response.created", after=n, timeout=10)
        await asyncio.sleep(0.45)  # the LM has made its first word of three
        await conv.send({"type": "response.cancel"})
        cancelled = await conv.wait_for("response.done", after=n, timeout=10)
    prompt = 3 + (5 + len("Be brief.") // 4) + (5 + len("what time is it?") // 4)
    assert completed["response"]["usage"] == {
        "total_tokens": prompt + 2, "input_tokens": prompt, "output_tokens": 2,
        "input_token_details": {"text_tokens": prompt, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": len("It is noon.") // 4, "audio_tokens": 0}}
    usage = cancelled["response"]["usage"]
    assert cancelled["response"]["status"] == "cancelled"
    # The second prompt holds the first reply too, as the conversation keeps it.
    assert usage["input_tokens"] == prompt + 5 + len("It is noon.") // 4, usage
    assert usage["output_tokens"] == usage["output_token_details"]["text_tokens"] >= 1, usage
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_reply_cancelled_before_its_prompt_reached_the_lm_counts_no_tokens() -> None:
    """Push-to-talk's response.create, cancelled while its prompt waits for the turn's transcript: the chat LM never
    got a request, so the usage (what our models consumed; the API's corresponds to billing) is all zeros, input
    included, and says so in the same shape as every other response.done's."""
    pipeline = ScriptedPipeline()
    pipeline.asr_seconds = 1.0
    async with conversation(pipeline) as (_, conv):
        await push_to_talk_turn(conv)
        await conv.wait_for("response.created", timeout=5)
        await conv.send({"type": "response.cancel"})
        cancelled = await conv.wait_for("response.done", timeout=5)
        await conv.wait_for("conversation.item.input_audio_transcription.completed", timeout=5)
    assert cancelled["response"]["status"] == "cancelled"
    assert cancelled["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert cancelled["response"]["usage"] == {
        "total_tokens": 0, "input_tokens": 0, "output_tokens": 0,
        "input_token_details": {"text_tokens": 0, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 0, "audio_tokens": 0}}
    assert pipeline.requests == []
    for raw in conv.raw:
        validate_server_event(raw)
