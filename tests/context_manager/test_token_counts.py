"""TokenCounts: the LM's tokenizer is asked once per text, and the cache stays bounded."""

from __future__ import annotations

from context_manager import AssistantMessage, Conversation, FunctionCall, TokenCounts, UserMessage


class Counter:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, text: str) -> int:
        self.asked.append(text)
        return len(text.split())


def test_each_text_is_counted_once_until_it_is_no_longer_retained() -> None:
    counter = Counter()
    counts = TokenCounts(counter)
    assert [counts("a b"), counts("a b"), counts("c")] == [2, 2, 1]
    assert counter.asked == ["a b", "c"]
    counts.retain(["a b", "d e f"])
    assert counts.missing(["a b", "c", "d e f", "c"]) == ["c", "d e f"]
    assert counts("a b") == 2 and counter.asked == ["a b", "c"]


def test_texts_counted_elsewhere_are_looked_up_by_the_prompt() -> None:
    c = Conversation()
    c.add(UserMessage(id="u1", text="book a table"))
    c.add(FunctionCall(id="f1", call_id="c1", name="book", arguments=""))
    c.add(AssistantMessage(id="a1", text="Done."))
    counter = Counter()
    counts = TokenCounts(counter)
    texts = c.prompt_texts("Be brief.", {"u1": "<audio_1>"})
    assert texts == ["Be brief.", "<audio_1>", "", "book", "{}", "Done."]
    counts.store(counts.count(counts.missing(texts)))
    asked = list(counter.asked)
    c.messages("Be brief.", 1500, counts, {"u1": "<audio_1>"})
    assert counter.asked == asked  # nothing counted again
