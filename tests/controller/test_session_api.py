"""What an openai SDK user sees of the Realtime API's less travelled fields, over the real server and wire with a
scripted pipeline (no models): the response object's echo, item edits' errors, retrieved items, refused fields."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import pytest

from tests.controller.scripted_pipeline import (ScriptedPipeline, conversation, push_to_talk_turn, scripted_server,
                                               speech)
from tests.e2e.helpers import Conversation, open_conversation, silence
from tests.realtime_schema import validate_server_event

NOON = "It is noon. The sun is high. Lunch is soon."


@asynccontextmanager
async def speaking(reply: str, word_seconds: float, pipeline: ScriptedPipeline | None = None
                   ) -> AsyncIterator[tuple[Conversation, int, dict]]:
    """A push-to-talk conversation whose reply (`reply`, one word every `word_seconds`) is being spoken: yields the
    client, the event count before the question, and the reply's first audio delta."""
    pipeline = pipeline or ScriptedPipeline()
    pipeline.reply_words = reply.split()
    pipeline.word_seconds = word_seconds
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = await conv.ask("what time is it?")
        yield conv, n, await conv.wait_for("response.output_audio.delta", after=n, timeout=10)


async def test_the_response_object_echoes_metadata_max_output_tokens_and_its_conversation() -> None:
    """response.created and response.done carry the response.create's metadata (the documented way to tell an
    out-of-band reply's events apart), the max_output_tokens the reply runs under, and conversation_id: the
    conversation's id when the reply joins it, null when it is out of band."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}}, max_output_tokens=50)
        n = len(conv.events)
        await conv.send({"type": "response.create", "response": {"metadata": {"topic": "time"}}})
        joined = await conv.wait_for("response.done", after=n, timeout=10)
        n = len(conv.events)
        await conv.send({"type": "response.create", "response": {
            "conversation": "none", "metadata": {"purpose": "classify"}, "max_output_tokens": 20}})
        oob = await conv.wait_for("response.done", after=n, timeout=10)
    created = conv.of_type("response.created")
    assert [c["response"]["metadata"] for c in created] == [{"topic": "time"}, {"purpose": "classify"}]
    assert joined["response"]["metadata"] == {"topic": "time"}
    assert oob["response"]["metadata"] == {"purpose": "classify"}
    assert [c["response"]["max_output_tokens"] for c in created] == [50, 20]
    assert joined["response"]["max_output_tokens"] == 50
    conversation_id = joined["response"]["conversation_id"]
    assert conversation_id is not None and conversation_id.startswith("conv_")
    assert created[0]["response"]["conversation_id"] == conversation_id
    assert oob["response"]["conversation_id"] is None and created[1]["response"]["conversation_id"] is None
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_max_output_tokens_above_the_servers_cap_is_shown_as_the_cap_the_reply_runs_under() -> None:
    """This server stops an explicit max_output_tokens at four times its default reply length (1024 tokens): a client
    asking for 2000 had the reply cut there, ending incomplete for max_output_tokens, while the response object said
    2000 (the API's field is the limit "used in this response"). It now says 1024, the limit the LM was given."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = len(conv.events)
        await conv.send({"type": "response.create", "response": {"max_output_tokens": 2000}})
        done = await conv.wait_for("response.done", after=n, timeout=10)
    created = conv.of_type("response.created")[-1]
    assert pipeline.requests[-1].max_tokens == 1024
    assert created["response"]["max_output_tokens"] == done["response"]["max_output_tokens"] == 1024
    for raw in conv.raw:
        validate_server_event(raw)


async def test_max_output_tokens_inf_gives_the_longest_reply_the_server_allows() -> None:
    """"inf" is the API's "maximum available tokens", but a session or response asking for it got the server's
    default reply length (256 tokens), four times shorter than an explicit 1024: after the session config's merge
    "inf" could not be told from no limit at all. "inf" now gets the server's cap; no limit (shown null) and null
    sent back get the default; session.updated keeps "inf" and the response object shows the limit used."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        unset = await conv.update_session(audio={"input": {"turn_detection": None}})
        for session, response, limit in (({}, {}, 256), ({}, {"max_output_tokens": "inf"}, 1024),
                                         ({"max_output_tokens": "inf"}, {}, 1024),
                                         ({"max_output_tokens": None}, {}, 256)):
            if session:
                updated = await conv.update_session(**session)
                assert updated["session"]["max_output_tokens"] == session["max_output_tokens"]
            n = len(conv.events)
            await conv.send({"type": "response.create", "response": response})
            done = await conv.wait_for("response.done", after=n, timeout=10)
            created = conv.of_type("response.created")[-1]
            assert (pipeline.requests[-1].max_tokens, created["response"]["max_output_tokens"],
                    done["response"]["max_output_tokens"]) == (limit, limit, limit), (session, response)
    assert conv.of_type("session.created")[0]["session"]["max_output_tokens"] is None
    assert unset["session"]["max_output_tokens"] is None
    for raw in conv.raw:
        validate_server_event(raw)


def _text_item(item_id: str | None = None, role: str = "user", text: str = "hi") -> dict:
    item: dict = {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}
    return item if item_id is None else {**item, "id": item_id}


async def test_refused_item_edits_name_the_field_at_fault() -> None:
    """conversation.item.create after a missing previous_item_id, or under an id already taken, and a truncate of an
    item that is no assistant audio: each error names the client's event and the field to fix, and the
    conversation is left as it was."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.send({"type": "conversation.item.create", "item": _text_item("u1")})
        await conv.wait_for("conversation.item.done")
        n = len(conv.events)
        await conv.send({"type": "conversation.item.create", "event_id": "c_prev", "previous_item_id": "nope",
                         "item": _text_item("u2")})
        await conv.send({"type": "conversation.item.create", "event_id": "c_dup", "item": _text_item("u1", text="x")})
        await conv.send({"type": "conversation.item.truncate", "event_id": "t_user", "item_id": "u1",
                         "content_index": 0, "audio_end_ms": 0})
        await conv.send({"type": "conversation.item.retrieve", "item_id": "u1"})
        retrieved = await conv.wait_for("conversation.item.retrieved", after=n)
    errors = [(e["error"]["code"], e["error"]["param"], e["error"]["event_id"]) for e in conv.of_type("error")]
    assert errors == [("item_not_found", "previous_item_id", "c_prev"), ("invalid_value", "item.id", "c_dup"),
                      ("invalid_value", "item_id", "t_user")]
    assert not [e for e in conv.events[n:] if e["type"] == "conversation.item.added"]
    assert retrieved["item"]["content"] == [{"type": "input_text", "text": "hi"}]


async def test_a_retrieved_item_has_the_content_types_it_was_made_with() -> None:
    """conversation.item.retrieved shows a spoken turn as input_audio with its transcript, a text reply as
    output_text and a spoken reply as output_audio, as their conversation.item.done did."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        await conv.stream(np.concatenate([speech(1.0), silence(0.2)]), pace=0)
        await conv.send({"type": "input_audio_buffer.commit"})
        n = len(conv.events)
        await conv.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await conv.wait_for("response.done", after=n, timeout=10)
        n = len(conv.events)
        await conv.send({"type": "response.create"})
        await conv.wait_for("response.done", after=n, timeout=10)
        done = {e["item"]["id"]: e["item"] for e in conv.of_type("conversation.item.done")}
        for item_id in done:
            await conv.send({"type": "conversation.item.retrieve", "item_id": item_id})
        for item_id in done:
            await conv.wait_for("conversation.item.retrieved", where={"item.id": item_id})
    retrieved = {e["item"]["id"]: e["item"] for e in conv.of_type("conversation.item.retrieved")}
    assert [[p["type"] for p in item["content"]] for item in retrieved.values()] == [
        ["input_audio"], ["output_text"], ["output_audio"]]
    assert retrieved == done
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_response_may_not_change_the_voice_once_assistant_audio_was_sent() -> None:
    """The voice rule holds for response.create's audio.output.voice as for session.update's: after the first
    assistant audio a reply in another voice is refused, with the client's event id, and no reply starts."""
    pipeline = ScriptedPipeline()
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = await conv.ask("what time is it?")
        await conv.wait_for("response.done", after=n, timeout=10)
        n = len(conv.events)
        await conv.send({"type": "response.create", "event_id": "r_voice",
                         "response": {"audio": {"output": {"voice": "cedar"}}}})
        error = await conv.wait_for("error", after=n, timeout=5)
        await conv.send({"type": "response.create", "response": {"audio": {"output": {"voice": "joe"}}}})
        done = await conv.wait_for("response.done", after=n, timeout=10)
    assert (error["error"]["code"], error["error"]["param"], error["error"]["event_id"]) == (
        "cannot_update_voice", "response.audio.output.voice", "r_voice")
    assert len([e for e in conv.events[n:] if e["type"] == "response.created"]) == 1
    assert done["response"]["audio"]["output"]["voice"] == "joe"


async def test_the_openai_sdk_tells_an_out_of_band_reply_by_its_metadata(monkeypatch) -> None:
    """The documented out-of-band pattern, through the openai package's own typed client: a response.create with
    conversation "none" and metadata; the SDK's parsed response.done carries that metadata and no conversation,
    and the reply's item stays out of the conversation (retrieving it is an error naming the client's event)."""
    from openai import AsyncOpenAI

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    async with scripted_server(ScriptedPipeline()) as server:
        client = AsyncOpenAI(api_key="unused", base_url=f"http://127.0.0.1:{server.server.port}/v1")
        async with client.realtime.connect(model="stepaudio-rt") as conn:
            await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "Is it noon?"}]})
            await conn.response.create(response={"conversation": "none", "metadata": {"topic": "classify"},
                                                  "output_modalities": ["text"]})
            events = []
            while not events or events[-1].type != "response.done":
                events.append(conn.parse_event(await conn.recv_bytes()))
            done = events[-1]
            await conn.conversation.item.retrieve(item_id=done.response.output[0].id, event_id="get_oob")
            while events[-1].type != "error":
                events.append(conn.parse_event(await conn.recv_bytes()))
    assert done.response.metadata == {"topic": "classify"} and done.response.conversation_id is None
    assert done.response.output[0].content[0].text == "It is noon."
    assert (events[-1].error.code, events[-1].error.event_id) == ("item_not_found", "get_oob")


async def test_the_refusals_of_a_second_response_and_of_a_cancel_with_none_are_in_the_apis_words(monkeypatch) -> None:
    """Through the openai package's client: a response.create while one runs, and a response.cancel once it is over.
    Clients tell these races from real errors by the API's messages ("Cancellation failed: no active response
    found", "Conversation already has an active response in progress: ..."), and show any other error to the user;
    the cancel's said "There is no active response to cancel.", so each interruption that came as a reply ended showed
    an error."""
    from openai import AsyncOpenAI

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    pipeline = ScriptedPipeline()
    pipeline.word_seconds = 0.1
    async with scripted_server(pipeline) as server:
        client = AsyncOpenAI(api_key="unused", base_url=f"http://127.0.0.1:{server.server.port}/v1")
        async with client.realtime.connect(model="stepaudio-rt") as conn:
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "Is it noon?"}]})
            await conn.response.create(event_id="first")
            await conn.response.create(event_id="second")
            raw: list[bytes] = []
            while not raw or json.loads(raw[-1])["type"] != "response.done":
                raw.append(await conn.recv_bytes())
            await conn.response.cancel(event_id="late")
            while json.loads(raw[-1])["type"] != "error" or json.loads(raw[-1])["error"]["event_id"] != "late":
                raw.append(await conn.recv_bytes())
    events = [conn.parse_event(r) for r in raw]
    created = next(e for e in events if e.type == "response.created")
    errors = [e.error for e in events if e.type == "error"]
    assert [(e.type, e.code, e.event_id, e.message) for e in errors] == [
        ("invalid_request_error", "conversation_already_has_active_response", "second",
         f"Conversation already has an active response in progress: {created.response.id}. Wait until the response "
         "is finished before creating a new one."),
        ("invalid_request_error", "response_cancel_not_active", "late",
         "Cancellation failed: no active response found")]
    for r in raw:
        validate_server_event(r)


async def test_a_session_update_to_another_model_is_refused_and_the_session_goes_on(monkeypatch) -> None:
    """The API lets session.update change any field "except voice and model". Another model was kept silently:
    session.updated still showed the connect-time one, a client believing it had switched. It is refused with an
    invalid_value error naming session.model; the model sent back as session.updated showed it is fine, and the
    session goes on."""
    from openai import AsyncOpenAI

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    async with scripted_server(ScriptedPipeline()) as server:
        client = AsyncOpenAI(api_key="unused", base_url=f"http://127.0.0.1:{server.server.port}/v1")
        async with client.realtime.connect(model="gpt-realtime") as conn:
            events = [conn.parse_event(await conn.recv_bytes())]
            await conn.session.update(session={"type": "realtime", "model": "gpt-4o-realtime-preview",
                                               "instructions": "Be terse."}, event_id="other_model")
            await conn.send({"type": "session.update", "event_id": "not_a_name", "session": {
                "type": "realtime", "model": 4}})
            await conn.session.update(session={"type": "realtime", "model": "gpt-realtime", "instructions": "Hi."})
            while len(events) < 4:
                events.append(conn.parse_event(await conn.recv_bytes()))
    assert [e.type for e in events] == ["session.created", "error", "error", "session.updated"]
    created, *errors, updated = events
    assert [(e.error.code, e.error.param, e.error.event_id) for e in errors] == [
        ("invalid_value", "session.model", "other_model"), ("invalid_value", "session.model", "not_a_name")]
    assert "gpt-realtime" in errors[0].error.message and "gpt-4o-realtime-preview" in errors[0].error.message
    assert created.session.model == updated.session.model == "gpt-realtime"
    assert updated.session.instructions == "Hi."


async def test_a_session_connected_without_a_model_takes_the_one_its_first_update_names() -> None:
    """The OpenAI Agents SDK pointed at this server by url (no ?model=) sends its model name (gpt-realtime-2.1) in
    every session.update. Each was refused as a model change, so its instructions and tools never reached the
    session. The API fixes the model when a session connects; one that named none there takes the first update's,
    which is then fixed as any other."""
    async with conversation(ScriptedPipeline()) as (_, conv):
        created = conv.of_type("session.created")[0]
        for event_id, model in (("first", "gpt-realtime-2.1"), ("other", "gpt-4o-realtime-preview"),
                                ("again", "gpt-realtime-2.1")):
            n = len(conv.events)
            await conv.send({"type": "session.update", "event_id": event_id, "session": {
                "type": "realtime", "model": model, "instructions": f"Be terse ({event_id})."}})
            await conv.wait_for("session.updated" if event_id != "other" else "error", after=n, timeout=10)
    answers = [e for e in conv.events if e["type"] in ("session.updated", "error")]
    assert [e["type"] for e in answers] == ["session.updated", "error", "session.updated"]
    assert created["session"]["model"] == "stepaudio-rt"
    assert [e["session"]["model"] for e in answers if e["type"] == "session.updated"] == ["gpt-realtime-2.1"] * 2
    assert answers[0]["session"]["instructions"] == "Be terse (first)."
    assert (answers[1]["error"]["code"], answers[1]["error"]["param"], answers[1]["error"]["event_id"]) == (
        "invalid_value", "session.model", "other")
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_noise_reduction_strength_of_the_wrong_type_is_refused_and_the_session_goes_on() -> None:
    """A strength the API's types refuse ("high") was accepted. It is refused, naming the field and the event; a
    well-formed noise reduction is accepted, and session.updated shows it null: this server has none (its log says
    so), and the audio is used as sent."""
    async with conversation(ScriptedPipeline()) as (_, conv):
        n = len(conv.events)
        await conv.send({"type": "session.update", "event_id": "s_nr", "session": {
            "type": "realtime", "audio": {"input": {"noise_reduction": {"type": "far_field", "strength": "high"}}}}})
        updated = await conv.update_session(audio={"input": {"noise_reduction": {"type": "near_field",
                                                                                 "strength": 0.5}}})
    assert [e["type"] for e in conv.events[n:]] == ["error", "session.updated"]
    error = conv.events[n]["error"]
    assert (error["code"], error["param"], error["event_id"]) == (
        "invalid_value", "session.audio.input.noise_reduction.strength", "s_nr")
    assert updated["session"]["audio"]["input"]["noise_reduction"] is None
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_tool_choice_forcing_a_function_that_is_not_among_the_tools_is_refused() -> None:
    """tool_choice {"type": "function", "name": ...} must name one of the tools: otherwise session.update and
    response.create are refused with an error naming tool_choice.name (not accepted, to fail the reply later)."""
    pipeline = ScriptedPipeline()
    tool = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}}, tools=[tool])
        n = len(conv.events)
        await conv.send({"type": "session.update", "event_id": "s_bad", "session": {
            "type": "realtime", "tool_choice": {"type": "function", "name": "get_date"}}})
        await conv.send({"type": "response.create", "event_id": "r_bad", "response": {
            "tool_choice": {"type": "function", "name": "get_date"}}})
        await conv.send({"type": "session.update", "session": {
            "type": "realtime", "tool_choice": {"type": "function", "name": "get_time"}}})
        updated = await conv.wait_for("session.updated", after=n)
    errors = [(e["error"]["code"], e["error"]["param"], e["error"]["event_id"]) for e in conv.of_type("error")]
    assert errors == [("invalid_value", "session.tool_choice.name", "s_bad"),
                      ("invalid_value", "response.tool_choice.name", "r_bad")]
    assert [e["type"] for e in conv.events[n:]] == ["error", "error", "session.updated"]
    assert updated["session"]["tool_choice"] == {"type": "function", "name": "get_time"}


async def test_a_tool_choice_requiring_a_tool_call_without_any_tool_is_refused() -> None:
    """tool_choice "required" with no tools could only be answered by a message, as if it were "auto": a client
    asking a reply for a call got a message and no error. session.update and response.create are refused, naming
    tool_choice and the event; with a tool in the same event it is accepted."""
    pipeline = ScriptedPipeline()
    tool = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = len(conv.events)
        await conv.send({"type": "session.update", "event_id": "s_req", "session": {
            "type": "realtime", "tool_choice": "required"}})
        await conv.send({"type": "response.create", "event_id": "r_req", "response": {"tool_choice": "required"}})
        await conv.send({"type": "session.update", "session": {"type": "realtime", "tool_choice": "required",
                                                               "tools": [tool]}})
        updated = await conv.wait_for("session.updated", after=n)
    errors = [(e["error"]["code"], e["error"]["param"], e["error"]["event_id"]) for e in conv.of_type("error")]
    assert errors == [("invalid_value", "session.tool_choice", "s_req"),
                      ("invalid_value", "response.tool_choice", "r_req")]
    assert [e["type"] for e in conv.events[n:]] == ["error", "error", "session.updated"]
    assert updated["session"]["tool_choice"] == "required"
    assert not pipeline.requests


async def test_instructions_past_the_prompt_budget_are_refused_where_they_are_set() -> None:
    """Instructions are sent whole with every prompt: ones longer than the prompt budget (1500 tokens) would make
    every reply fail for a context overflow, so session.update and response.create refuse them, naming the field,
    and the session keeps its instructions."""
    pipeline = ScriptedPipeline()
    too_long, long_enough = "Be brief. " * 700, "Be brief. " * 500  # ~1750 and ~1250 tokens at 4 characters each
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}}, instructions="Be kind.")
        n = len(conv.events)
        await conv.send({"type": "session.update", "event_id": "s_long", "session": {
            "type": "realtime", "instructions": too_long}})
        await conv.send({"type": "response.create", "event_id": "r_long", "response": {"instructions": too_long}})
        await conv.send({"type": "session.update", "session": {"type": "realtime", "instructions": long_enough}})
        updated = await conv.wait_for("session.updated", after=n)
    errors = [(e["error"]["code"], e["error"]["param"], e["error"]["event_id"]) for e in conv.of_type("error")]
    assert errors == [("invalid_value", "session.instructions", "s_long"),
                      ("invalid_value", "response.instructions", "r_long")]
    assert "1750 tokens" in conv.of_type("error")[0]["error"]["message"]
    assert [e["type"] for e in conv.events[n:]] == ["error", "error", "session.updated"]
    assert updated["session"]["instructions"] == long_enough


async def test_clearing_the_output_audio_buffer_cancels_the_reply_and_says_so() -> None:
    """output_audio_buffer.clear cuts the reply being spoken off: response.done (cancelled), then the documented
    output_audio_buffer.cleared naming that response."""
    async with speaking(NOON, 0.2) as (conv, n, delta):
        await conv.send({"type": "output_audio_buffer.clear"})
        cleared = await conv.wait_for("output_audio_buffer.cleared", after=n, timeout=5)
    [done] = conv.of_type("response.done")
    assert done["response"]["status"] == "cancelled"
    assert cleared["response_id"] == delta["response_id"] == done["response"]["id"]
    assert conv.events.index(done) < conv.events.index(cleared)
    for raw in conv.raw:
        validate_server_event(raw)


async def test_clearing_the_output_audio_buffer_after_response_cancel_still_says_cleared() -> None:
    """The documented order is response.cancel, then output_audio_buffer.clear: the cancel had already stopped the
    audio, so the clear found nothing to cut and answered nothing, and a client waiting for cleared hung."""
    async with speaking(NOON, 0.2) as (conv, n, delta):
        await conv.send({"type": "response.cancel"})
        await conv.wait_for("response.done", after=n, timeout=5)
        await conv.send({"type": "output_audio_buffer.clear"})
        cleared = await conv.wait_for("output_audio_buffer.cleared", after=n, timeout=5)
    assert cleared["response_id"] == delta["response_id"]
    assert not conv.of_type("error")
    for raw in conv.raw:
        validate_server_event(raw)


async def test_clearing_the_output_audio_buffer_when_nothing_was_ever_spoken_is_answered_with_an_error() -> None:
    """output_audio_buffer.clear on a session where no response sent audio (none yet, then a text-only reply): there
    is no response for output_audio_buffer.cleared to name, so the client gets an error with its event_id each
    time. It had got nothing at all, and a client waiting for cleared hung."""
    async with conversation(ScriptedPipeline()) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        await conv.send({"type": "output_audio_buffer.clear", "event_id": "clear_fresh"})
        await conv.wait_for("error", timeout=5)
        n = len(conv.events)
        await conv.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await conv.wait_for("response.done", after=n, timeout=10)
        await conv.send({"type": "output_audio_buffer.clear", "event_id": "clear_after_text"})
        await conv.wait_for("error", after=n, timeout=5)
    errors = [(e["error"]["type"], e["error"]["code"], e["error"]["event_id"]) for e in conv.of_type("error")]
    assert errors == [("invalid_request_error", "output_audio_buffer_empty", "clear_fresh"),
                      ("invalid_request_error", "output_audio_buffer_empty", "clear_after_text")]
    assert not conv.of_type("output_audio_buffer.cleared")
    for raw in conv.raw:
        validate_server_event(raw)


async def test_clearing_the_output_audio_buffer_after_an_out_of_band_reply_or_a_deleted_one_says_cleared() -> None:
    """Nothing is playing, but a reply did speak: an out-of-band one, or one whose item the client has since
    deleted. As after any other reply, output_audio_buffer.clear answers output_audio_buffer.cleared naming the
    response whose audio was sent last; it had answered nothing in these two cases."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words = ["Noon."]
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = len(conv.events)
        await conv.send({"type": "response.create", "response": {"conversation": "none"}})
        oob = await conv.wait_for("response.done", after=n, timeout=10)
        await conv.send({"type": "output_audio_buffer.clear"})
        first = await conv.wait_for("output_audio_buffer.cleared", after=n, timeout=5)
        n = await conv.ask("what time is it?")
        joined = await conv.wait_for("response.done", after=n, timeout=10)
        await conv.send({"type": "conversation.item.delete", "item_id": joined["response"]["output"][0]["id"]})
        await conv.wait_for("conversation.item.deleted", after=n, timeout=5)
        await conv.send({"type": "output_audio_buffer.clear"})
        second = await conv.wait_for("output_audio_buffer.cleared", after=n, timeout=5)
    assert first["response_id"] == oob["response"]["id"]
    assert second["response_id"] == joined["response"]["id"]
    assert not conv.of_type("error")
    for raw in conv.raw:
        validate_server_event(raw)


async def test_the_speaking_rate_set_by_session_update_reaches_the_speech() -> None:
    """audio.output.speed is echoed and the reply's audio is spoken at it (the scripted voice speaks 50 ms a word at
    speed 1.0: 12 words of reply = 600 ms, 400 ms at 1.5)."""
    import base64

    pipeline = ScriptedPipeline()
    pipeline.reply_words = "one two three four five six seven eight nine ten eleven twelve.".split()
    pipeline.word_seconds = 0.0
    async with conversation(pipeline) as (_, conv):
        audio_ms = []
        for speed in (1.0, 1.5):
            updated = await conv.update_session(audio={"output": {"speed": speed}})
            assert updated["session"]["audio"]["output"]["speed"] == speed
            n = await conv.ask("count")
            done = await conv.wait_for("response.done", after=n, timeout=10)
            deltas = [e for e in conv.events[n:conv.events.index(done)] if e["type"] == "response.output_audio.delta"]
            audio_ms.append(sum(len(base64.b64decode(e["delta"])) for e in deltas) / 48)  # 24 kHz pcm16: 48 B/ms
    assert abs(audio_ms[0] - 600) < 30 and abs(audio_ms[1] - 400) < 30, audio_ms


async def test_a_reply_cancelled_by_the_client_is_truncated_at_once_and_retrieved_as_incomplete() -> None:
    """The openai SDK's interruption pattern: response.cancel and, right behind it, conversation.item.truncate at the
    played ms. The truncate finds the item (the cancel records it first) and a later retrieve shows it incomplete
    with what was heard, as its output_item.done said."""
    async with speaking("one two three four five six seven eight nine ten.", 0.05) as (conv, n, delta):
        await conv.send({"type": "response.cancel"})
        await conv.send({"type": "conversation.item.truncate", "item_id": delta["item_id"], "content_index": 0,
                         "audio_end_ms": 50})
        await conv.wait_for("conversation.item.truncated", after=n, timeout=5)
        await conv.send({"type": "conversation.item.retrieve", "item_id": delta["item_id"]})
        retrieved = await conv.wait_for("conversation.item.retrieved", after=n, timeout=5)
    assert not conv.of_type("error"), conv.of_type("error")
    done = conv.of_type("response.output_item.done")[-1]
    assert done["item"]["status"] == "incomplete"
    assert retrieved["item"]["status"] == "incomplete"
    assert retrieved["item"]["content"] == [{"type": "output_audio", "transcript": "one"}]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_reply_cancelled_by_the_client_keeps_what_was_generated_until_the_client_truncates_it() -> None:
    """response.cancel just after the reply's first audio: response.done shows the message with the text generated
    up to the cancel, and conversation.item.retrieve and the next reply's prompt must hold that same text. Only a
    truncate (the client's, or the server's own at a barge-in, told by conversation.item.truncated) cuts it to what
    was heard; the cancel alone had silently left the retrieved item and the context with the heard part only."""
    pipeline = ScriptedPipeline()
    async with speaking(NOON, 0.2, pipeline) as (conv, n, delta):
        await conv.send({"type": "response.cancel"})
        done = await conv.wait_for("response.done", after=n, timeout=5)
        await conv.send({"type": "conversation.item.retrieve", "item_id": delta["item_id"]})
        retrieved = await conv.wait_for("conversation.item.retrieved", after=n, timeout=5)
        m = await conv.ask("and then?")
        await conv.wait_for("response.done", after=m, timeout=10)
    assert not conv.of_type("error"), conv.of_type("error")
    assert done["response"]["status_details"]["reason"] == "client_cancelled"
    [generated] = done["response"]["output"]
    transcript = generated["content"][0]["transcript"]
    assert transcript and NOON.startswith(transcript)
    assert not conv.of_type("conversation.item.truncated")
    assert retrieved["item"] == generated
    assert [m["content"] for m in pipeline.requests[-1].messages if m["role"] == "assistant"] == [transcript]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_the_message_of_a_reply_in_progress_can_be_retrieved_as_it_is_so_far() -> None:
    async with speaking(NOON, 0.2) as (conv, n, delta):
        await conv.send({"type": "conversation.item.retrieve", "item_id": delta["item_id"]})
        during = await conv.wait_for("conversation.item.retrieved", after=n, timeout=5)
        done = await conv.wait_for("response.done", after=n, timeout=10)
        await conv.send({"type": "conversation.item.retrieve", "item_id": delta["item_id"]})
        after = await conv.wait_for("conversation.item.retrieved", after=conv.events.index(done), timeout=5)
    assert not conv.of_type("error"), conv.of_type("error")
    assert during["item"]["status"] == "in_progress"
    so_far = during["item"]["content"][0]["transcript"]
    assert so_far and NOON.startswith(so_far)
    assert after["item"]["status"] == "completed"
    assert after["item"]["content"][0]["transcript"] == NOON
    for raw in conv.raw:
        validate_server_event(raw)


async def test_truncating_the_reply_being_spoken_stops_it_at_the_heard_audio() -> None:
    """conversation.item.truncate of the message whose audio is still coming, with no response.cancel first (a
    client doing its own barge-in). The API's truncate says the user heard only audio_end_ms of it and that no text
    they did not hear stays in the context: the reply stops there (response.done cancelled, its item incomplete, no
    more of its audio), conversation.item.truncated follows, and the next reply's prompt holds only the heard words."""
    pipeline = ScriptedPipeline()
    async with speaking(NOON, 0.2, pipeline) as (conv, n, delta):
        await conv.send({"type": "conversation.item.truncate", "event_id": "t_live", "item_id": delta["item_id"],
                         "content_index": 0, "audio_end_ms": 100})
        truncated = await conv.wait_for("conversation.item.truncated", after=n, timeout=5)
        await asyncio.sleep(1.0)  # the rest of the reply would have been spoken by now
        await conv.send({"type": "conversation.item.retrieve", "item_id": delta["item_id"]})
        retrieved = await conv.wait_for("conversation.item.retrieved", after=n, timeout=5)
        m = await conv.ask("and then?")
        await conv.wait_for("response.done", after=m, timeout=10)
    assert not conv.of_type("error"), conv.of_type("error")
    assert (truncated["item_id"], truncated["content_index"], truncated["audio_end_ms"]) == (delta["item_id"], 0, 100)
    done = conv.of_type("response.done")[0]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "client_cancelled"
    assert done["response"]["output"][0]["status"] == "incomplete"
    mine = [e for e in conv.events if e.get("response_id") == delta["response_id"]]
    assert conv.events.index(done) < conv.events.index(truncated)
    assert all(conv.events.index(e) < conv.events.index(done) for e in mine)
    assert retrieved["item"]["status"] == "incomplete"
    assert retrieved["item"]["content"] == [{"type": "output_audio", "transcript": "It is"}]
    assert [m["content"] for m in pipeline.requests[-1].messages if m["role"] == "assistant"] == ["It is"]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_truncate_past_the_audio_sent_is_refused_in_the_apis_words_and_the_reply_goes_on() -> None:
    """A barge-in's truncate names more audio than the reply has sent (the client's playback estimate ran ahead).
    The API refuses it with "Audio content of Xms is already shorter than Yms", which clients match to take it for
    no error; ours said "audio_end_ms Y is past the X ms of audio this item has"."""
    async with speaking(NOON, 0.2) as (conv, n, delta):
        await conv.send({"type": "conversation.item.truncate", "event_id": "far", "item_id": delta["item_id"],
                         "content_index": 0, "audio_end_ms": 60000})
        error = await conv.wait_for("error", after=n, timeout=5)
        done = await conv.wait_for("response.done", after=n, timeout=10)
    assert (error["error"]["code"], error["error"]["param"], error["error"]["event_id"]) == (
        "invalid_value", "audio_end_ms", "far")
    assert re.fullmatch(r"Audio content of \d+ms is already shorter than 60000ms", error["error"]["message"])
    assert done["response"]["status"] == "completed" and not conv.of_type("conversation.item.truncated")
    for raw in conv.raw:
        validate_server_event(raw)


@pytest.mark.parametrize("named", [False, True])
async def test_a_response_cancel_right_behind_a_truncate_of_the_reply_being_spoken_is_no_error(named: bool) -> None:
    """The OpenAI Agents SDK interrupts a reply (session.interrupt(), or its barge-in when interrupt_response is
    false, as in its CLI demo) with conversation.item.truncate and then response.cancel: the API keeps a truncated
    reply going until it is cancelled. The truncate had already ended the reply here, so the cancel got a
    response_cancel_not_active error, shown to the SDK's user as an error event at every interruption. That cancel
    (with or without the reply's id) is taken as done; a later one, with no reply left, still gets the error."""
    async with speaking(NOON, 0.2) as (conv, n, delta):
        cancel = {"type": "response.cancel", **({"response_id": delta["response_id"]} if named else {})}
        await conv.send({"type": "conversation.item.truncate", "item_id": delta["item_id"], "content_index": 0,
                         "audio_end_ms": 100})
        await conv.send({**cancel, "event_id": "right_behind"})
        await conv.wait_for("conversation.item.truncated", after=n, timeout=5)
        await conv.send({**cancel, "event_id": "later"})
        late = await conv.wait_for("error", after=n, timeout=5)
    assert [e["error"]["event_id"] for e in conv.of_type("error")] == ["later"]
    assert late["error"]["code"] == "response_cancel_not_active"
    assert [e["response"]["status"] for e in conv.of_type("response.done")] == ["cancelled"]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_out_of_band_replies_run_beside_the_conversations_reply_and_vad_leaves_them_alone() -> None:
    """The API: "Only one Response can write to the default Conversation at a time, but otherwise multiple Responses
    can be created in parallel", and VAD interrupts only a response with output to the default conversation. An
    out-of-band response.create while the conversation's reply is spoken starts at once (it had been refused with
    conversation_already_has_active_response); the user's speech cancels the conversation's reply but not it; a
    response.cancel without response_id concerns the default conversation only, one naming it cancels it."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words = NOON.split()
    pipeline.word_seconds = 0.1
    async with conversation(pipeline) as (_, conv):
        n = await conv.ask("what time is it?")
        await conv.send({"type": "response.create", "response": {"conversation": "none", "metadata": {"k": "side"}}})
        await conv.wait_for("response.output_audio.delta", after=n, where={"response_id": (
            await conv.wait_for("response.created", after=n, where={"response.metadata": {"k": "side"}}))[
            "response"]["id"]}, timeout=5)
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        joined, side = conv.of_type("response.created")[:2]
        side_done = await conv.wait_for("response.done", where={"response.id": side["response"]["id"]}, timeout=10)
        await conv.wait_for("response.done", after=conv.events.index(side_done) + 1, timeout=10)  # the turn's reply
        m = len(conv.events)
        await conv.send({"type": "response.create", "response": {"conversation": "none", "metadata": {"k": "late"}}})
        late = await conv.wait_for("response.created", after=m, timeout=5)
        await conv.send({"type": "response.cancel", "event_id": "c_default"})
        await conv.send({"type": "response.cancel", "event_id": "c_late", "response_id": late["response"]["id"]})
        late_done = await conv.wait_for("response.done", after=m, timeout=5)
    joined_done = next(e for e in conv.of_type("response.done") if e["response"]["id"] == joined["response"]["id"])
    assert joined_done["response"]["status"] == "cancelled"
    assert joined_done["response"]["status_details"]["reason"] == "turn_detected"
    assert side_done["response"]["status"] == "completed" and side_done["response"]["conversation_id"] is None
    assert side_done["response"]["output"][0]["content"][0]["transcript"] == NOON
    assert [(e["error"]["code"], e["error"]["event_id"]) for e in conv.of_type("error")] == [
        ("response_cancel_not_active", "c_default")]
    assert late_done["response"]["id"] == late["response"]["id"] and late_done["response"]["status"] == "cancelled"
    # Out of band throughout: none of the side replies' items joined the conversation.
    side_items = {e["item"]["id"] for e in conv.of_type("response.output_item.added")
                  if e["response_id"] in (side["response"]["id"], late["response"]["id"])}
    assert side_items and not side_items & {e["item"]["id"] for e in conv.of_type("conversation.item.added")}
    for raw in conv.raw:
        validate_server_event(raw)


async def test_deleting_the_item_an_unfinished_item_follows_moves_it_behind_the_one_before() -> None:
    """conversation.item.done's previous_item_id is "the ID of the item that precedes this one": deleting the item
    that a reply in progress (or a user audio item still being transcribed) follows makes the item before that one
    its predecessor, in the item.done (it had named the deleted item) and in the conversation the next reply hears."""
    import base64

    from tests.e2e.helpers import to_pcm16

    pipeline = ScriptedPipeline()
    pipeline.word_seconds = 0.1
    pipeline.asr_seconds = 0.3
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        for item_id, text in (("a", "first"), ("b", "second")):
            await conv.send({"type": "conversation.item.create", "item": _text_item(item_id, text=text)})
        await conv.wait_for("conversation.item.done", where={"item.id": "b"})
        n = len(conv.events)
        await conv.send({"type": "response.create"})
        added = await conv.wait_for("conversation.item.added", after=n, timeout=5)
        await conv.send({"type": "conversation.item.delete", "item_id": "b"})
        reply_done = await conv.wait_for("conversation.item.done", after=n, timeout=10)
        await conv.wait_for("response.done", after=n, timeout=10)
        n = len(conv.events)
        audio = base64.b64encode(to_pcm16(speech(0.5))).decode()
        await conv.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "id": "spoken", "content": [{"type": "input_audio", "audio": audio}]}})
        await conv.send({"type": "conversation.item.delete", "item_id": added["item"]["id"]})
        spoken_done = await conv.wait_for("conversation.item.done", after=n, timeout=10)
        m = len(conv.events)
        await conv.send({"type": "response.create"})
        await conv.wait_for("response.done", after=m, timeout=10)
    assert not conv.of_type("error"), conv.of_type("error")
    assert added["previous_item_id"] == "b"
    assert (reply_done["item"]["id"], reply_done["previous_item_id"]) == (added["item"]["id"], "a")
    assert (spoken_done["item"]["id"], spoken_done["previous_item_id"]) == ("spoken", "a")
    assert [(m["role"], m["content"]) for m in pipeline.requests[-1].messages if m["role"] != "system"] == [
        ("user", "first"), ("user", "what time is it")]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_items_created_during_a_reply_are_ordered_as_the_client_was_told() -> None:
    """While a reply is spoken the client has seen its item added (conversation.item.added after the user's item),
    so an item created without previous_item_id follows that reply, and one put after the user's item comes between
    it and the reply. The events must say so (the appended item had claimed to follow the user's item, like the
    reply) and the conversation the next reply hears must be in that order."""
    pipeline = ScriptedPipeline()
    pipeline.word_seconds = 0.1
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = await conv.ask("first")
        reply = (await conv.wait_for("conversation.item.added", after=n, where={"item.role": "assistant"}))["item"]
        await conv.send({"type": "conversation.item.create", "item": _text_item("late", text="during the reply")})
        await conv.send({"type": "conversation.item.create", "previous_item_id": conv.events[n + 0]["item"]["id"],
                         "item": _text_item("mid", text="after the first")})
        await conv.send({"type": "conversation.item.create", "previous_item_id": reply["id"],
                         "item": _text_item("next", text="right after the reply")})
        reply_done = await conv.wait_for("conversation.item.done", after=n, where={"item.id": reply["id"]}, timeout=10)
        m = len(conv.events)
        await conv.send({"type": "response.create"})
        await conv.wait_for("response.done", after=m, timeout=10)
    assert not conv.of_type("error"), conv.of_type("error")
    added = {e["item"]["id"]: e["previous_item_id"] for e in conv.of_type("conversation.item.added")}
    first = conv.events[n]["item"]["id"]
    assert (added[reply["id"]], added["late"], added["mid"], added["next"]) == (first, reply["id"], first, reply["id"])
    # The client's view, each item after its previous_item_id: first, mid, reply, next, late; the reply's item.done
    # names mid, which precedes it now.
    assert reply_done["previous_item_id"] == "mid"
    assert [m["content"] for m in pipeline.requests[-1].messages if m["role"] != "system"] == [
        "first", "after the first", "It is noon.", "right after the reply", "during the reply"]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_turn_committed_before_the_reply_in_progress_is_added_is_done_behind_that_reply() -> None:
    """interrupt_response false: the user speaks while a requested reply prepares its first words. Their turn is
    added after the question; the reply's message, added later after the question too, comes between them on the
    client's side. The turn's conversation.item.done (after its transcription) must name the reply's item as the one
    before it (it named the question), as the conversation the next reply hears has it."""
    pipeline = ScriptedPipeline()
    pipeline.word_seconds = 0.3
    pipeline.asr_seconds = 0.6
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                      "interrupt_response": False}}})
        n = await conv.ask("first")
        await conv.wait_for("response.created", after=n, timeout=5)
        await asyncio.sleep(0.05)  # the reply's prompt is built: the turn below is not in it
        await conv.stream(np.concatenate([speech(0.6), silence(0.8)]), pace=0)
        turn = await conv.wait_for("input_audio_buffer.committed", after=n, timeout=5)
        reply = await conv.wait_for("conversation.item.added", after=n, where={"item.role": "assistant"}, timeout=5)
        turn_done = await conv.wait_for("conversation.item.done", after=n, where={"item.id": turn["item_id"]},
                                        timeout=5)
        first_done = await conv.wait_for("response.done", after=n, timeout=10)
        await conv.wait_for("response.done", after=conv.events.index(first_done) + 1, timeout=10)
    question = conv.events[n]["item"]["id"]
    assert turn["previous_item_id"] == reply["previous_item_id"] == question
    assert conv.events.index(turn) < conv.events.index(reply) < conv.events.index(turn_done)
    assert turn_done["previous_item_id"] == reply["item"]["id"]
    assert [m["content"] for m in pipeline.requests[0].messages if m["role"] != "system"] == ["first"]
    assert [m["content"] for m in pipeline.requests[-1].messages if m["role"] != "system"] == [
        "first", "It is noon.", "what time is it"]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_function_call_after_the_reply_s_words_follows_them_in_the_conversation() -> None:
    """A reply that speaks, then calls a function: the call's conversation.item.added and .done name the reply's
    message as the item before it (they named the item the reply follows, which put the call before the message on
    the client's side), as the conversation keeps them and the next prompt has them."""
    from lm_engine.chat import ToolCallDelta

    pipeline = ScriptedPipeline()
    pipeline.reply_words = ["Let", "me", "check."]
    pipeline.tool_calls = [ToolCallDelta(call_id="call_1", name="get_time", arguments_delta="{}")]
    tool = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}}, tools=[tool])
        n = await conv.ask("what time is it?")
        await conv.wait_for("response.done", after=n, timeout=10)
        pipeline.tool_calls = []
        m = len(conv.events)
        await conv.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": "call_1", "output": "noon"}})
        await conv.send({"type": "response.create"})
        await conv.wait_for("response.done", after=m, timeout=10)
    question = conv.events[n]["item"]["id"]
    message, call = (e for e in conv.of_type("response.output_item.added") if e["response_id"] == (
        conv.of_type("response.created")[0]["response"]["id"]))
    added = {e["item"]["id"]: e["previous_item_id"] for e in conv.of_type("conversation.item.added")}
    done = {e["item"]["id"]: e["previous_item_id"] for e in conv.of_type("conversation.item.done")}
    assert call["item"]["type"] == "function_call"
    assert added[message["item"]["id"]] == done[message["item"]["id"]] == question
    assert added[call["item"]["id"]] == done[call["item"]["id"]] == message["item"]["id"]
    assert [(m["role"], m["content"], bool(m.get("tool_calls"))) for m in pipeline.requests[-1].messages
            if m["role"] != "system"] == [("user", "what time is it?", False), ("assistant", "Let me check.", True),
                                          ("tool", "noon", False)]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_function_call_output_for_an_unknown_call_is_refused_and_one_for_the_reply_s_call_is_not() -> None:
    """conversation.item.create of a function_call_output whose call_id no function_call has: the API checks that
    the call exists (invalid_tool_call_id, "Tool call ID ... not found in conversation."). It had been added, and
    then left out of every prompt without a word. An output for a call of the reply still in progress (sent once its
    output_item.added came, before response.done) is accepted, and reaches the next prompt."""
    from lm_engine.chat import ToolCallDelta

    pipeline = ScriptedPipeline()
    pipeline.tool_calls = [ToolCallDelta(call_id="call_1", name="get_time", arguments_delta="{}"),
                           ToolCallDelta(call_id="call_2", name="get_time", arguments_delta="{}")]
    pipeline.tool_call_seconds = 2.0  # the reply is still in progress well after its first call is added
    tool = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}}, tools=[tool], output_modalities=["text"])
        await conv.send({"type": "conversation.item.create", "event_id": "orphan", "item": {
            "type": "function_call_output", "call_id": "call_nope", "output": "noon"}})
        await conv.wait_for("error", timeout=5)
        n = await conv.ask("what time is it?")
        await conv.wait_for("response.output_item.added", after=n, where={"item.call_id": "call_1"}, timeout=10)
        await conv.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": "call_1", "output": "noon"}})
        done = await conv.wait_for("response.done", after=n, timeout=10)
        pipeline.tool_calls = []
        m = len(conv.events)
        await conv.send({"type": "response.create"})
        await conv.wait_for("response.done", after=m, timeout=10)
    errors = [(e["error"]["type"], e["error"]["code"], e["error"]["param"], e["error"]["event_id"])
              for e in conv.of_type("error")]
    assert errors == [("invalid_request_error", "invalid_tool_call_id", "item.call_id", "orphan")]
    added = [e["item"] for e in conv.of_type("conversation.item.added")]
    assert [i["call_id"] for i in added if i["type"] == "function_call_output"] == ["call_1"]
    assert done["response"]["status"] == "completed"
    assert [(m["role"], m["content"]) for m in pipeline.requests[-1].messages if m["role"] == "tool"] == [
        ("tool", "noon")]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_truncated_message_cannot_be_truncated_past_its_cut() -> None:
    """After conversation.item.truncate at 100 ms the message's audio lasts 100 ms: a later truncate past that is
    "greater than the actual audio duration", which the API answers with an error; it had been accepted and had
    put back into the context the words cut before. A truncate shorter still is accepted."""
    async with speaking(NOON, 0.0) as (conv, n, delta):
        await conv.wait_for("response.done", after=n, timeout=10)
        for event_id, ms in (("t1", 100), ("t2", 400), ("t3", 50)):
            await conv.send({"type": "conversation.item.truncate", "event_id": event_id, "item_id": delta["item_id"],
                             "content_index": 0, "audio_end_ms": ms})
        await conv.wait_for("conversation.item.truncated", where={"audio_end_ms": 50}, timeout=5)
        await conv.send({"type": "conversation.item.retrieve", "item_id": delta["item_id"]})
        retrieved = await conv.wait_for("conversation.item.retrieved", after=n, timeout=5)
    assert [e["audio_end_ms"] for e in conv.of_type("conversation.item.truncated")] == [100, 50]
    assert [(e["error"]["code"], e["error"]["param"], e["error"]["event_id"]) for e in conv.of_type("error")] == [
        ("invalid_value", "audio_end_ms", "t2")]
    assert retrieved["item"]["content"] == [{"type": "output_audio", "transcript": "It"}]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_the_message_of_a_reply_in_progress_can_be_deleted() -> None:
    """The client has seen the reply's message added to the conversation: conversation.item.delete of it must answer
    conversation.item.deleted (it had answered item_not_found), and then nothing more of it as a conversation item
    (no conversation.item.done; it does not join the conversation), while the response itself ends as usual."""
    pipeline = ScriptedPipeline()
    async with speaking(NOON, 0.1, pipeline) as (conv, n, delta):
        await conv.send({"type": "conversation.item.delete", "item_id": delta["item_id"]})
        deleted = await conv.wait_for("conversation.item.deleted", after=n, timeout=5)
        done = await conv.wait_for("response.done", after=n, timeout=10)
        await conv.send({"type": "conversation.item.retrieve", "event_id": "get", "item_id": delta["item_id"]})
        missing = await conv.wait_for("error", after=n, timeout=5)
        m = await conv.ask("and now?")
        await conv.wait_for("response.done", after=m, timeout=10)
    assert deleted["item_id"] == delta["item_id"]
    assert done["response"]["status"] == "completed" and done["response"]["output"][0]["id"] == delta["item_id"]
    assert not [e for e in conv.events if e["type"] == "conversation.item.done" and e["item"]["id"] == delta["item_id"]]
    assert (missing["error"]["code"], missing["error"]["event_id"]) == ("item_not_found", "get")
    assert [(m["role"], m["content"]) for m in pipeline.requests[-1].messages if m["role"] != "system"] == [
        ("user", "what time is it?"), ("user", "and now?")]
    for raw in conv.raw:
        validate_server_event(raw)


GET_TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


def streaming_get_time(seconds: float) -> ScriptedPipeline:
    """A pipeline whose reply is one get_time call, its arguments in two deltas `seconds` apart."""
    from lm_engine.chat import ToolCallDelta

    pipeline = ScriptedPipeline()
    pipeline.reply_words = []
    pipeline.tool_call_seconds = seconds
    pipeline.tool_calls = [ToolCallDelta(call_id="call_1", name="get_time", arguments_delta='{"tz": '),
                           ToolCallDelta(call_id="call_1", name="get_time", arguments_delta='"UTC"}')]
    return pipeline


async def test_a_function_call_whose_arguments_are_streaming_can_be_retrieved_as_it_is_so_far() -> None:
    """The client has seen the call's conversation.item.added and some response.function_call_arguments.delta: a
    conversation.item.retrieve of it answers the item as it stands (in_progress, the arguments so far), as for the
    reply's message; it had answered item_not_found until the reply ended. After response.done it is completed."""
    pipeline = streaming_get_time(0.3)
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}}, tools=[GET_TIME])
        n = await conv.ask("what time is it?")
        delta = await conv.wait_for("response.function_call_arguments.delta", after=n, timeout=5)
        await conv.send({"type": "conversation.item.retrieve", "event_id": "get", "item_id": delta["item_id"]})
        during = await conv.wait_for("conversation.item.retrieved", after=n, timeout=5)
        done = await conv.wait_for("response.done", after=n, timeout=10)
        await conv.send({"type": "conversation.item.retrieve", "item_id": delta["item_id"]})
        after = await conv.wait_for("conversation.item.retrieved", after=conv.events.index(done), timeout=5)
    assert not conv.of_type("error"), conv.of_type("error")
    assert conv.events.index(during) < conv.events.index(done)
    assert {k: during["item"][k] for k in ("id", "type", "status", "call_id", "name", "arguments")} == {
        "id": delta["item_id"], "type": "function_call", "status": "in_progress", "call_id": "call_1",
        "name": "get_time", "arguments": '{"tz": '}
    assert (after["item"]["status"], after["item"]["arguments"]) == ("completed", '{"tz": "UTC"}')
    for raw in conv.raw:
        validate_server_event(raw)


async def test_an_out_of_band_reply_may_refer_to_the_message_still_being_spoken_as_it_is_so_far() -> None:
    """The client has seen conversation.item.added for the reply's message; an out-of-band response.create whose input
    holds an item_reference to it (an aside about what is being said) had answered item_not_found until the reply
    ended. As conversation.item.retrieve does, the reference reads the message as it stands: the text generated so
    far. The reply in progress goes on to the end."""
    pipeline = ScriptedPipeline()
    async with speaking(NOON, 0.3, pipeline) as (conv, n, delta):
        await conv.send({"type": "response.create", "event_id": "aside", "response": {
            "conversation": "none", "metadata": {"k": "aside"}, "output_modalities": ["text"], "input": [
                {"type": "item_reference", "id": delta["item_id"]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "say it shorter"}]}]}})
        aside = await conv.wait_for("response.done", after=n, where={"response.metadata.k": "aside"}, timeout=10)
        done = await conv.wait_for("response.done", after=n, where={"response.id": delta["response_id"]}, timeout=10)
    assert not conv.of_type("error"), conv.of_type("error")
    assert aside["response"]["status"] == "completed" and done["response"]["status"] == "completed"
    created = conv.wait_for("response.created", after=n, where={"response.metadata.k": "aside"}, timeout=0)
    assert conv.events.index(await created) < conv.events.index(done)  # asked while the message was being spoken
    said, asked = [(m["role"], m["content"]) for m in pipeline.requests[1].messages if m["role"] != "system"]
    assert said[0] == "assistant" and said[1] and NOON.startswith(said[1])
    assert asked == ("user", "say it shorter")
    assert done["response"]["output"][0]["content"][0]["transcript"] == NOON
    for raw in conv.raw:
        validate_server_event(raw)


async def test_an_out_of_band_reply_may_refer_to_a_function_call_whose_arguments_are_streaming() -> None:
    """As for the message: a function call of the reply in progress that the client saw added is referred to as it
    stands (its arguments so far), and a function_call_output for it may follow it in the same input."""
    pipeline = streaming_get_time(1.0)
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}}, tools=[GET_TIME])
        n = await conv.ask("what time is it?")
        delta = await conv.wait_for("response.function_call_arguments.delta", after=n, timeout=5)
        await conv.send({"type": "response.create", "response": {"conversation": "none", "tools": [], "input": [
            {"type": "item_reference", "id": delta["item_id"]},
            {"type": "function_call_output", "call_id": "call_1", "output": "noon"}]}})
        await conv.wait_for("response.done", after=n, where={"response.conversation_id": None}, timeout=10)
        await conv.wait_for("response.done", after=n, where={"response.id": delta["response_id"]}, timeout=10)
    assert not conv.of_type("error"), conv.of_type("error")
    call, output = [m for m in pipeline.requests[1].messages if m["role"] != "system"]
    assert call["tool_calls"][0]["function"]["name"] == "get_time" and output == {
        **output, "role": "tool", "content": "noon"}
    for raw in conv.raw:
        validate_server_event(raw)


async def test_transcription_languages_is_checked_and_one_possible_language_is_the_language_asked_for() -> None:
    """GA transcription's `languages` (the possible languages of the input) had been ignored: a client that set
    ["de"] had its German transcribed by a Whisper left to guess, and an unknown code was accepted, where the same
    code as `language` is refused. One possible language is now asked for as `language` is, each code is checked as
    `language` is, and session.updated shows the list."""
    pipeline = ScriptedPipeline()
    pipeline.languages = frozenset({"en", "de"})
    async with conversation(pipeline) as (_, conv):
        await conv.send({"type": "session.update", "event_id": "bad", "session": {"type": "realtime", "audio": {
            "input": {"transcription": {"model": "gpt-transcribe", "languages": ["de", "klingon"]}}}}})
        refused = await conv.wait_for("error", timeout=5)
        updated = await conv.update_session(audio={"input": {"transcription": {"languages": ["de"]}}})
        await push_to_talk_turn(conv)
        await conv.wait_for("response.done", timeout=10)
    assert (refused["error"]["code"], refused["error"]["param"], refused["error"]["event_id"]) == (
        "invalid_value", "session.audio.input.transcription.languages[1]", "bad")
    assert updated["session"]["audio"]["input"]["transcription"]["languages"] == ["de"]
    assert pipeline.languages_asked and set(pipeline.languages_asked) == {"de"}
    for raw in conv.raw:
        validate_server_event(raw)


@pytest.mark.parametrize(("how", "asr_error"), [("committed", None), ("created", None),
                                                ("committed", "the recogniser went away")])
async def test_a_user_audio_item_s_transcript_is_null_until_its_transcription_completes(
        how: str, asr_error: str | None) -> None:
    """The API's input_audio content has transcript null until its transcription completes (conversation.item.added
    says so): a conversation.item.retrieve while the transcription runs shows null too (it showed ""), and after it
    the transcript that conversation.item.done gave, or still null when the transcription failed. For a spoken turn
    (input_audio_buffer.commit) and for an audio item the client sent whole."""
    import base64

    from tests.e2e.helpers import to_pcm16

    pipeline = ScriptedPipeline()
    pipeline.asr_seconds = 0.5
    pipeline.asr_error = asr_error
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = len(conv.events)
        if how == "committed":
            await conv.stream(np.concatenate([speech(1.0), silence(0.2)]), pace=0)
            await conv.send({"type": "input_audio_buffer.commit"})
        else:
            content = [{"type": "input_audio", "audio": base64.b64encode(to_pcm16(speech(0.5))).decode()}]
            await conv.send({"type": "conversation.item.create",
                             "item": {"type": "message", "role": "user", "content": content}})
        added = await conv.wait_for("conversation.item.added", after=n, timeout=5)
        item_id = added["item"]["id"]
        await conv.send({"type": "conversation.item.retrieve", "item_id": item_id})
        during = await conv.wait_for("conversation.item.retrieved", after=n, timeout=5)
        done = await conv.wait_for("conversation.item.done", after=n, where={"item.id": item_id}, timeout=5)
        await conv.send({"type": "conversation.item.retrieve", "item_id": item_id})
        after = await conv.wait_for("conversation.item.retrieved", after=conv.events.index(done), timeout=5)
    assert conv.events.index(during) < conv.events.index(done)
    assert added["item"]["content"] == during["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    transcript = None if asr_error else "what time is it"
    assert done["item"]["content"] == [{"type": "input_audio", "transcript": transcript}]
    assert after["item"] == done["item"]
    for raw in conv.raw:
        validate_server_event(raw)


async def test_clearing_the_output_audio_buffer_cuts_an_out_of_band_reply_off_too() -> None:
    """output_audio_buffer.clear cuts off the audio being played, whatever response it belongs to: an out-of-band
    reply speaking (none in the conversation) gets what the conversation's reply gets, response.done (cancelled,
    client_cancelled) then output_audio_buffer.cleared naming it, and no more of its audio. It had been ignored."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words = NOON.split()
    pipeline.word_seconds = 0.2
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = len(conv.events)
        await conv.send({"type": "response.create", "response": {"conversation": "none"}})
        delta = await conv.wait_for("response.output_audio.delta", after=n, timeout=5)
        await conv.send({"type": "output_audio_buffer.clear"})
        cleared = await conv.wait_for("output_audio_buffer.cleared", after=n, timeout=5)
        await asyncio.sleep(0.5)  # more of the reply would have come by now
    [done] = conv.of_type("response.done")
    assert (done["response"]["status"], done["response"]["status_details"]["reason"]) == (
        "cancelled", "client_cancelled")
    assert cleared["response_id"] == delta["response_id"] == done["response"]["id"]
    assert conv.events.index(done) < conv.events.index(cleared)
    assert [e["type"] for e in conv.events[conv.events.index(done) + 1:]] == ["output_audio_buffer.cleared"]
    assert not conv.of_type("error")
    for raw in conv.raw:
        validate_server_event(raw)


async def test_clearing_the_output_audio_buffer_cuts_off_every_reply_being_spoken_and_only_those() -> None:
    """The conversation's reply and an out-of-band one speak at once: output_audio_buffer.clear cancels both, each
    with its response.done then its output_audio_buffer.cleared. An out-of-band text reply running beside them has
    no audio to clear and completes."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words = NOON.split()
    pipeline.word_seconds = 0.2
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}})
        n = await conv.ask("what time is it?")
        await conv.send({"type": "response.create", "response": {"conversation": "none", "metadata": {"k": "oob"}}})
        await conv.send({"type": "response.create", "response": {"conversation": "none", "metadata": {"k": "text"},
                                                                  "output_modalities": ["text"]}})
        joined, spoken, text = [(await conv.wait_for("response.created", after=n, where=where, timeout=5))[
            "response"]["id"] for where in ({"response.conversation_id": conv.events[0]["session"]["id"].replace(
                "sess_", "conv_")}, {"response.metadata": {"k": "oob"}}, {"response.metadata": {"k": "text"}})]
        for response_id in (joined, spoken):
            await conv.wait_for("response.output_audio.delta", after=n, where={"response_id": response_id}, timeout=5)
        await conv.wait_for("response.output_text.delta", after=n, where={"response_id": text}, timeout=5)
        m = len(conv.events)
        await conv.send({"type": "output_audio_buffer.clear"})
        text_done = await conv.wait_for("response.done", after=m, where={"response.id": text}, timeout=10)
    done = {e["response"]["id"]: e for e in conv.of_type("response.done")}
    cleared = {e["response_id"]: e for e in conv.of_type("output_audio_buffer.cleared")}
    assert set(cleared) == {joined, spoken}
    for response_id in (joined, spoken):
        assert done[response_id]["response"]["status"] == "cancelled"
        assert conv.events.index(done[response_id]) < conv.events.index(cleared[response_id])
        assert not [e for e in conv.events[conv.events.index(cleared[response_id]):]
                    if e["type"] == "response.output_audio.delta" and e["response_id"] == response_id]
    assert text_done["response"]["status"] == "completed"
    assert not conv.of_type("error")
    for raw in conv.raw:
        validate_server_event(raw)


@pytest.mark.parametrize(("choice", "calls", "said"), [
    ("required", [], "tool_choice required was not heeded: the chat LM answered without a call"),
    ({"type": "function", "name": "get_time"}, ["get_weather"],
     "tool_choice get_time was not heeded: the chat LM called get_weather"),
    ("required", ["get_time"], None),
])
async def test_a_tool_choice_the_lm_did_not_heed_is_named_in_the_log(choice, calls, said, caplog) -> None:
    """tool_choice "required" or a named function reaches the LM as asked; a small model may still answer in words
    or call another function. The reply stands (the model's), and the server's log says so; a heeded one is quiet."""
    from lm_engine.chat import ToolCallDelta

    pipeline = ScriptedPipeline()
    pipeline.tool_calls = [ToolCallDelta(call_id=f"call_{i}", name=n, arguments_delta="{}")
                           for i, n in enumerate(calls)]
    tools = [{"type": "function", "name": n, "parameters": {"type": "object", "properties": {}}}
             for n in ("get_time", "get_weather")]
    async with conversation(pipeline) as (_, conv):
        await conv.update_session(audio={"input": {"turn_detection": None}}, tools=tools, tool_choice=choice)
        n = await conv.ask("hello")
        done = await conv.wait_for("response.done", after=n, timeout=10)
    assert done["response"]["status"] == "completed"
    noted = [r.getMessage() for r in caplog.records if "was not heeded" in r.getMessage()]
    assert noted == ([said] if said else []), noted


async def test_an_unheeded_tool_choice_warning_names_its_session_once() -> None:
    """With several sessions an operator could not tell whose reply ignored tool_choice: its warning alone had no
    session tag in serve's log."""
    from tests.controller.scripted_pipeline import served_log

    tools = [{"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}]
    with served_log() as log:
        async with conversation(ScriptedPipeline()) as (_, conv):
            session_id = conv.of_type("session.created")[0]["session"]["id"]
            await conv.update_session(audio={"input": {"turn_detection": None}}, tools=tools, tool_choice="required")
            await conv.wait_for("response.done", after=await conv.ask("hello"), timeout=10)
    warnings = [line for line in log.getvalue().splitlines() if "was not heeded" in line]
    assert len(warnings) == 1 and warnings[0].count(session_id) == 1, log.getvalue()
    assert f"WARNING controller.session {session_id}: tool_choice required" in warnings[0], warnings


async def test_event_ids_are_unique_across_sessions() -> None:
    """The API's event ids are unique, not per session: two sessions' first events had the same id ("event_1")."""
    from tests.controller.scripted_pipeline import scripted_server
    from tests.e2e.helpers import open_conversation

    async with scripted_server(ScriptedPipeline()) as server:
        convs = [await open_conversation(f"ws://127.0.0.1:{server.server.port}/v1/realtime") for _ in range(2)]
        for conv in convs:
            await conv.close()
    ids = [[e["event_id"] for e in conv.events] for conv in convs]
    assert all(ids) and not set(ids[0]) & set(ids[1]), ids


async def test_truncating_an_assistant_item_the_client_created_says_why_it_cannot_be() -> None:
    """A client-created assistant item has no audio on this server: the refusal must say so, not call it something
    other than an assistant audio message (which it is, by its content type)."""
    async with conversation(ScriptedPipeline()) as (_, conv):
        await conv.send({"type": "conversation.item.create", "item": {
            "id": "a2", "type": "message", "role": "assistant",
            "content": [{"type": "output_audio", "transcript": "spoken"}]}})
        await conv.wait_for("conversation.item.done", timeout=5)
        await conv.send({"type": "conversation.item.truncate", "event_id": "t", "item_id": "a2",
                         "content_index": 0, "audio_end_ms": 0})
        error = (await conv.wait_for("error", timeout=5))["error"]
    assert error["event_id"] == "t"
    assert "created by the client" in error["message"], error


async def test_an_update_for_the_other_session_type_is_refused_in_the_ga_apis_words() -> None:
    """A beta transcription_session.update sent to a realtime session was answered "session.type cannot change to
    'transcription'", naming a field the client never sent. The GA API answers a transcription update to a realtime
    session with invalid_parameter "Passing a transcription session update event to a realtime session is not
    allowed."; so does this server now, to that, to a GA session.update of the other type, and the other way round."""
    async with scripted_server(ScriptedPipeline()) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        realtime, transcription = await open_conversation(url), await open_conversation(url + "?intent=transcription")
        try:
            await realtime.send({"type": "transcription_session.update", "event_id": "beta", "session": {
                "input_audio_transcription": {"model": "whisper-1"}}})
            await realtime.send({"type": "session.update", "event_id": "ga", "session": {"type": "transcription"}})
            await transcription.send({"type": "session.update", "event_id": "back", "session": {"type": "realtime"}})
            errors = [await realtime.wait_for("error", where={"error.event_id": eid}, timeout=5)
                      for eid in ("beta", "ga")]
            errors.append(await transcription.wait_for("error", timeout=5))
        finally:
            await realtime.close()
            await transcription.close()
    to_realtime = "Passing a transcription session update event to a realtime session is not allowed"
    to_transcription = "Passing a realtime session update event to a transcription session is not allowed"
    assert [(e["error"]["code"], e["error"]["param"], e["error"]["message"].split(" (")[0]) for e in errors] == [
        ("invalid_parameter", "session.type", to_realtime)] * 2 + [
        ("invalid_parameter", "session.type", to_transcription)]
    for raw in realtime.raw + transcription.raw:
        validate_server_event(raw)
