"""Function calls as the openai package's realtime client sees them: each call's events, and how a call cut off
mid-arguments ends. Raw frames are checked against the package's GA types (tests.realtime_schema)."""

from __future__ import annotations

from lm_engine.chat import ToolCallDelta
from tests.controller.openai_conn import ask, connected, of_type, read_until
from tests.controller.scripted_pipeline import ScriptedPipeline

GET_TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


async def test_a_call_cancelled_mid_arguments_ends_incomplete_and_its_arguments_are_never_done() -> None:
    """response.cancel while a call's arguments stream ('{"tz": ' of '{"tz": "UTC"}'): the call's
    response.output_item.done, conversation.item.done and response.done's output said "completed", and a
    response.function_call_arguments.done gave the cut arguments as final; a client running calls on either (the
    openai-agents SDK runs a completed function_call item) ran get_time with arguments that are not JSON. The call
    now ends "incomplete", and no .done event calls its arguments whole; conversation.item.retrieve says so after."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words = []
    pipeline.tool_call_seconds = 0.5
    pipeline.tool_calls = [ToolCallDelta(call_id="call_1", name="get_time", arguments_delta='{"tz": '),
                           ToolCallDelta(call_id="call_1", name="get_time", arguments_delta='"UTC"}')]
    async with connected(pipeline, tools=[GET_TIME], output_modalities=["text"]) as conn:
        await ask(conn)
        events = await read_until(conn, "response.function_call_arguments.delta")
        await conn.response.cancel()
        events += await read_until(conn, "response.done")
        done = events[-1]["response"]
        await conn.conversation.item.retrieve(item_id=done["output"][0]["id"])
        retrieved = (await read_until(conn, "conversation.item.retrieved"))[-1]["item"]
    assert done["status"] == "cancelled"
    assert not of_type(events, "response.function_call_arguments.done")
    item_done = of_type(events, "response.output_item.done")
    conv_done = [e for e in of_type(events, "conversation.item.done") if e["item"]["type"] == "function_call"]
    assert [(i["item"]["status"], i["item"]["arguments"]) for i in item_done + conv_done] == [
        ("incomplete", '{"tz": ')] * 2
    assert [(o["type"], o["status"], o["call_id"]) for o in done["output"]] == [
        ("function_call", "incomplete", "call_1")]
    assert retrieved == done["output"][0]


async def test_max_output_tokens_reached_inside_the_second_call_leaves_the_first_whole() -> None:
    """The LM stops at max_output_tokens (finish_reason "length") inside the arguments of its second call, as a
    backend's native tool calls stream: the response is incomplete (reason max_output_tokens); the first call, whole,
    is completed with its arguments done; the second had been "completed" too, its cut arguments "done". It is now
    "incomplete", with no arguments.done."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words = []
    pipeline.finish_reason = "length"
    pipeline.tool_calls = [ToolCallDelta(call_id="call_1", name="get_time", arguments_delta='{"tz": "UTC"}'),
                           ToolCallDelta(call_id="call_2", name="get_time", arguments_delta='{"tz": "Eu')]
    async with connected(pipeline, tools=[GET_TIME], output_modalities=["text"]) as conn:
        await ask(conn, max_output_tokens=20)
        events = await read_until(conn, "response.done")
    done = events[-1]["response"]
    assert (done["status"], done["status_details"]["reason"]) == ("incomplete", "max_output_tokens")
    assert [(e["call_id"], e["arguments"]) for e in of_type(events, "response.function_call_arguments.done")] == [
        ("call_1", '{"tz": "UTC"}')]
    assert [(o["call_id"], o["status"], o["arguments"]) for o in done["output"]] == [
        ("call_1", "completed", '{"tz": "UTC"}'), ("call_2", "incomplete", '{"tz": "Eu')]
    assert [(e["item"]["call_id"], e["item"]["status"]) for e in of_type(events, "response.output_item.done")] == [
        ("call_1", "completed"), ("call_2", "incomplete")]


async def test_each_of_two_calls_is_done_before_the_next_is_added() -> None:
    """A reply of two calls, the second streamed a second after the first: the first call's arguments.done and
    output_item.done came only with the second's, at the end of the reply (after it had been added), so a client
    could run neither call until the LM had written both. As the API streams output items one after the other, each
    call is now closed before the next is added; every event carries its call's call_id, item_id and output_index."""
    pipeline = ScriptedPipeline()
    pipeline.reply_words = []
    pipeline.tool_call_seconds = 1.0
    pipeline.tool_calls = [ToolCallDelta(call_id="call_1", name="get_time", arguments_delta='{"tz": "UTC"}'),
                           ToolCallDelta(call_id="call_2", name="get_time", arguments_delta='{"tz": "CET"}')]
    async with connected(pipeline, tools=[GET_TIME], output_modalities=["text"]) as conn:
        await ask(conn)
        events = await read_until(conn, "response.done")
    calls = {o["call_id"]: o for o in events[-1]["response"]["output"]}
    order = []
    for e in events:
        item = e.get("item", {})
        if e["type"].startswith("response.function_call_arguments."):
            assert (e["item_id"], e["output_index"]) == (calls[e["call_id"]]["id"], list(calls).index(e["call_id"]))
            order.append((e["type"], e["call_id"]))
        elif e["type"].startswith("response.output_item.") and item.get("type") == "function_call":
            order.append((e["type"], item["call_id"]))
    assert order == [(t, c) for c in ("call_1", "call_2") for t in (
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done")]
    done_1 = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert (done_1["name"], done_1["arguments"]) == ("get_time", '{"tz": "UTC"}')
    assert [(o["status"], o["arguments"]) for o in calls.values()] == [
        ("completed", '{"tz": "UTC"}'), ("completed", '{"tz": "CET"}')]
