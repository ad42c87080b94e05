"""A long conversation at its token budget keeps the prompt's start for several turns (the LM's prefix cache holds
it), instead of dropping one turn per reply, which changed the prompt's first tokens every turn and made every reply
evaluate the whole history again (tiny profile, 2 CPUs: first audio 5.6-7 s instead of 0.8 s)."""

from __future__ import annotations

from context_manager import AssistantMessage, Conversation, UserMessage
from context_manager.conversation import MESSAGE_OVERHEAD_TOKENS, REPLY_OPENING_TOKENS


def words(text: str) -> int:
    return len(text.split())


def prompt_tokens(messages: list[dict]) -> int:
    return REPLY_OPENING_TOKENS + sum(MESSAGE_OVERHEAD_TOKENS + words(m["content"]) for m in messages)


def _turn_text(i: int, who: str) -> str:
    return " ".join(f"{who}{i}w{k}" for k in range(56))  # 56 words + 5 overhead = 61 tokens a message


def test_prompt_start_changes_rarely_once_at_the_budget() -> None:
    c = Conversation()
    budget, keep_below = 1500, 1100
    starts, prompts = [], []
    for i in range(60):
        c.add(UserMessage(id=f"u{i}", text=_turn_text(i, "u")))
        msgs = c.messages("Be brief.", budget, words, keep_below=keep_below)
        total = prompt_tokens(msgs)
        assert total <= budget
        assert msgs[-1]["content"] == _turn_text(i, "u")  # the newest turn is always there
        starts.append(msgs[1]["content"])
        prompts.append(msgs)
        c.add(AssistantMessage(id=f"a{i}", text=_turn_text(i, "a")))
    changes = sum(1 for a, b in zip(starts, starts[1:]) if a != b)
    # 122 tokens a turn: from 1500 down to 1100 frees three turns, so the start moves about every fourth turn
    assert 0 < changes <= 60 // 3, changes
    # between two changes, each prompt extends the one before it (same first messages)
    for prev, cur in zip(prompts, prompts[1:]):
        if prev[1] == cur[1]:
            assert cur[:len(prev)] == prev


def test_keep_below_forgets_a_deleted_start_and_default_is_unchanged() -> None:
    c = Conversation()
    for i in range(30):
        c.add(UserMessage(id=f"u{i}", text=_turn_text(i, "u")))
        c.add(AssistantMessage(id=f"a{i}", text=_turn_text(i, "a")))
    kept = c.messages("", 1500, words, keep_below=1100)
    first_id = f"u{int(kept[0]['content'].split('w')[0][1:])}"
    c.delete(first_id)
    again = c.messages("", 1500, words, keep_below=1100)
    assert prompt_tokens(again) <= 1100
    # without keep_below: the fewest turns dropped, as before
    plain = c.messages("", 1500, words)
    assert 1500 - 122 < prompt_tokens(plain) <= 1500
