"""The conversation side of a session: what a reply's prompt reads of it and what the reply leaves in it, and the
client's item events (create, retrieve, delete, truncate).

Split from session.py to keep each file about one thing; `ItemsMixin` is only ever mixed into Session and uses its
emit/metrics/pipeline and the TurnsMixin's turn inputs and transcriptions (session_host.SessionHost declares what it
uses, for mypy).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from context_manager import (
    ROOT, AssistantMessage, Conversation, ConversationError, DuplicateItemError, FunctionCall, FunctionCallOutput,
    InvalidEditError, Item, SystemMessage, UnknownItemError, UserMessage,
)
from context_manager.conversation import Message
from controller import turn_events as te
from controller.audio_io import decode
from controller.chat_request import reply_request, tools_for_chat
from controller.errors import MediaError, RemoteProtocolError
from controller.item_wire import item_from_spec
from controller.pipeline import TurnInput
from controller.realtime import client_events as ce
from controller.realtime import items as it
from controller.realtime.server_events import Json
from controller.realtime.session_config import SessionConfig
from controller.response import InputEntry, Response
from lm_engine.chat import ChatRequest

if TYPE_CHECKING:
    from controller.session_host import SessionHost as _Base
else:
    _Base = object

MAX_REMEMBERED_REPLIES = 32


def _text_around_audio(content: Sequence[Any]) -> list[str | None]:
    """A message's parts as the LM reads them, None in the place of its audio (its audio parts' audio is heard as
    one): their text, or the transcript of an input_audio part that came without audio."""
    pieces: list[str | None] = []
    for part in content:
        if part.type == "input_audio" and part.audio:
            if None not in pieces:
                pieces.append(None)
        else:
            pieces.append(part.text if part.type.endswith("_text") else part.transcript)
    return pieces


class ItemsMixin(_Base):
    # ---- a reply's prompt, and what the reply leaves in the conversation --------------------------

    async def build_request(self, resp: Response, turn: tuple[str, asyncio.Task[TurnInput]] | None,
                            cfg: SessionConfig) -> ChatRequest | None:
        """The LM request for a reply; None when there is nothing to answer (the user's turn held no words, or the
        prompt holds no message)."""
        # The transcription tasks awaited here are shared (with the transcript events, with later replies): a reply
        # cancelled while it waits must not cancel them, hence the shields.
        # Committed turns and audio items the client sent whole are part of the prompt, as their transcripts; the
        # turn being answered is there as what the LM reads of it (its transcript may come later).
        answered = turn[0] if turn is not None else None
        waits = [task for item_id, task in self._item_transcriptions.items() if item_id != answered]
        if waits:
            await asyncio.shield(asyncio.gather(*waits, return_exceptions=True))
        if resp.input_items is not None:  # the client chose the prompt's items itself
            chosen = Conversation()
            for entry in resp.input_items:
                if isinstance(entry.item, it.ItemReference):
                    # Checked at response.create, but the prompt is built after the transcriptions it waits for: an
                    # item deleted meanwhile is not heard, as a turn deleted before its reply is (below).
                    if (referred := self.referenced_item(entry.item.id)) is not None:
                        chosen.add(referred)
                else:
                    chosen.add(await self._heard_spec(entry.item, entry.item.id or self.new_id("item"), entry.audio))
            messages = await self.budget.prompt(chosen, cfg.instructions, tools=tools_for_chat(cfg))
            return self._chat_request(resp, cfg, messages)
        extra: list[Message] = []
        overrides: dict[str, str] = {}
        if turn is not None:
            item_id, task = turn
            heard = await asyncio.shield(task)
            if not heard.lm_content:
                return None
            if item_id in self.conversation:
                overrides[item_id] = heard.lm_content
            elif self.turn_open(item_id):  # a speculation answers a turn that is not in the conversation yet
                extra.append({"role": "user", "content": heard.lm_content})
            # else the client deleted the turn before the reply was created: the reply does not hear it
        messages = await self.budget.prompt(self.conversation, cfg.instructions, overrides,
                                     keep_below=self.defaults.context_keep_below_tokens,
                                     tools=tools_for_chat(cfg)) + extra
        return self._chat_request(resp, cfg, messages)

    def _chat_request(self, resp: Response, cfg: SessionConfig, messages: list[Message]) -> ChatRequest | None:
        request = reply_request(cfg, resp.settings, messages)
        if request is not None:
            # Counted only if the LM reports no counts (a reply cancelled first, a --chat-url server that gives none),
            # and once the LM took the request: a reply cancelled before (waiting for a transcript, or queued for the
            # LM) counts 0, as the LM read none of it.
            resp.count_prompt = functools.partial(self.budget.tokens_of, messages, request.tools, cfg.instructions)
        return request

    def record_reply(self, resp: Response, heard_ms: float | None) -> None:
        """Put what the assistant actually said into the conversation (never a rolled-back reply)."""
        if not resp.visible or resp.out_of_band:
            return
        # Where the client was told it is: after the item it follows (kept right by deletes and inserts), or first.
        previous: str | None = resp.previous_item_id or ROOT
        if previous != ROOT and previous not in self.conversation:  # deleted while the reply was being closed
            previous = None
        items = resp.conversation_items()
        if resp.item_id in items and resp.item_id not in self.conversation:
            self.conversation.add(AssistantMessage(id=resp.item_id, text=resp.heard_text(heard_ms),
                                                   complete=resp.status == "completed"), previous_item_id=previous)
            if resp.audio_out:
                self.item_wire.add_audio(resp.item_id)
            previous = resp.item_id
            self._spoken[resp.item_id] = resp
            while len(self._spoken) > MAX_REMEMBERED_REPLIES:
                self._spoken.pop(next(iter(self._spoken)))
        for call in resp.tool_calls:
            if call.item_id in items and call.item_id not in self.conversation:
                self.conversation.add(FunctionCall(id=call.item_id, call_id=call.call_id, name=call.name,
                                                   arguments=call.arguments, complete=call.complete),
                                      previous_item_id=previous)
                previous = call.item_id

    # ---- client item events ------------------------------------------------------------------

    async def handle_item_event(self, event: ce.ClientEvent) -> None:
        try:
            match event:
                case ce.ConversationItemCreate():
                    await self._item_create(event)
                case ce.ConversationItemRetrieve():
                    await self.emit(self.events.item_retrieved(self._retrieved_wire(event.item_id)))
                case ce.ConversationItemDelete():
                    playing = self.visible_response()
                    if playing is not None and event.item_id in playing.conversation_items():
                        playing.deleted.add(event.item_id)  # an output item of the reply in progress: it goes on
                    else:
                        before = self.conversation.previous_item_id(event.item_id)
                        self.conversation.delete(event.item_id)
                        self._follow_deleted(event.item_id, before)
                    self.item_wire.forget(event.item_id)
                    self.drop_warm_up()
                    self._spoken.pop(event.item_id, None)
                    await self.emit(self.events.item_deleted(item_id=event.item_id))
                    await self.apply(te.ContextChanged())
                case ce.ConversationItemTruncate():
                    await self._item_truncate(event)
                case _:
                    raise RemoteProtocolError(f"unsupported event {type(event).__name__}", code="unknown_event")
        except UnknownItemError as exc:
            raise RemoteProtocolError(str(exc), code="item_not_found", param="item_id") from exc
        except ConversationError as exc:  # an edit that does not apply to the item named
            raise RemoteProtocolError(str(exc), code="invalid_value", param="item_id") from exc

    def _follow_deleted(self, deleted: str, before: str | None) -> None:
        """A reply in progress that follows the deleted item follows the one before it now: its conversation.item.done
        says so, and it joins the conversation there."""
        for resp, _ in self._responses.values():
            if resp.previous_item_id == deleted:
                resp.previous_item_id = before

    def _follow_inserted(self, item_id: str, previous: str | None) -> None:
        """An item put right after the one the reply in progress follows comes, on the wire, between that one and the
        reply's items already added: the reply follows the new item now."""
        resp = self.visible_response()
        if resp is not None and self.reply_items_added() and resp.previous_item_id == previous:
            resp.previous_item_id = item_id

    def item_audio(self, content: Sequence[Any], at: str = "item") -> np.ndarray | None:
        """The audio of an item's input_audio parts, decoded; None if there is none. `at`: where the item is in the
        client's event, for the error naming a part whose audio does not decode."""
        pcms = []
        for i, part in enumerate(content):
            if part.type == "input_audio" and part.audio:
                try:
                    pcms.append(decode(part.audio, self.cfg.input_format))
                except MediaError as exc:
                    raise RemoteProtocolError(f"{at}.content[{i}].audio: {exc}.", code="invalid_audio",
                                              param=f"{at}.content[{i}].audio") from exc
        return np.concatenate(pcms) if pcms else None

    async def _heard_spec(self, spec: it.ItemSpec, item_id: str, audio: tuple[np.ndarray, int] | None) -> Item:
        """An item of response.input as the LM reads it: a message's audio (decoded, at its rate) is heard, as a
        conversation item's is (the API takes the audio; a transcript sent with it is not sent to the model). Should
        recognition fail, the LM reads the client's transcript."""
        item = item_from_spec(spec, item_id)
        if isinstance(spec, it.MessageSpec) and audio is not None:
            heard = await self.heard_around(*audio, _text_around_audio(spec.content))
            if heard is not None and isinstance(item, UserMessage | AssistantMessage | SystemMessage):
                item = dataclasses.replace(item, text=heard)
        return item

    async def _item_create(self, event: ce.ConversationItemCreate) -> None:
        spec = event.item
        item_id = spec.id or self.new_id("item")
        item = item_from_spec(spec, item_id)
        await self._check_item_size(item)
        if isinstance(item, FunctionCallOutput):
            self._check_call_known(item.call_id)
        # Decoded before the item joins the conversation: bad audio refuses the whole item with an error.
        content = spec.content if isinstance(spec, it.MessageSpec) else ()
        pcm = self.item_audio(content)
        # Untranscribed, its transcript becomes the whole item's text (as a spoken turn's does): beside other parts,
        # they would be lost from the conversation and from conversation.item.done.
        if pcm is not None and len(content) > 1 and any(p.type == "input_audio" and not p.transcript for p in content):
            raise RemoteProtocolError("Invalid 'item.content': a message with untranscribed input_audio must have "
                                      "that one part on this server; send the other parts as items of their own, "
                                      "or give the audio its transcript.", code="invalid_value", param="item.content")
        call_id = item.call_id if isinstance(item, FunctionCall) else None
        previous = event.previous_item_id
        # On the wire the reply in progress is in the conversation already, right after the item it follows, where it
        # will join the conversation: an item put after one of the reply's items goes there too, behind it.
        resp = self.visible_response()
        after_reply = resp is not None and previous in self.reply_items_added()
        wire_previous = previous if after_reply else self.last_item_sent()
        at = (resp.previous_item_id or ROOT) if resp is not None and after_reply else previous
        try:
            self.conversation.add(item, previous_item_id=at)
        except UnknownItemError as exc:  # the item to insert after
            raise RemoteProtocolError(f"previous_item_id {previous!r}: no such item.", code="item_not_found",
                                      param="previous_item_id") from exc
        except DuplicateItemError as exc:
            raise RemoteProtocolError(str(exc), code="invalid_value", param="item.id") from exc
        if previous is not None and not after_reply:
            wire_previous = self.conversation.previous_item_id(item_id)
            self._follow_inserted(item_id, wire_previous)
        previous = wire_previous
        if isinstance(spec, it.MessageSpec) and any(p.type.endswith("_audio") for p in spec.content):
            self.item_wire.add_audio(item_id)
        wire = it.spec_to_wire(spec, item_id=item_id, call_id=call_id)
        await self.emit(self.events.item_added(wire, previous_item_id=previous))
        transcribed = any(p.type == "input_audio" and p.transcript for p in content)
        if pcm is None or transcribed:
            await self.emit(self.events.item_done(wire, previous_item_id=previous))
        # A user audio item sent whole gets a spoken turn's transcription, and then its item.done. One with its
        # transcript is heard too: the API sends that transcript not to the model but to show, so the LM reads what
        # the session's ASR hears in the audio, and the item keeps showing the client's words.
        if pcm is not None:
            if transcribed and isinstance(spec, it.MessageSpec):
                self.item_wire.show_transcript(item_id, spec.text)
            else:
                self.item_wire.add_untranscribed(item_id)
            self.transcribe_audio_item(item_id, pcm, self.cfg.input_format.sample_rate,
                                       _text_around_audio(content) if transcribed else None)
        await self.apply(te.ContextChanged())

    async def check_input(self, event: ce.ResponseCreate) -> tuple[InputEntry, ...] | None:
        """response.input is the reply's whole prompt, checked when the event comes: a mistake in it is the client's
        error, told now (with the event's id), not a server failure of the reply later nor an item silently left out
        of the prompt. A reference names an item of the conversation; an id comes once (a reference repeated, or a new
        item under a referenced one's id: the prompt holds each item once); a function_call_output follows its
        function_call (the prompt has no place for an output without its call, and dropped it). Returns the entries
        with their messages' audio decoded, as the prompt hears them; None without response.input."""
        seen: set[str] = set()
        calls: set[str] = set()
        entries: list[InputEntry] = []
        for i, entry in enumerate(event.input or ()):
            at = f"response.input[{i}]"
            audio = None
            if entry.id is not None:
                if entry.id in seen:
                    raise RemoteProtocolError(f"Item id {entry.id!r} appears more than once in response.input.",
                                              code="invalid_value", param=f"{at}.id")
                seen.add(entry.id)
            if isinstance(entry, it.ItemReference):
                if (referred := self.referenced_item(entry.id)) is None:
                    raise RemoteProtocolError(f"Item with id {entry.id!r} not found.", code="item_not_found",
                                              param=f"{at}.id")
                item = referred
            else:
                item = item_from_spec(entry, entry.id or "inline")
                await self._check_item_size(item, at=at)
                if isinstance(entry, it.MessageSpec) and (pcm := self.item_audio(entry.content, at)) is not None:
                    audio = (pcm, self.cfg.input_format.sample_rate)  # bad audio is refused now, not when heard
            if isinstance(item, FunctionCall):
                calls.add(item.call_id)
            elif isinstance(item, FunctionCallOutput) and item.call_id not in calls:
                raise RemoteProtocolError(f"Tool call ID {item.call_id!r} not found before {at} in response.input "
                                          "(refer to the function_call too).", code="invalid_tool_call_id",
                                          param=f"{at}.call_id")
            entries.append(InputEntry(entry, audio))
        return None if event.input is None else tuple(entries)

    async def _check_item_size(self, item: Item, at: str = "item") -> None:
        """The newest turn is always sent whole, beside the instructions: an item longer than the prompt budget
        would make every reply fail for a context overflow that the client cannot see coming."""
        if isinstance(item, FunctionCall):
            text, param = item.arguments, f"{at}.arguments"
        elif isinstance(item, FunctionCallOutput):
            text, param = item.output, f"{at}.output"
        else:
            text, param = item.text, f"{at}.content"
        if (n := await self.budget.tokens_past_budget(text)) is not None:
            raise RemoteProtocolError(f"The item is {n} tokens long; this server keeps each prompt within "
                                      f"{self.budget.budget_tokens} "
                                      "tokens and always sends the newest turn whole: shorten it.",
                                      code="invalid_value", param=param)

    def _check_call_known(self, call_id: str) -> None:
        """A function_call_output answers a function_call of the conversation, or of the reply in progress (a client
        may send the output once the call's arguments are done, before response.done), as the API checks: the prompt
        has no place for an output without its call, and dropped it unseen."""
        calls = {i.call_id for i in self.conversation.items if isinstance(i, FunctionCall)}
        resp = self.visible_response()
        if resp is not None:
            calls.update(c.call_id for c in resp.tool_calls)
        if call_id not in calls:
            raise RemoteProtocolError(f"Tool call ID {call_id!r} not found in conversation.",
                                      code="invalid_tool_call_id", param="item.call_id")

    async def _item_truncate(self, event: ce.ConversationItemTruncate) -> None:
        playing = self.visible_response()
        # The message of the reply in progress joins the conversation only when the reply ends; the client has seen
        # it added and may truncate it while its audio still comes (without response.cancel first).
        live = playing is not None and playing.item_id == event.item_id and event.item_id in self.reply_items_added()
        resp = playing if live else self._spoken.get(event.item_id)
        if not live and not isinstance(self.conversation.get(event.item_id), AssistantMessage):
            resp = None
        if resp is None or not resp.audio_out:
            raise InvalidEditError("only an assistant message whose audio this server sent can be truncated (not a "
                                   "user item, nor an assistant item created by the client, nor a text-only reply)")
        if event.content_index != 0:
            raise RemoteProtocolError("content_index must be 0", code="invalid_value", param="content_index")
        sent = resp.audio_ms_sent_so_far if resp.truncated_at_ms is None else resp.truncated_at_ms
        if event.audio_end_ms > sent + 1:
            # The API's words: clients match them to take a barge-in's truncate past a reply's end for no error.
            raise RemoteProtocolError(
                f"Audio content of {int(sent)}ms is already shorter than {event.audio_end_ms}ms",
                code="invalid_value", param="audio_end_ms")
        if live:
            # The listener stopped at audio_end_ms: the rest of the message would go unheard, and the context may
            # hold no text they did not hear, so the reply stops here (as a cancel) and joins the conversation.
            self._cut_by_truncate = resp.response_id  # before a reply owed to a turn starts (and clears it)
            await self.apply(te.ReplyTruncated(resp.gen_id))
        self.conversation.truncate(event.item_id, resp.heard_text(float(event.audio_end_ms)))
        resp.truncated_at_ms = event.audio_end_ms
        await self.emit(self.events.item_truncated(item_id=event.item_id, content_index=0,
                                                   audio_end_ms=event.audio_end_ms))
        await self.apply(te.ContextChanged())

    def _retrieved_wire(self, item_id: str) -> Json:
        """The item as it is now. The items of the reply in progress (its message, its function calls) join the
        conversation only when the reply ends, but the client has seen them added: they are shown in progress, with
        their text or arguments so far."""
        resp = self.visible_response()
        live = resp.item_so_far(item_id) if resp is not None else None
        return live if live is not None else self.item_wire.wire(self.conversation.get(item_id))

    def referenced_item(self, item_id: str) -> Item | None:
        """The item an item_reference in response.input names, as it stands now; None if there is none.

        The reply in progress's items join this server's conversation only when it ends, but the API's conversation
        holds them from their conversation.item.added on, and conversation.item.retrieve shows them in progress. A
        reference to one (an out-of-band aside about what is being said) reads it as retrieve shows it, the part
        generated so far, rather than item_not_found for an item the client saw added, or a wait for a reply that
        may talk for a minute and is interrupted by nothing the aside does."""
        if item_id in self.conversation:
            return self.conversation.get(item_id)
        resp = self.visible_response()
        if resp is None or item_id not in resp.conversation_items():
            return None
        if item_id == resp.item_id:
            return AssistantMessage(id=item_id, text=resp.heard_text(None), complete=False)
        call = next(c for c in resp.tool_calls if c.item_id == item_id)
        return FunctionCall(id=item_id, call_id=call.call_id, name=call.name, arguments=call.arguments)
