"""Conversation: edits, version counter, chat rendering and budget trimming (exact outputs)."""

from __future__ import annotations

import pytest

from context_manager import (
    DEFAULT_INSTRUCTIONS,
    AssistantMessage,
    Conversation,
    DuplicateItemError,
    FunctionCall,
    FunctionCallOutput,
    InvalidEditError,
    Persona,
    SystemMessage,
    UnknownItemError,
    UserMessage,
)
from context_manager.conversation import MESSAGE_OVERHEAD_TOKENS, REPLY_OPENING_TOKENS, ROOT


def words(text: str) -> int:
    """A test tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def conv_of(*items: object) -> Conversation:
    c = Conversation()
    for item in items:
        c.add(item)  # type: ignore[arg-type]
    return c


def test_add_insert_delete_and_version() -> None:
    c = Conversation()
    assert c.version == 0 and c.last_item_id() is None
    c.add(UserMessage(id="u1", text="hi"))
    c.add(AssistantMessage(id="a1", text="hello"))
    c.add(UserMessage(id="u0", text="first"), previous_item_id=ROOT)
    c.add(SystemMessage(id="s1", text="note"), previous_item_id="u1")
    assert [it.id for it in c.items] == ["u0", "u1", "s1", "a1"]
    assert c.version == 4
    assert c.previous_item_id("u1") == "u0" and c.previous_item_id("u0") is None
    assert c.last_item_id() == "a1" and "s1" in c and len(c) == 4
    assert c.delete("s1") == SystemMessage(id="s1", text="note")
    assert [it.id for it in c.items] == ["u0", "u1", "a1"] and c.version == 5


def test_illegal_edits_raise_and_leave_state_unchanged() -> None:
    c = conv_of(UserMessage(id="u1", text="hi"), FunctionCall(id="f1", call_id="c1", name="f", arguments="{}"))
    before = (c.items, c.version)
    with pytest.raises(DuplicateItemError):
        c.add(UserMessage(id="u1", text="again"))
    with pytest.raises(UnknownItemError):
        c.add(UserMessage(id="u2", text="x"), previous_item_id="nope")
    with pytest.raises(UnknownItemError):
        c.delete("nope")
    with pytest.raises(InvalidEditError):
        c.truncate("u1", "h")
    with pytest.raises(InvalidEditError):
        c.set_text("f1", "x")
    assert (c.items, c.version) == before


def test_truncate_and_set_text() -> None:
    c = conv_of(UserMessage(id="u1", text=""), AssistantMessage(id="a1", text="The weather is sunny today."))
    assert c.set_text("u1", "weather?") == UserMessage(id="u1", text="weather?")
    assert c.version == 3
    assert c.truncate("a1", "The weather is") == AssistantMessage(id="a1", text="The weather is")
    assert c.version == 4
    c.truncate("a1", "The weather is")  # no change: version stays
    assert c.version == 4


def test_messages_chat_format_with_tools() -> None:
    c = conv_of(
        UserMessage(id="u1", text="What time is it in Paris?"),
        AssistantMessage(id="a1", text="Let me check."),
        FunctionCall(id="f1", call_id="call_1", name="get_time", arguments='{"city": "Paris"}'),
        FunctionCall(id="f2", call_id="call_2", name="get_tz", arguments='{"city": "Paris"}'),
        FunctionCallOutput(id="o1", call_id="call_1", output='{"time": "12:00"}'),
        FunctionCallOutput(id="o2", call_id="call_2", output='{"tz": "CET"}'),
        AssistantMessage(id="a2", text="It is noon."),
        FunctionCall(id="f3", call_id="call_3", name="log", arguments="{}"),
    )
    assert c.messages("Be brief.", 10_000, words) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What time is it in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"city": "Paris"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "get_tz", "arguments": '{"city": "Paris"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"time": "12:00"}'},
        {"role": "tool", "tool_call_id": "call_2", "content": '{"tz": "CET"}'},
        {
            "role": "assistant",
            "content": "It is noon.",
            "tool_calls": [{"id": "call_3", "type": "function", "function": {"name": "log", "arguments": "{}"}}],
        },
    ]


def test_messages_skip_empty_texts_orphan_outputs_and_empty_instructions() -> None:
    c = conv_of(
        FunctionCallOutput(id="o0", call_id="ghost", output="x"),
        UserMessage(id="u1", text="hi"),
        AssistantMessage(id="a1", text=""),
        UserMessage(id="u2", text=""),
        FunctionCall(id="f1", call_id="c1", name="f", arguments="{}"),
        SystemMessage(id="s1", text="Speak French now."),
    )
    assert c.messages("", 10_000, words) == [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "system", "content": "Speak French now."},
    ]


def _history() -> Conversation:
    return conv_of(
        UserMessage(id="u1", text="one two three"),  # 5 + 3 = 8
        AssistantMessage(id="a1", text="four five"),  # 5 + 2 = 7
        UserMessage(id="u2", text="six"),  # 6
        AssistantMessage(id="a2", text="seven"),  # 6
        UserMessage(id="u3", text="eight nine"),  # 7
    )


def test_budget_drops_oldest_whole_turns() -> None:
    assert (MESSAGE_OVERHEAD_TOKENS, REPLY_OPENING_TOKENS) == (5, 3)
    c = _history()
    system = {"role": "system", "content": "Be brief."}  # 5 + 2 = 7
    # everything: 3 (the reply's opening) + 7 + 15 + 12 + 7 = 44
    assert len(c.messages("Be brief.", 44, words)) == 6
    assert c.messages("Be brief.", 43, words) == [
        system,
        {"role": "user", "content": "six"},
        {"role": "assistant", "content": "seven"},
        {"role": "user", "content": "eight nine"},
    ]
    assert len(c.messages("Be brief.", 29, words)) == 4  # 3 + 7 + 12 + 7 fits exactly
    assert c.messages("Be brief.", 28, words) == [system, {"role": "user", "content": "eight nine"}]
    # the newest turn is kept even when it alone is over budget
    assert c.messages("Be brief.", 1, words) == [system, {"role": "user", "content": "eight nine"}]


def test_budget_never_splits_a_call_from_its_output() -> None:
    c = conv_of(
        UserMessage(id="u1", text="old question"),
        AssistantMessage(id="a1", text="old answer"),
        UserMessage(id="u2", text="book it"),
        FunctionCall(id="f1", call_id="c1", name="book", arguments="{}"),
        # the user speaks before the tool result arrives: the output lands in a later turn
        UserMessage(id="u3", text="hurry"),
        FunctionCallOutput(id="o1", call_id="c1", output="done"),
        AssistantMessage(id="a2", text="Booked."),
    )
    full = c.messages("", 10_000, words)
    # turn u1 costs 14; the merged turn u2..a2 costs 7 + (5+1+1) + 6 + 6 + 6 = 32; the reply's opening 3
    assert len(full) == 7
    assert c.messages("", 49, words) == full
    trimmed = c.messages("", 48, words)
    assert trimmed == full[2:]
    assert trimmed[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "book", "arguments": "{}"}}],
    }
    # even with a tiny budget the call stays with its output (one merged turn)
    assert c.messages("", 1, words) == full[2:]


def test_persona_default() -> None:
    assert DEFAULT_INSTRUCTIONS == (
        "You are a helpful voice assistant. Answer in one or two short spoken sentences. No lists or markdown."
    )
    assert Persona().instructions == DEFAULT_INSTRUCTIONS
