"""response.create when the conversation ends with an assistant message (one the client added, or the last reply)
gets a new assistant message, as the Realtime API's does: not an empty reply, not a failure."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import open_conversation
from tests.realtime_schema import validate_server_event

pytestmark = pytest.mark.slow


async def test_each_response_create_after_an_assistant_message_gets_a_new_reply(embedded_server) -> None:
    conv = await open_conversation(embedded_server.ws)
    dones = []
    try:
        await conv.update_session(output_modalities=["text"], audio={"input": {"turn_detection": None}},
                                  instructions="Answer in one short sentence.")
        for role, kind, text in (("user", "input_text", "Name a fruit."), ("assistant", "output_text", "Apple.")):
            n = len(conv.events)
            await conv.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": role, "content": [{"type": kind, "text": text}]}})
            await conv.wait_for("conversation.item.done", after=n)
        # The first reply follows the client's assistant message; the second follows that reply (two in a row).
        for _ in range(2):
            n = len(conv.events)
            await conv.send({"type": "response.create"})
            dones.append(await conv.wait_for("response.done", after=n, timeout=120))
    finally:
        await conv.close()
    for done in dones:
        response = done["response"]
        assert response["status"] == "completed", response["status_details"]
        assert len(response["output"]) == 1, "the reply has no message"
        assert response["output"][0]["content"][0]["text"].strip()
    for raw in conv.raw:
        validate_server_event(raw)
