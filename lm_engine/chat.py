"""The chat-backend port: what the controller asks of any text LM (in-process llama.cpp, remote OpenAI server).

Messages and tools are plain OpenAI chat-format dicts, because that is what both the Realtime protocol's
function tools and every backend already speak; converting them into our own types would only add a mapping
layer with nothing to validate.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "cancelled"})
_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


class ChatRequestError(ValueError):
    """A ChatRequest was built with invalid values (caller misuse)."""


class ChatBackendError(RuntimeError):
    """The backend failed or rejected a request (model missing, prompt longer than the context, server error)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """One chat completion request.

    Attributes:
        messages: OpenAI chat messages (role system/user/assistant/tool; assistant messages may carry
            `tool_calls`, tool messages carry `tool_call_id`).
        tools: OpenAI function tools (`{"type": "function", "function": {name, description, parameters}}`).
        temperature: sampling temperature; 0 means greedy.
        max_tokens: cap on generated tokens; the reply ends with finish_reason "length" when it is reached.
        stop: extra stop strings.
        tool_choice: whether and which tool the model must call (OpenAI semantics).
    """

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    temperature: float = 0.7
    max_tokens: int = 512
    stop: list[str] = field(default_factory=list)
    # OpenAI tool_choice: "auto" | "none" | "required" | {"type": "function", "function": {"name": ...}}
    tool_choice: str | dict[str, Any] = "auto"

    def __post_init__(self) -> None:
        if not self.messages:
            raise ChatRequestError("messages must not be empty")
        for index, message in enumerate(self.messages):
            if message.get("role") not in _ROLES:
                raise ChatRequestError(f"messages[{index}] has role {message.get('role')!r}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ChatRequestError(f"temperature must be in [0, 2], got {self.temperature}")
        if self.max_tokens < 1:
            raise ChatRequestError(f"max_tokens must be >= 1, got {self.max_tokens}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallDelta:
    """A piece of a streamed function call. The first delta of a call carries call_id and name; later ones
    (same call_id) carry only more of the JSON arguments string."""

    call_id: str
    name: str
    arguments_delta: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatUsage:
    """Tokens one reply cost, as the LM counted them (the final delta carries it when the backend knows it)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    prompt_audio_tokens: int = 0  # prompt tokens that are audio (Step-Audio's <audio_N>), part of prompt_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatDelta:
    """One streamed step of a reply: text, a tool-call piece, or the final delta (finish_reason set)."""

    text: str = ""
    tool_call: ToolCallDelta | None = None
    finish_reason: str | None = None
    usage: ChatUsage | None = None

    def __post_init__(self) -> None:
        if self.finish_reason is not None and self.finish_reason not in FINISH_REASONS:
            raise ChatRequestError(f"unknown finish_reason {self.finish_reason!r}")


class ChatBackend(Protocol):
    """A text LM the controller can stream replies from."""

    def stream(self, request: ChatRequest, cancel: threading.Event) -> Iterator[ChatDelta]:
        """Stream the reply to `request`. Blocking; called on a worker thread.

        The last delta has `finish_reason` set. Once `cancel` is set the iterator stops promptly and its last
        delta has finish_reason "cancelled". A backend that queues requests yields an empty delta first, when the LM
        takes the request (a reply cancelled before that cost the LM nothing).
        """
        ...

    def close(self) -> None:
        """Stop the replies in flight and release what the backend holds (threads, listeners, connections).
        Blocking; the backend is unusable afterwards."""
        ...


@runtime_checkable
class PrefillBackend(Protocol):
    """A ChatBackend whose prompt cache the controller can warm (llama.cpp's slots; a remote server's is not ours)."""

    def prefill(self, request: ChatRequest, cancel: threading.Event | None = None) -> None:
        """Evaluate the request's prompt into the cache, generating (almost) nothing. Blocking; errors are raised."""
