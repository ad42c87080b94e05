"""Function calling over the Realtime protocol: the LM's call becomes a function_call item, its output
feeds the next response."""

from __future__ import annotations

import json

import pytest

from tests.e2e.helpers import open_conversation
from tests.realtime_schema import validate_server_event

pytestmark = pytest.mark.slow

WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


async def test_tool_call_and_its_output_feed_the_next_reply(embedded_server) -> None:
    conv = await open_conversation(embedded_server.ws)
    # Greedy decoding (the beta-style `temperature` field, which we accept): the 0.5B model's choice
    # between calling the tool and answering in words is otherwise a coin toss.
    try:
        await conv.update_session(tools=[WEATHER_TOOL], tool_choice="auto", temperature=0.0,
                                  audio={"input": {"turn_detection": None}})
        await conv.ask("What is the weather in Paris right now?")
        args_done = await conv.wait_for("response.function_call_arguments.done", timeout=90)
        first_done = await conv.wait_for("response.done", timeout=30)
        assert args_done["name"] == "get_weather"
        assert "paris" in json.loads(args_done["arguments"])["city"].lower()
        assert conv.of_type("response.function_call_arguments.delta")
        calls = [o for o in first_done["response"]["output"] if o["type"] == "function_call"]
        assert calls and calls[0]["call_id"] == args_done["call_id"]

        n = len(conv.events)
        await conv.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": args_done["call_id"],
            "output": json.dumps({"city": "Paris", "forecast": "sunny", "temperature_c": 21})}})
        await conv.send({"type": "response.create"})
        second_done = await conv.wait_for("response.done", after=n, timeout=90)
    finally:
        await conv.close()
    assert second_done["response"]["status"] == "completed"
    said = [e["transcript"] for e in conv.events[n:] if e["type"] == "response.output_audio_transcript.done"]
    assert said and said[-1].strip()
    assert any(w in said[-1].lower() for w in ("sunny", "21", "twenty"))
    for raw in conv.raw:
        validate_server_event(raw)


@pytest.mark.parametrize("arguments", ["", "Paris"])
async def test_a_client_call_item_whose_arguments_are_not_json_does_not_fail_the_replies(embedded_server,
                                                                                        arguments: str) -> None:
    """A client that adds the call and its output itself (history it kept, a call it made on its own) may send no
    arguments for a call that takes none, or plain text: the replies after it are answered, not failed."""
    conv = await open_conversation(embedded_server.ws)
    try:
        await conv.update_session(tools=[WEATHER_TOOL], output_modalities=["text"],
                                  audio={"input": {"turn_detection": None}})
        for item in ({"type": "message", "role": "user",
                      "content": [{"type": "input_text", "text": "What is the weather in Paris?"}]},
                     {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": arguments},
                     {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"}):
            n = len(conv.events)
            await conv.send({"type": "conversation.item.create", "item": item})
            await conv.wait_for("conversation.item.done", after=n)
        n = len(conv.events)
        await conv.send({"type": "response.create"})
        done = await conv.wait_for("response.done", after=n, timeout=90)
    finally:
        await conv.close()
    assert done["response"]["status"] == "completed", done["response"]["status_details"]
    assert [e for e in conv.events[n:] if e["type"] == "error"] == []
    for raw in conv.raw:
        validate_server_event(raw)
