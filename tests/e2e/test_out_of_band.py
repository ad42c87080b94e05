"""response.create with conversation "none" and an explicit `input`: an out-of-band reply."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import open_conversation
from tests.realtime_schema import validate_server_event

pytestmark = pytest.mark.slow


async def test_out_of_band_reply_uses_the_given_input_and_stays_out_of_the_conversation(embedded_server) -> None:
    conv = await open_conversation(embedded_server.ws)
    try:
        await conv.send({"type": "session.update", "session": {
            "type": "realtime", "temperature": 0.0, "audio": {"input": {"turn_detection": None}}}})
        await conv.send({"type": "conversation.item.create", "item": {
            "id": "item_fact", "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "My name is Ada."}]}})
        await conv.wait_for("conversation.item.done")
        n = len(conv.events)
        await conv.send({"type": "response.create", "response": {
            "conversation": "none", "output_modalities": ["text"],
            "input": [{"type": "item_reference", "id": "item_fact"},
                      {"type": "message", "role": "user",
                       "content": [{"type": "input_text", "text": "What is my name? Answer with the name only."}]}]}})
        done = await conv.wait_for("response.done", after=n, timeout=120)
        reply_item = done["response"]["output"][0]["id"]
        await conv.send({"type": "conversation.item.retrieve", "item_id": reply_item})
        missing = await conv.wait_for("error", after=n, timeout=10)
    finally:
        await conv.close()
    assert done["response"]["status"] == "completed"
    text = [e["text"] for e in conv.events[n:] if e["type"] == "response.output_text.done"]
    assert text and "ada" in text[-1].lower()
    # Out of band: the reply never joined the conversation.
    assert not [e for e in conv.events[n:] if e["type"] in ("conversation.item.added", "conversation.item.done")]
    assert missing["error"]["code"] == "item_not_found"
    for raw in conv.raw:
        validate_server_event(raw)


async def test_a_user_audio_item_sent_whole_is_transcribed_and_answered(embedded_server, beckett_wav) -> None:
    import base64

    from tests.e2e.helpers import RATE, load_pcm24k, to_pcm16

    speech = load_pcm24k(beckett_wav)[: int(2.9 * RATE)]
    conv = await open_conversation(embedded_server.ws)
    try:
        # One short sentence: without it the 0.5B model sometimes writes an essay that reaches the server's
        # 256-token cap, and a reply cut there is `incomplete` (seen once in CI).
        await conv.update_session(instructions="Answer in one short sentence.",
                                  audio={"input": {"turn_detection": None}})
        await conv.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_audio", "audio": base64.b64encode(to_pcm16(speech)).decode()}]}})
        await conv.send({"type": "response.create"})
        heard = await conv.wait_for("conversation.item.input_audio_transcription.completed", timeout=60)
        done = await conv.wait_for("response.done", timeout=120)
    finally:
        await conv.close()
    assert "ever tried" in heard["transcript"].lower()
    assert done["response"]["status"] == "completed" and conv.of_type("response.output_audio.delta")
    # The reply's output came after the transcript: the model was answering what was said. (response.created may
    # come first: a reply the client asked for is announced at once, before its prompt waits for the transcript.)
    assert conv.events.index(heard) < conv.events.index(conv.of_type("response.output_item.added")[0])
    for raw in conv.raw:
        validate_server_event(raw)
