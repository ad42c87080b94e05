"""The conversation: ordered items with ids, edits, and rendering to chat messages under a budget.

Rules:
- Item ids are unique; the caller (the session) assigns them. `add` appends, inserts after
  `previous_item_id`, or at the start when that is ROOT ("root", as in the Realtime API).
- `version` increases by one on every change that alters an item or the order, and only then;
  a speculative reply compares it to learn whether its context is still current.
- Rendering (OpenAI chat format): system instructions first; user/assistant/system items as
  messages; consecutive function calls join the preceding assistant message as `tool_calls`;
  outputs become role "tool" messages. Empty texts are skipped (a reply cut before any word was
  heard says nothing). An output whose call is not rendered before it is dropped: chat format
  cannot express a tool result without its call. A call's arguments always reach the LM as JSON:
  chat templates parse them, so a client's call item with none ("") or with plain text would fail
  every later reply; "" is rendered as "{}", other text as a JSON string.
- Budget: the history is split into turns, each starting at a user message; a turn holding a
  function output is merged with the turn holding its call, so dropping never splits them. The
  oldest turns are dropped until the total fits; the newest turn and the instructions are always
  kept, even if they alone exceed the budget (the engine then reports the overflow).
- Token cost of a message = TemplateCosts.message(role) (MESSAGE_OVERHEAD_TOKENS unless the template says)
  + count_tokens(content) + for each tool call count_tokens(name) + count_tokens(arguments as templates
  write them) + TemplateCosts.call, + TemplateCosts.result for a tool result; the prompt also pays
  TemplateCosts.prompt (REPLY_OPENING_TOKENS unless the template says) and TemplateCosts.tools (the tool
  schemas) once. count_tokens is the LM's own tokenizer where the server has it, and TemplateCosts measured
  on its chat template: the prompt the LM reads is then within the budget.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from context_manager.template_costs import MESSAGE_OVERHEAD_TOKENS, REPLY_OPENING_TOKENS, TemplateCosts

__all__ = [
    "ROOT",
    "MESSAGE_OVERHEAD_TOKENS",
    "REPLY_OPENING_TOKENS",
    "UserMessage",
    "AssistantMessage",
    "SystemMessage",
    "FunctionCall",
    "FunctionCallOutput",
    "Item",
    "Conversation",
    "ConversationError",
    "UnknownItemError",
    "DuplicateItemError",
    "InvalidEditError",
]

ROOT: Final = "root"


@dataclass(frozen=True, slots=True, kw_only=True)
class UserMessage:
    id: str
    text: str  # typed text, or the transcript of spoken audio ("" until transcribed)


@dataclass(frozen=True, slots=True, kw_only=True)
class AssistantMessage:
    id: str
    text: str  # for audio replies: the transcript (cut to what was heard after a barge-in)
    complete: bool = True  # False: the reply was cut short (cancelled, interrupted, failed or out of tokens)


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemMessage:
    id: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionCall:
    id: str
    call_id: str
    name: str
    arguments: str  # JSON text, as the model produced it
    complete: bool = True  # False: cut off mid-arguments (its reply cancelled, or out of tokens)


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionCallOutput:
    id: str
    call_id: str
    output: str


Item = UserMessage | AssistantMessage | SystemMessage | FunctionCall | FunctionCallOutput
Message = dict[str, object]


class ConversationError(Exception):
    """Base of conversation edit errors (the session maps them to Realtime errors)."""


class UnknownItemError(ConversationError, LookupError):
    """No item has that id."""


class DuplicateItemError(ConversationError, ValueError):
    """An item with that id already exists."""


class InvalidEditError(ConversationError, ValueError):
    """The edit does not apply to that kind of item (e.g. truncating a user message)."""


class Conversation:
    """Ordered conversation items; every change bumps `version`."""

    def __init__(self) -> None:
        self._items: list[Item] = []
        self._version = 0
        self._keep_from: str | None = None  # messages(keep_below=...): the first item of the oldest turn kept

    @property
    def version(self) -> int:
        return self._version

    @property
    def items(self) -> tuple[Item, ...]:
        return tuple(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return any(it.id == item_id for it in self._items)

    def get(self, item_id: str) -> Item:
        return self._items[self._index(item_id)]

    def last_item_id(self) -> str | None:
        return self._items[-1].id if self._items else None

    def previous_item_id(self, item_id: str) -> str | None:
        """Id of the item just before `item_id` (None when it is first), for *.added events."""
        i = self._index(item_id)
        return self._items[i - 1].id if i > 0 else None

    def add(self, item: Item, *, previous_item_id: str | None = None) -> None:
        """Append `item`, or insert it after `previous_item_id` (ROOT: at the start).

        Raises:
            DuplicateItemError: the id is taken.  UnknownItemError: previous_item_id not found.
        """
        if item.id in self:
            raise DuplicateItemError(f"item {item.id!r} already exists")
        if previous_item_id is None:
            at = len(self._items)
        elif previous_item_id == ROOT:
            at = 0
        else:
            at = self._index(previous_item_id) + 1
        self._items.insert(at, item)
        self._version += 1

    def delete(self, item_id: str) -> Item:
        item = self._items.pop(self._index(item_id))
        self._version += 1
        return item

    def set_text(self, item_id: str, text: str) -> Item:
        """Replace a message's text (a transcript arrived, a reply finished streaming)."""
        i = self._index(item_id)
        item = self._items[i]
        if not isinstance(item, (UserMessage, AssistantMessage, SystemMessage)):
            raise InvalidEditError(f"item {item_id!r} is a {type(item).__name__}, not a message")
        if item.text != text:
            item = dataclasses.replace(item, text=text)
            self._items[i] = item
            self._version += 1
        return item

    def truncate(self, item_id: str, heard_text: str) -> AssistantMessage:
        """Keep only what the user heard of an assistant reply (see clients.heard.truncate_text_to_heard)."""
        item = self.get(item_id)
        if not isinstance(item, AssistantMessage):
            raise InvalidEditError(f"only assistant messages can be truncated, {item_id!r} is a {type(item).__name__}")
        result = self.set_text(item_id, heard_text)
        assert isinstance(result, AssistantMessage)  # set_text keeps the item's type
        return result

    def messages(self, instructions: str, budget_tokens: int, count_tokens: Callable[[str], int],
                 overrides: Mapping[str, str] | None = None, *, keep_below: int | None = None,
                 template: TemplateCosts = TemplateCosts()) -> list[Message]:
        """The chat-format prompt, oldest whole turns dropped to fit `budget_tokens`.

        `overrides` replaces the content of the named messages in this prompt only: the turn being
        answered may reach the LM as audio tokens while the conversation keeps its transcript.

        `keep_below` (< budget_tokens): when the prompt is over budget, drop oldest turns until it is within
        `keep_below`, and keep starting at that turn while the prompt fits the budget. The prompt's start then
        stays the same for several turns, so the LM's prefix cache still holds it (dropping one turn at a time
        changes the prompt's first tokens every turn: the whole history is evaluated again for each reply).

        `template`: what the LM's chat template adds for tools, counted as the prompt's (see TemplateCosts).
        """
        head, turns, rendered = self._rendered(instructions, overrides)

        def cost(m: Message) -> int:
            return _cost(m, count_tokens, template)

        costs = [sum(cost(m) for m in turn) for turn in rendered]
        total = prompt_tokens(head, count_tokens, template) + sum(costs)
        start = 0
        if keep_below is not None and self._keep_from is not None:
            first = [i for i, turn in enumerate(turns) if turn[0].id == self._keep_from]
            if first:  # else that turn was deleted: start again from the oldest
                start = min(first[0], len(rendered) - 1)
                total -= sum(costs[:start])
        if total > budget_tokens:
            target = budget_tokens if keep_below is None else min(keep_below, budget_tokens)
            while total > target and start < len(rendered) - 1:
                total -= costs[start]
                start += 1
        if keep_below is not None:
            self._keep_from = turns[start][0].id if start < len(turns) else None
        out = head
        for turn in rendered[start:]:
            out.extend(turn)
        return out

    def prompt_texts(self, instructions: str, overrides: Mapping[str, str] | None = None) -> list[str]:
        """Every text that messages() with these arguments gives to count_tokens: count them ahead (off the event
        loop, where the LM's tokenizer is slow) and messages() then only looks them up."""
        head, _, rendered = self._rendered(instructions, overrides)
        return prompt_texts_of(head + [m for turn in rendered for m in turn])

    def _rendered(self, instructions: str, overrides: Mapping[str, str] | None
                  ) -> tuple[list[Message], list[list[Item]], list[list[Message]]]:
        head: list[Message] = [{"role": "system", "content": instructions}] if instructions else []
        turns = _turns(self._items)
        return head, turns, [_render(turn, overrides or {}) for turn in turns]

    def _index(self, item_id: str) -> int:
        for i, it in enumerate(self._items):
            if it.id == item_id:
                return i
        raise UnknownItemError(f"no item with id {item_id!r}")


def _turns(items: list[Item]) -> list[list[Item]]:
    """Split at user messages; merge the turns between a call and its output into one."""
    turns: list[list[Item]] = []
    turn_of_call: dict[str, int] = {}
    for it in items:
        if isinstance(it, UserMessage) or not turns:
            if not turns or turns[-1]:
                turns.append([])
        if isinstance(it, FunctionCallOutput):
            k = turn_of_call.get(it.call_id)
            if k is not None and k < len(turns) - 1:
                merged = [x for t in turns[k:] for x in t]
                del turns[k:]
                turns.append(merged)
                for x in merged:
                    if isinstance(x, FunctionCall):
                        turn_of_call[x.call_id] = k
        turns[-1].append(it)
        if isinstance(it, FunctionCall):
            turn_of_call[it.call_id] = len(turns) - 1
    return turns


def _render(items: list[Item], overrides: Mapping[str, str]) -> list[Message]:
    out: list[Message] = []
    called: set[str] = set()
    for it in items:
        if isinstance(it, (UserMessage, AssistantMessage, SystemMessage)):
            text = overrides.get(it.id, it.text)
            if text:
                role = (
                    "user"
                    if isinstance(it, UserMessage)
                    else "assistant"
                    if isinstance(it, AssistantMessage)
                    else "system"
                )
                out.append({"role": role, "content": text})
        elif isinstance(it, FunctionCall):
            called.add(it.call_id)
            call = {"id": it.call_id, "type": "function",
                    "function": {"name": it.name, "arguments": _json_arguments(it.arguments)}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                calls = last.setdefault("tool_calls", [])
                assert isinstance(calls, list)
                calls.append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif it.call_id in called:
            out.append({"role": "tool", "tool_call_id": it.call_id, "content": it.output})
    return out


def _json_arguments(arguments: str) -> str:
    if not arguments.strip():
        return "{}"
    try:
        json.loads(arguments)
    except ValueError:
        return json.dumps(arguments)
    return arguments


def prompt_texts_of(messages: list[Message]) -> list[str]:
    """Every text prompt_tokens() gives to count_tokens for these messages: count them ahead off the event loop."""
    return [text for m in messages for text in _counted_texts(m)]


def prompt_tokens(messages: list[Message], count_tokens: Callable[[str], int], template: TemplateCosts) -> int:
    """The tokens of a prompt as messages() counts them against the budget: its texts, each message's markup and
    what the template writes once (its tools block, the reply's opening)."""
    return template.prompt + template.tools + sum(_cost(m, count_tokens, template) for m in messages)


def _counted_texts(m: Message) -> list[str]:
    """The texts of a message that count against the budget: its content, each tool call's name and arguments."""
    content = m.get("content")
    texts = [content] if isinstance(content, str) else []
    calls = m.get("tool_calls")
    if isinstance(calls, list):
        for c in calls:
            texts += [c["function"]["name"], _as_templates_write(c["function"]["arguments"])]
    return texts


def _as_templates_write(arguments: str) -> str:
    """A call's (JSON) arguments as chat templates write them: parsed, then written with a space after each ':' and
    ',' (Qwen2.5's tojson), so that compact arguments reach the LM longer than they were sent (70 tokens, not 58,
    for six short keys)."""
    return json.dumps(json.loads(arguments), ensure_ascii=False)


def _cost(m: Message, count_tokens: Callable[[str], int], template: TemplateCosts) -> int:
    calls = m.get("tool_calls")
    markup = template.call * len(calls) if isinstance(calls, list) else 0
    if m["role"] == "tool":
        markup += template.result
    return template.message(str(m["role"])) + markup + sum(count_tokens(text) for text in _counted_texts(m))
