"""Conversation items and the Realtime API's items: a client's item spec becomes a conversation item, and a
conversation item is shown (conversation.item.retrieved) in the content type it was made with, which the conversation
does not keep: whether a message is audio, whether a user's audio has its transcript yet, and the transcript a client
sent with its audio (shown, where the LM reads what the session's ASR heard)."""

from __future__ import annotations

from typing import assert_never

from context_manager import AssistantMessage, FunctionCall, FunctionCallOutput, Item, SystemMessage, UserMessage
from controller.realtime import items as it
from controller.realtime.server_events import Json


_MESSAGE_CLASSES: dict[str, type[UserMessage | AssistantMessage | SystemMessage]] = {
    "user": UserMessage, "assistant": AssistantMessage, "system": SystemMessage}


def item_from_spec(spec: it.ItemSpec, item_id: str) -> Item:
    if isinstance(spec, it.MessageSpec):
        cls = _MESSAGE_CLASSES[spec.role]
        return cls(id=item_id, text=spec.text)
    if isinstance(spec, it.FunctionCallSpec):
        return FunctionCall(id=item_id, call_id=spec.call_id or item_id, name=spec.name, arguments=spec.arguments)
    return FunctionCallOutput(id=item_id, call_id=spec.call_id, output=spec.output)


class ItemWire:
    """A session's conversation items as the client sees them."""

    def __init__(self) -> None:
        self._audio: set[str] = set()  # messages made of audio (spoken turns, spoken replies, audio items sent)
        # User audio items with no transcript (still being transcribed, or it failed): retrieved with transcript null,
        # as the API's input_audio content has it until transcription completes (the conversation holds "" for them).
        self._untranscribed: set[str] = set()
        # User audio items the client sent with a transcript: the item shows it, the LM reads what the ASR heard.
        self._shown_transcripts: dict[str, str] = {}

    def add_audio(self, item_id: str) -> None:
        self._audio.add(item_id)

    def add_untranscribed(self, item_id: str) -> None:
        self._untranscribed.add(item_id)

    def show_transcript(self, item_id: str, transcript: str) -> None:
        self._shown_transcripts[item_id] = transcript

    def transcribed(self, item_id: str) -> None:
        self._untranscribed.discard(item_id)

    def forget(self, item_id: str) -> None:
        """The item left the conversation."""
        self._audio.discard(item_id)
        self._untranscribed.discard(item_id)
        self._shown_transcripts.pop(item_id, None)

    def wire(self, item: Item) -> Json:
        """An item as conversation.item.retrieved shows it: in the content type it was made with."""
        match item:
            case UserMessage(id=i, text=t) if i in self._audio:
                shown = self._shown_transcripts.get(i, None if i in self._untranscribed else t)
                return it.user_audio_item(i, transcript=shown)
            case UserMessage(id=i, text=t):
                return it.user_text_item(i, text=t)
            case AssistantMessage(id=i, text=t, complete=c):
                return it.assistant_message_item(i, audio=i in self._audio, text=t,
                                                 status="completed" if c else "incomplete")
            case SystemMessage(id=i, text=t):
                return it.system_item(i, text=t)
            case FunctionCall(id=i, call_id=c, name=n, arguments=a, complete=done):
                return it.function_call_item(i, call_id=c, name=n, arguments=a,
                                             status="completed" if done else "incomplete")
            case FunctionCallOutput(id=i, call_id=c, output=o):
                return it.function_call_output_item(i, call_id=c, output=o)
        assert_never(item)
