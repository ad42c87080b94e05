"""What a session asks its chat LM: the session's function tools and tool_choice as the chat LM takes them, and a
reply's request."""

from __future__ import annotations

from context_manager.conversation import Message
from controller.realtime.session_config import SessionConfig, ToolChoiceFunction
from controller.response_settings import ResponseSettings
from lm_engine.chat import ChatRequest

# A reply's length when no max_output_tokens is set (as SessionDefaults' default): a reply stopped here ends
# incomplete (max_output_tokens); about a minute of speech, well inside every profile's context, and a small model
# that loops stops there.
MAX_REPLY_TOKENS = 256


def tools_for_chat(cfg: SessionConfig) -> list[Message] | None:
    if not cfg.tools or cfg.tool_choice == "none":
        return None
    return [t.to_chat() for t in cfg.tools]


def tool_choice_for_chat(cfg: SessionConfig) -> str | dict[str, object]:
    choice = cfg.tool_choice
    if isinstance(choice, ToolChoiceFunction):
        return {"type": "function", "function": {"name": choice.name}}
    return choice


def reply_request(cfg: SessionConfig, settings: ResponseSettings, messages: list[Message]) -> ChatRequest | None:
    """A reply's request for its prompt `messages`; None when there are none."""
    if not messages:  # no instructions and nothing said (or response.input []): nothing to answer, as a silent turn
        return None
    return ChatRequest(messages=messages, tools=tools_for_chat(cfg), tool_choice=tool_choice_for_chat(cfg),
                       temperature=settings.temperature, max_tokens=settings.max_output_tokens or MAX_REPLY_TOKENS)
