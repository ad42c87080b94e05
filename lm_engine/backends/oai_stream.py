"""Pure translation of OpenAI `chat.completion.chunk` dicts into our ChatDeltas.

Shared by every backend that speaks the OpenAI chat format (in-process llama.cpp, a remote server).

Small models often answer a tool request with a bare JSON object (`{"name": ..., "arguments": {...}}`) instead of
the `<tool_call>` tags their chat template asks for, so the server's tool parser sees plain text. When the
request has tools, `OaiChunkTranslator` therefore holds back a reply that *starts* like JSON (or like a tool-call
tag or a code fence) and, at the end, turns it into tool calls if it parses as calls to known tools. Text that
starts any other way streams through untouched, so normal answers lose no latency.
"""
from __future__ import annotations

import json
import re
import uuid
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from lm_engine.chat import ChatDelta, ChatRequest, ChatUsage, ToolCallDelta

_FINISH_MAP = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls"}
# A reply that begins with one of these may be a tool call written as text.
_CALL_OPENERS = ("{", "<tool_call>", "```")
_TAG_RE = re.compile(r"</?tool_call>|```(?:json)?")


def chat_completion_body(request: ChatRequest, **extra: Any) -> dict[str, Any]:
    """The streamed /v1/chat/completions request body for `request`; `extra` adds or replaces fields."""
    body: dict[str, Any] = {
        "messages": request.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
    }
    if request.stop:
        body["stop"] = list(request.stop)
    if request.tools:
        body["tools"] = request.tools
        body["tool_choice"] = request.tool_choice
    return body | extra


def tool_names(request: ChatRequest) -> list[str]:
    """The names of the request's tools (Chat Completions nests them under "function", the Realtime API does not)."""
    return [name for tool in request.tools or ()
            if isinstance(name := (tool.get("function") or {}).get("name") or tool.get("name"), str)]


class OaiStreamError(RuntimeError):
    """The server answered with an error object instead of chunks (e.g. the prompt exceeds the context)."""

    def __init__(self, message: str, code: int | None = None, error_type: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.error_type = error_type


class OaiChunkTranslator:
    """Stateful translator for one streamed reply: `feed(chunk)` per chunk dict, then `finish()` once."""

    def __init__(self, tool_names: Iterable[str] | None) -> None:
        self._tool_names = frozenset(tool_names or ())
        self._sniff = bool(self._tool_names)
        self._held = ""            # text held back while it may still be a textual tool call
        self._holding = False      # the reply started like a tool call: hold everything until the end
        self._native_calls: dict[int, tuple[str, str]] = {}  # OpenAI tool_calls index -> (call_id, name)
        self._finish: str | None = None
        self._usage: ChatUsage | None = None
        self.complete = False  # the held reply is a tool call followed by other text: nothing more is needed

    def feed(self, chunk: dict[str, Any]) -> list[ChatDelta]:
        """Translate one chunk dict. Raises OaiStreamError for an error object."""
        error = chunk.get("error")
        if error is not None:
            if isinstance(error, dict):
                raise OaiStreamError(str(error.get("message", error)), error.get("code"), error.get("type"))
            raise OaiStreamError(str(error))
        out: list[ChatDelta] = []
        usage = chunk.get("usage")
        if isinstance(usage, dict):  # the last chunk, when asked for with stream_options.include_usage
            self._usage = _usage(usage)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                out.extend(self._on_text(content))
            for call in delta.get("tool_calls") or ():
                out.extend(self._on_native_call(call))
            reason = choice.get("finish_reason")
            if reason:
                self._finish = _FINISH_MAP.get(reason, "stop")
        return out

    def finish(self) -> list[ChatDelta]:
        """Flush what was held back and return the closing delta(s); the last has finish_reason set. Calls make it
        "tool_calls", unless the reply was cut at max_tokens: that stays "length" (the calls before the cut are
        whole, but the reply is incomplete, as the Realtime API reports a response stopped at max_output_tokens)."""
        reason = self._finish or "stop"
        cut = reason == "length"
        if self._native_calls and not cut:
            reason = "tool_calls"
        out: list[ChatDelta] = []
        if self._held:
            # dict.fromkeys: a call written twice is the model repeating itself, not a second call to run
            calls = list(dict.fromkeys(_leading_calls(self._held, self._tool_names)[0])) if self._holding else None
            if calls:
                for name, arguments in calls:
                    out.append(ChatDelta(tool_call=ToolCallDelta(
                        call_id=_new_call_id(), name=name, arguments_delta=arguments)))
                reason = reason if cut else "tool_calls"
            elif text := _salvage_text(self._held) if self._holding else self._held:
                out.append(ChatDelta(text=text))
            self._held = ""
        out.append(ChatDelta(finish_reason=reason, usage=self._usage))
        return out

    def _on_text(self, content: str) -> list[ChatDelta]:
        if not self._sniff:
            return [ChatDelta(text=content)]
        self._held += content
        if self._holding:
            # A small model under tool_choice "required" writes the call, then more (".json", made-up calls, the same
            # call again in ```json fences) until max_tokens: once a call is followed by anything that is not another
            # call, or by a call already written, the reply is decided.
            calls, rest = _leading_calls(self._held, self._tool_names)
            self.complete = ((bool(calls) and bool(rest) and not rest.startswith(("{", "<", "`")))
                             or len(set(calls)) < len(calls) or _json_then_blank_lines(self._held))
            return []
        head = self._held.lstrip()
        if not head:
            return []
        if any(head.startswith(o) for o in _CALL_OPENERS):
            self._holding = True
            return []
        if any(o.startswith(head) for o in _CALL_OPENERS):
            return []  # a prefix such as "<tool" or "``": undecided yet
        # Plain text: stop sniffing for the rest of the reply.
        self._sniff = False
        text, self._held = self._held, ""
        return [ChatDelta(text=text)]

    def _on_native_call(self, call: dict[str, Any]) -> list[ChatDelta]:
        index = int(call.get("index", 0))
        function = call.get("function") or {}
        if index not in self._native_calls:
            call_id = call.get("id") or _new_call_id()
            self._native_calls[index] = (call_id, function.get("name") or "")
        call_id, name = self._native_calls[index]
        if function.get("name") and not name:
            name = function["name"]
            self._native_calls[index] = (call_id, name)
        return [ChatDelta(tool_call=ToolCallDelta(
            call_id=call_id, name=name, arguments_delta=function.get("arguments") or ""))]


END = object()  # a producer thread puts this after its last chunk
TAKEN = object()  # ... and this when the LM takes the request (the consumer yields an empty delta: see drain)
_POLL_S = 0.01  # how often the consumer re-checks `cancel` while waiting for the next chunk


def drain(chunks: queue.Queue[object], cancel: threading.Event, translator: OaiChunkTranslator,
          failure: Callable[[BaseException | str], Exception]) -> Iterator[ChatDelta]:
    """The consumer side of a backend's stream: chunk dicts put on `chunks` by a producer thread -> deltas.

    Stops at END; an exception put on the queue, or a chunk the translator rejects, is raised as
    `failure(cause)`. Once `cancel` is set it returns at once with finish_reason "cancelled" (the
    producer is told to stop by its owner, in the caller's `finally`).
    """
    while True:
        if cancel.is_set():
            yield ChatDelta(finish_reason="cancelled")
            return
        try:
            item = chunks.get(timeout=_POLL_S)
        except queue.Empty:
            continue
        if item is END:
            break
        if item is TAKEN:  # out of the queue: the LM reads the prompt now (a reply cancelled before read none)
            yield ChatDelta()
            continue
        if isinstance(item, BaseException):
            error = failure(item)
            if error is item:  # already the backend's own error
                raise error
            raise error from item
        if not isinstance(item, dict):
            raise failure(f"unexpected item on the stream: {item!r}")
        try:
            deltas = translator.feed(item)
        except OaiStreamError as exc:
            raise failure(exc) from exc
        yield from deltas
        if translator.complete:  # the caller's finally stops the producer
            break
    if cancel.is_set():
        yield ChatDelta(finish_reason="cancelled")
        return
    yield from translator.finish()


def _usage(usage: dict[str, Any]) -> ChatUsage | None:
    try:
        details = usage.get("prompt_tokens_details") or {}
        return ChatUsage(prompt_tokens=int(usage["prompt_tokens"]), completion_tokens=int(usage["completion_tokens"]),
                         cached_tokens=int(details.get("cached_tokens") or 0))
    except (KeyError, TypeError, ValueError):
        return None


def _new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _leading_calls(text: str, tool_names: frozenset[str]) -> tuple[list[tuple[str, str]], str]:
    """The calls to known tools a held reply starts with: `{"name": ..., "arguments": {...}}` objects (optionally
    inside tool-call tags or a code fence) separated by whitespace or commas, as (name, arguments JSON) pairs, and
    the text after them (what follows the calls is dropped: it is not spoken)."""
    body = _TAG_RE.sub(" ", text).strip()
    decoder = json.JSONDecoder()
    calls: list[tuple[str, str]] = []
    pos = 0
    while pos < len(body):
        try:
            obj, end = decoder.raw_decode(body, pos)
        except json.JSONDecodeError:
            break
        call = _as_call(obj, tool_names)
        if call is None:
            break
        calls.append(call)
        pos = end
        while pos < len(body) and body[pos] in " \t\r\n,":
            pos += 1
    return calls, body[pos:]


# Blank lines after a finished call: the same small model, having written its call, often writes newlines until
# max_tokens instead of stopping (minutes on a busy CPU, the LM's one slot held and nothing sent meanwhile).
BLANK_LINES_AFTER_CALL = 4


def _json_then_blank_lines(text: str) -> bool:
    """Whether a held reply is whole JSON objects (calls, or a made-up call that finish() salvages) followed by a run
    of at least BLANK_LINES_AFTER_CALL newlines: the reply is decided, what follows would only be more blank lines."""
    tail = text[len(text.rstrip()):]
    if tail.count("\n") < BLANK_LINES_AFTER_CALL:
        return False
    body = _TAG_RE.sub(" ", text).strip()
    decoder = json.JSONDecoder()
    pos = 0
    while pos < len(body):
        try:
            _, pos = decoder.raw_decode(body, pos)
        except json.JSONDecodeError:
            return False
        while pos < len(body) and body[pos] in " \t\r\n,":
            pos += 1
    return bool(body)


def _as_call(obj: Any, tool_names: frozenset[str]) -> tuple[str, str] | None:
    if not isinstance(obj, dict) or obj.get("name") not in tool_names:
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return obj["name"], json.dumps(arguments, ensure_ascii=False)


def _salvage_text(text: str) -> str:
    """A held reply that is not a call to a known tool. A small model sometimes wraps its answer in a made-up
    tool (`{"name": "Joke", "arguments": {"joke": "..."}}`); speaking JSON aloud is worse than speaking the
    strings inside it, so return those: none for a made-up call without any, and those it got to for one cut
    short (max_tokens) or malformed. Anything else comes back unchanged."""
    body = _TAG_RE.sub(" ", text).strip()
    call_shaped = _CALL_HEAD_RE.match(body) is not None
    try:
        obj, _ = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError:
        return " ".join(_string_values(body.partition('"arguments"')[2])) if call_shaped else text
    if not isinstance(obj, dict):
        return text
    strings = list(_iter_strings(obj.get("arguments", obj)))
    return " ".join(strings) if strings or call_shaped else text


_CALL_HEAD_RE = re.compile(r'\{\s*"name"\s*:')
# A JSON string value, the last one possibly cut short: its characters, escapes kept.
_STRING_VALUE_RE = re.compile(r':\s*"((?:[^"\\]|\\.)*)')


def _string_values(fragment: str) -> list[str]:
    """The string values written in a piece of JSON that may not parse (cut short, or malformed)."""
    values = []
    for raw in _STRING_VALUE_RE.findall(fragment):
        try:
            values.append(json.loads(f'"{raw.rstrip(chr(92))}"'))
        except json.JSONDecodeError:
            values.append(raw)
    return [v for v in values if v.strip()]


def _iter_strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _iter_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _iter_strings(item)
