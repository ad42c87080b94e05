"""What a chat template adds to a prompt: role markers around each message, the reply's opening, and for function
tools what is measured by rendering the template.

Qwen2.5's template writes the tool schemas and a paragraph on how to call them into the system message (~140 tokens
for one small tool), wraps each call in <tool_call> markup and each result in <tool_response> (as a user turn). None
of it is a text of the conversation, so the budget counted none of it; measured once per tools list, it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["MESSAGE_OVERHEAD_TOKENS", "REPLY_OPENING_TOKENS", "TemplateCosts", "measure_template_costs"]

# Chat templates wrap each message in role markers: ChatML's "<|im_start|>role\n" ... "<|im_end|>\n" is 5 tokens.
MESSAGE_OVERHEAD_TOKENS: Final = 5
# The prompt ends by opening the reply, "<|im_start|>assistant\n" in ChatML: prompt tokens too.
REPLY_OPENING_TOKENS: Final = 3

Message = dict[str, object]
Render = Callable[[list[Message], list[Message] | None], str]  # (messages, tools) -> the prompt the LM reads


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateCosts:
    """Tokens a chat template adds to a conversation's texts (ChatML's by default).

    markers: per message, by role, the role markers around its texts (a role not named: MESSAGE_OVERHEAD_TOKENS);
    prompt: once per prompt, the reply's opening and what else the template always writes (a BOS, a default system
    message); tools: once per prompt (the tool schemas and their instructions, and what a backend adds after a tool
    result); call: per tool call (its markup); result: per tool result (its wrapper)."""

    markers: Mapping[str, int] = field(default_factory=dict)
    prompt: int = REPLY_OPENING_TOKENS
    tools: int = 0
    call: int = 0
    result: int = 0

    def message(self, role: str) -> int:
        """The role markers of a message of `role`."""
        return self.markers.get(role, MESSAGE_OVERHEAD_TOKENS)


def measure_template_costs(render: Render, count: Callable[[str], int], tools: list[Message], *, system: bool,
                           message_overhead: int) -> TemplateCosts:
    """The costs of `tools` in `render`'s template, as differences of rendered prompts' token counts. Blocking.

    system: whether the prompt has a system message (Qwen2.5's template writes a default one for the tools if not).
    message_overhead: what the conversation already counts per message (its role markers)."""
    head: list[Message] = [{"role": "system", "content": "Be brief."}] if system else []
    asked: list[Message] = [*head, {"role": "user", "content": "Hi."}]
    name, arguments, output = _sample_call(tools)
    call: Message = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}]}
    result: Message = {"role": "tool", "tool_call_id": "call_1", "content": output}
    then: Message = {"role": "user", "content": "Ok."}

    def tokens(messages: list[Message], with_tools: list[Message] | None = tools) -> int:
        return count(render(messages, with_tools))

    with_call = tokens([*asked, call])
    call_markup = with_call - tokens(asked) - message_overhead - count(name) - count(arguments)
    # A user turn after the result: a prompt that ends with one may get more (llama.cpp's tool_result_hint).
    result_markup = tokens([*asked, call, result, then]) - tokens([*asked, call, then]) - message_overhead \
        - count(output)
    after_result = tokens([*asked, call, result]) - with_call - message_overhead - count(output) - result_markup
    return TemplateCosts(tools=tokens(asked) - tokens(asked, None) + after_result, call=call_markup,
                         result=result_markup)


def _sample_call(tools: list[Message]) -> tuple[str, str, str]:
    """A call of the first tool, its arguments as the conversation counts them (as templates write JSON), and a
    short result."""
    function = tools[0].get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return str(name or "f"), json.dumps({"city": "Paris"}), "Sunny, 21 C."
