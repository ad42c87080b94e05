"""Conversation items on the wire: client item specs (parsed) and GA `conversation.item` dicts (built).

Rules:
- Parsing accepts GA content types and the beta ones: assistant "text"/"audio" become
  "output_text"/"output_audio"; user/system "text" becomes "input_text". Images and MCP items
  are refused with "invalid_value" (this server has no vision or MCP).
- Built items never echo audio bytes back (clients already have them; the API sends transcripts).
- Item ids are optional on input; the session assigns one before building wire dicts.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from controller.errors import LocalProtocolError, RemoteProtocolError
from controller.realtime._json import MISSING, Fields

__all__ = [
    "ContentPart",
    "MessageSpec",
    "FunctionCallSpec",
    "FunctionCallOutputSpec",
    "ItemReference",
    "ItemSpec",
    "ItemStatus",
    "parse_item",
    "spec_to_wire",
    "user_audio_item",
    "user_text_item",
    "system_item",
    "assistant_message_item",
    "function_call_item",
    "function_call_output_item",
]

ItemStatus = Literal["completed", "incomplete", "in_progress"]
ContentType = Literal["input_text", "input_audio", "output_text", "output_audio"]
Role = Literal["user", "assistant", "system"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentPart:
    type: ContentType
    text: str | None = None  # input_text / output_text
    audio: bytes | None = None  # input_audio: decoded bytes in the session's input format
    transcript: str | None = None  # input_audio / output_audio


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageSpec:
    id: str | None
    role: Role
    content: tuple[ContentPart, ...]

    @property
    def text(self) -> str:
        """Text of all parts joined (transcripts for audio parts): what the LM sees."""
        pieces = [p.text if p.type.endswith("_text") else p.transcript for p in self.content]
        return " ".join(s for s in pieces if s)


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionCallSpec:
    id: str | None
    call_id: str | None  # GA makes it optional on input; the session may use the item id
    name: str
    arguments: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionCallOutputSpec:
    id: str | None
    call_id: str
    output: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemReference:
    """`{"type": "item_reference", "id": ...}`: only valid in response.create `input`."""

    id: str


ItemSpec = MessageSpec | FunctionCallSpec | FunctionCallOutputSpec

# role -> {accepted content type -> normalised GA type}
_CONTENT_TYPES: dict[str, dict[str, ContentType]] = {
    "user": {"input_text": "input_text", "text": "input_text", "input_audio": "input_audio"},
    "system": {"input_text": "input_text", "text": "input_text"},
    "assistant": {
        "output_text": "output_text",
        "text": "output_text",
        "output_audio": "output_audio",
        "audio": "output_audio",
    },
}


# Each item type's own keys, besides type, id, object and status; and a content part's (each type reads its own).
_ITEM_KEYS: dict[str, tuple[str, ...]] = {"message": ("role", "content"),
                                          "function_call": ("call_id", "name", "arguments"),
                                          "function_call_output": ("call_id", "output"), "item_reference": ()}
_PART_KEYS = ("type", "text", "audio", "transcript")


def parse_item(f: Fields) -> ItemSpec | ItemReference:
    """Parse a conversation item object (f.path is e.g. "item" or "response.input[0]")."""
    kind = f.choice("type", tuple(_ITEM_KEYS))
    f.refuse_unknown(("type", "id", "object", "status", *_ITEM_KEYS[kind]))
    item_id = f.opt_str("id")
    # A client's item is shown "completed" whatever status it gives: the API's item types say status "has no effect on
    # the conversation" (beta: "accepted for consistency with the conversation.item.created event", so a client may
    # send back an item it was given); neither documents an echo. Only the API's values are accepted.
    if f.obj.get("status") is not None:
        f.choice("status", ("completed", "incomplete", "in_progress"))
    if kind == "item_reference":
        return ItemReference(id=f.str_("id"))
    if kind == "function_call":
        return FunctionCallSpec(
            id=item_id, call_id=f.opt_str("call_id"), name=f.str_("name"), arguments=f.opt_str("arguments") or ""
        )
    if kind == "function_call_output":
        return FunctionCallOutputSpec(id=item_id, call_id=f.str_("call_id"), output=f.str_("output"))
    role = f.choice("role", ("user", "assistant", "system"))
    allowed = _CONTENT_TYPES[role]
    parts = []
    for i, raw in enumerate(f.list_("content")):
        parts.append(_content_part(f.item_obj("content", i, raw), allowed))
    return MessageSpec(id=item_id, role=_role(role), content=tuple(parts))


def _role(role: str) -> Role:
    return "user" if role == "user" else ("assistant" if role == "assistant" else "system")


def _content_part(c: Fields, allowed: dict[str, ContentType]) -> ContentPart:
    ctype = allowed[c.choice("type", tuple(allowed))]
    c.refuse_unknown(_PART_KEYS)
    if ctype in ("input_text", "output_text"):
        return ContentPart(type=ctype, text=c.str_("text"))
    audio: bytes | None = None
    encoded = c.opt_str("audio")
    if encoded is not None:
        try:
            audio = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RemoteProtocolError(
                f"Invalid '{c.param('audio')}': not valid base64.",
                code="invalid_base64",
                param=c.param("audio"),
                event_id=c.event_id,
            ) from exc
    transcript = c.opt_str("transcript")
    if ctype == "input_audio" and not audio and transcript is None:  # nothing to hear nor read: an empty user item
        raise RemoteProtocolError(f"Missing required parameter: '{c.param('audio')}' (an input_audio part needs its "
                                  "audio, or a transcript).", code=MISSING, param=c.param("audio"), event_id=c.event_id)
    return ContentPart(type=ctype, audio=audio, transcript=transcript)


def _part_to_wire(p: ContentPart) -> dict[str, object]:
    if p.type in ("input_text", "output_text"):
        return {"type": p.type, "text": p.text or ""}
    return {"type": p.type, "transcript": p.transcript}


def spec_to_wire(
    spec: ItemSpec, *, item_id: str, call_id: str | None = None, status: ItemStatus = "completed"
) -> dict[str, object]:
    """Echo a client-created item in GA form under its assigned id (and call_id for calls)."""
    if isinstance(spec, MessageSpec):
        return _message(item_id, spec.role, [_part_to_wire(p) for p in spec.content], status)
    if isinstance(spec, FunctionCallSpec):
        cid = call_id or spec.call_id
        if cid is None:
            raise LocalProtocolError("spec_to_wire: a function_call needs a call_id", code="server_error")
        return function_call_item(item_id, call_id=cid, name=spec.name, arguments=spec.arguments, status=status)
    return function_call_output_item(item_id, call_id=spec.call_id, output=spec.output)


def _message(item_id: str, role: str, content: list[dict[str, object]], status: ItemStatus) -> dict[str, object]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": role,
        "content": content,
    }


def user_audio_item(item_id: str, *, transcript: str | None, status: ItemStatus = "completed") -> dict[str, object]:
    """A committed user audio turn; transcript is None until transcription completes."""
    return _message(item_id, "user", [{"type": "input_audio", "transcript": transcript}], status)


def user_text_item(item_id: str, *, text: str) -> dict[str, object]:
    return _message(item_id, "user", [{"type": "input_text", "text": text}], "completed")


def system_item(item_id: str, *, text: str) -> dict[str, object]:
    return _message(item_id, "system", [{"type": "input_text", "text": text}], "completed")


def assistant_message_item(
    item_id: str, *, audio: bool, text: str | None, status: ItemStatus = "completed"
) -> dict[str, object]:
    """An assistant reply; `text=None` gives empty content (as in response.output_item.added).

    `audio=True` makes an output_audio part whose transcript is `text`, else an output_text part.
    """
    content: list[dict[str, object]] = []
    if text is not None:
        content.append({"type": "output_audio", "transcript": text} if audio else {"type": "output_text", "text": text})
    return _message(item_id, "assistant", content, status)


def function_call_item(
    item_id: str, *, call_id: str, name: str, arguments: str, status: ItemStatus = "completed"
) -> dict[str, object]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def function_call_output_item(item_id: str, *, call_id: str, output: str) -> dict[str, object]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call_output",
        "status": "completed",
        "call_id": call_id,
        "output": output,
    }
