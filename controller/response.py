"""One reply in flight: LM text -> sentences -> speech -> Realtime events, held until committed.

A Response produces its server events through its OutputGate, which holds them while it is speculative and paces
its audio to the client's playback (output_gate, playback_pacing). Its ReplySpeech speaks the sentences and records
their audio spans, so that a truncation keeps exactly the heard text (reply_speech).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import numpy as np

from clients.heard import heard_of_sentences
from controller.output_gate import Emit, OutputGate
from controller.owned_tasks import cancelled_unless_done
from controller.pipeline import PromptCut, SpeechPipeline
from controller.realtime import items as it
from controller.realtime import server_events as sev
from controller.reply_speech import ReplySpeech
from controller.response_settings import ResponseSettings
from controller.response_wire import ToolCall, output_texts, usage
from lm_engine.chat import ChatBackendError, ChatDelta, ChatRequest, ChatUsage, ToolCallDelta
from speech_decoder import SentenceChunker


@dataclass(frozen=True, slots=True)
class Say:
    """A reply with fixed text (an operator's `say` command): spoken as is, no LM."""

    text: str


@dataclass(frozen=True, slots=True)
class InputEntry:
    """One entry of response.input: an item, or a reference to one; and a message's audio, decoded once, when the
    response.create came, in the session's input format then (a session.update may change it before the prompt is
    built), with its sample rate."""

    item: it.ItemSpec | it.ItemReference
    audio: tuple[np.ndarray, int] | None = None


async def _say(say: Say) -> AsyncIterator[ChatDelta]:
    yield ChatDelta(text=say.text)


def _note_unheeded_tool_choice(request: ChatRequest, calls: list[ToolCall],
                               log: logging.LoggerAdapter[logging.Logger]) -> None:
    """tool_choice "required" or a named function reaches the chat LM as asked, but the LM may still answer in words
    or call another function (the embedded 0.5 B model does, on a question no tool fits): logged, not hidden."""
    choice = request.tool_choice
    named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if (choice == "required" and not calls) or (named and named not in {c.name for c in calls}):
        log.warning("tool_choice %s was not heeded: the chat LM %s", named or "required",
                       f"called {', '.join(c.name for c in calls)}" if calls else "answered without a call")


def _whole_json(arguments: str) -> bool:
    """Whether a call's arguments are whole JSON: a reply cut at max_output_tokens may have stopped inside them
    (a backend's native calls stream), or after them (the calls parsed from the LM's text are whole ones)."""
    try:
        json.loads(arguments)
    except ValueError:
        return False
    return True


class Response:
    def __init__(self, *, gen_id: int, speculative: bool, events: sev.ServerEvents,
                 new_id: Callable[[str], str], pipeline: SpeechPipeline,
                 settings: ResponseSettings, emit: Emit, previous_item_id: str | None,
                 on_first_audio: Callable[[], None], on_prompt_cut: Callable[[PromptCut], Awaitable[None]],
                 count_texts: Callable[[list[str]], Awaitable[int]],
                 log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.gen_id = gen_id
        self.log = log  # the session's: its lines name the session
        self.speculative = speculative
        self.ev = events
        self.pipeline = pipeline
        self.settings = settings
        self._on_first_audio = on_first_audio
        self._gate = OutputGate(released=not speculative, pacing_lead_s=settings.pacing_lead_s, emit=emit,
                                on_first_audio=self._first_audio_sent)
        self._on_prompt_cut = on_prompt_cut
        self.prompt_cut: PromptCut | None = None  # the LM read only the end of the prompt (told once released)
        self._cut_told = False
        self.new_id = new_id
        self.response_id = new_id("resp")
        self.item_id = new_id("item")
        self.speech = ReplySpeech(pipeline=pipeline, settings=settings, events=events, position=self._pos(),
                                  gate=self._gate, mark=self.mark)
        self.answers_audio_end_ms: int | None = None
        self.answers_turn: tuple[str, int, int] | None = None  # the spoken turn it answers: (item id, start, end ms)
        # Monotonic times of the reply's milestones, logged per response: where the latency goes.
        self.marks: dict[str, float] = {"start": time.monotonic()}
        self.input_wait: float | None = None  # seconds it waited for its turn's input, until counted in the metrics
        self.say: Say | None = None
        # response.create options: an out-of-band reply stays out of the conversation; `input_items`
        # (item specs and references) replace the conversation as the prompt.
        self.out_of_band = False
        self.input_items: tuple[InputEntry, ...] | None = None
        self.metadata: Mapping[str, str] | None = None  # echoed in the response object
        self.conversation_id: str | None = None  # the conversation the reply joins; None out of band
        self.previous_item_id = previous_item_id
        self.release_task: asyncio.Task[None] | None = None
        self.text = ""
        self.tool_calls: list[ToolCall] = []
        # Where the client's conversation.item.truncate cut the message's audio: its length from then on. (A barge-in's
        # own truncation, at the server's estimate of what was played, leaves the client free to say more exactly.)
        self.truncated_at_ms: int | None = None
        self.status: sev.ResponseStatus = "in_progress"
        self.usage: ChatUsage | None = None  # the LM's token counts once it reported them
        # The prompt's tokens as the session's budget counts them (set with the prompt; none for a fixed Say), and
        # the counts made from it and the reply's text when the LM reported none: (prompt, its audio, output) tokens.
        self.count_prompt: Callable[[], Awaitable[tuple[int, int]]] | None = None
        # The LM took the request (the reply stream's first item): from then on it reads the prompt, which counts.
        # A reply cancelled while queued behind another session's (the LM's one slot) counts none of it.
        self._prompt_taken = False
        self._count_texts = count_texts  # the LM's tokens of texts (the session's budget's counter, off the loop)
        self._own_counts = (0, 0, 0)
        self.message_opened = False
        # Output items the client deleted from the conversation while the reply ran: no conversation.item.done for
        # them any more, and they do not join the conversation.
        self.deleted: set[str] = set()
        self._created = False  # response.created was emitted (sent or held)
        self._calls_closed: set[str] = set()  # item ids of the calls whose closing events were emitted (or held)

    # ---- output gate -------------------------------------------------------------------------

    @property
    def visible(self) -> bool:
        """Some event of this response reached the client."""
        return self._gate.visible

    @property
    def ended(self) -> bool:
        """Its response.done went out: the response is over for the client."""
        return self._gate.ended

    @property
    def first_audio_at(self) -> float | None:
        return self._gate.first_audio_at

    @property
    def audio_ms_sent_so_far(self) -> float:
        """The reply's audio that has left for the client."""
        return self._gate.playback.sent_ms

    def heard_ms_now(self) -> float:
        """The server's estimate of the audio played so far: what was sent, less what the client has yet to play."""
        return self._gate.heard_ms_now()

    async def commit(self) -> None:
        """The turn it answers ended: the client learns of the reply now (response.created, sent as the Realtime API
        sends it, at the commit), so that a barge-in before a word of it is ready still ends a response the client
        saw (response.done cancelled) rather than leaving the committed turn without any. What it held follows by
        release()."""
        self.mark("committed")
        await self.announce()
        await self._gate.send_held_created()  # announce() is a speculation's first event: it leads the held ones

    async def release(self) -> None:
        """Commit: everything held goes out now (audio beyond the pacing lead waits its turn)."""
        await self._tell_prompt_cut()  # before the held audio, which is paced: as a reply released from the start
        await self._gate.release()
        self.mark("released")
        await self._tell_prompt_cut()  # one that came while the backlog drained

    async def _tell_prompt_cut(self) -> None:
        """The session tells the client of a cut prompt once the reply is theirs (released, or being released): a
        speculation rolled back answered nothing, and the reply that does answer the turn tells it."""
        if self.prompt_cut is not None and not self._cut_told:
            self._cut_told = True
            await self._on_prompt_cut(self.prompt_cut)

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.monotonic())

    def timeline(self) -> str:
        t0 = self.marks["start"]
        return " ".join(f"{k}=+{(v - t0) * 1000:.0f}ms" for k, v in sorted(self.marks.items(), key=lambda kv: kv[1]))

    async def wait_released(self) -> None:
        await self._gate.wait_released()

    def _first_audio_sent(self) -> None:
        self.mark("first_audio_sent")
        self._on_first_audio()

    # ---- the run -----------------------------------------------------------------------------

    @property
    def audio_out(self) -> bool:
        return self.settings.audio_out

    async def announce(self) -> None:
        """response.created, once. A reply the client asked for announces itself before its prompt is ready (it may
        wait for the turn's transcription), so that a response.cancel meanwhile has a response to cancel."""
        if not self._created:
            self._created = True
            await self._gate.emit(self.ev.response_created(self._response_obj("in_progress")))

    async def run(self, request: ChatRequest | Say) -> None:
        """Generate, synthesise and emit the whole response. Cancellation leaves via CancelledError."""
        await self.announce()
        # A short first piece (a clause of three words or more, or else a phrase of three words not ending on a
        # function word) lets synthesis start before the first sentence is complete; later pieces are sentences.
        # Three words rather than four: 56 ms less from end of speech to first audio at p50 (bench.latency, 2 cores).
        chunker = SentenceChunker(min_first_words=3, first_word_cut=3)
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.create_task(self.speech.speak(sentences))
        finish_reason = None
        try:
            async for delta in (_say(request) if isinstance(request, Say) else self.pipeline.reply(request)):
                self._prompt_taken = True
                if isinstance(delta, PromptCut):
                    self.prompt_cut = delta
                    if self._gate.released:  # else release() tells it
                        await self._tell_prompt_cut()
                    continue
                finish_reason = delta.finish_reason or finish_reason
                self.usage = delta.usage or self.usage
                if delta.text:
                    self.mark("first_token")
                    await self._open_message()
                    self.text += delta.text
                    for piece in chunker.push(delta.text):
                        self.mark("first_piece")
                        sentences.put_nowait(piece)
                if delta.tool_call is not None:
                    await self._tool_call_delta(delta.tool_call)
            if self.tool_calls and (finish_reason != "length" or _whole_json(self.tool_calls[-1].arguments)):
                self.tool_calls[-1].complete = True  # the LM ended the reply past the call's arguments
                await self._close_call(self.tool_calls[-1])
            for piece in chunker.flush():
                sentences.put_nowait(piece)
            sentences.put_nowait(None)
            await speaker
        finally:
            await cancelled_unless_done(speaker)
        if isinstance(request, ChatRequest):
            _note_unheeded_tool_choice(request, self.tool_calls, self.log)
        if finish_reason == "length":  # cut at max_output_tokens: the Realtime API calls that incomplete
            await self._finish("incomplete", reason="max_output_tokens")
        else:
            await self._finish("completed")

    async def _open_message(self) -> None:
        if self.message_opened:
            return
        self.message_opened = True
        item = it.assistant_message_item(self.item_id, audio=self.audio_out, text=None, status="in_progress")
        await self._gate.emit(self.ev.output_item_added(response_id=self.response_id, output_index=0, item=item))
        if not self.out_of_band:
            await self._gate.emit(self.ev.item_added(item, previous_item_id=self.previous_item_id))
        await self._gate.emit(self.ev.content_part_added(**self._pos(), part=self._part("")))

    async def _tool_call_delta(self, call: ToolCallDelta) -> None:
        # A call's first delta names it; its later ones may leave call_id and name empty.
        call_id, name, args = call.call_id, call.name, call.arguments_delta
        current = self.tool_calls[-1] if self.tool_calls else None
        if current is None or (call_id and call_id != current.call_id):
            if current is not None:
                current.complete = True  # the LM streams one call after another: the one before is whole
                await self._close_call(current)
            current = ToolCall(self.new_id("item"), call_id or self.new_id("call"), name)
            self.tool_calls.append(current)
            item = current.item("in_progress")
            await self._gate.emit(self.ev.output_item_added(response_id=self.response_id,
                                                       output_index=self._index_of(current), item=item))
            if not self.out_of_band:
                await self._gate.emit(self.ev.item_added(item, previous_item_id=self._previous_of(current)))
        if name and not current.name:
            current.name = name
        if args:
            current.arguments += args
            await self._gate.emit(self.ev.function_call_arguments_delta(
                response_id=self.response_id, item_id=current.item_id, output_index=self._index_of(current),
                call_id=current.call_id, delta=args))

    def _index_of(self, call: ToolCall) -> int:
        return self.tool_calls.index(call) + (1 if self.message_opened else 0)

    def conversation_items(self) -> list[str]:
        """The reply's output items in the conversation, in its order (the message first), as the client has seen
        them added: none out of band, none the client deleted."""
        if self.out_of_band:
            return []
        items = ([self.item_id] if self.message_opened else []) + [c.item_id for c in self.tool_calls]
        return [i for i in items if i not in self.deleted]

    def _previous_of(self, call: ToolCall) -> str | None:
        """The item a function call follows in the conversation: the reply's output item before it, or the item the
        reply follows."""
        before = self.conversation_items()
        i = before.index(call.item_id)
        return before[i - 1] if i > 0 else self.previous_item_id

    # ---- endings -----------------------------------------------------------------------------

    def heard_text(self, heard_ms: float | None) -> str:
        """The reply's text as far as the listener heard it (all of it when heard_ms is None)."""
        if not self.audio_out or heard_ms is None:
            return " ".join(s.text for s in self.speech.spans)
        return heard_of_sentences(((s.text, s.start_ms, s.end_ms) for s in self.speech.spans), heard_ms)

    def _pos(self) -> sev.PartPosition:
        return {"response_id": self.response_id, "item_id": self.item_id, "output_index": 0,
                "content_index": 0}

    def _part(self, text: str) -> sev.Json:
        return sev.audio_part(text) if self.audio_out else sev.text_part(text)

    def message_item(self, status: it.ItemStatus, text: str | None) -> sev.Json:
        return it.assistant_message_item(self.item_id, audio=self.audio_out, text=text, status=status)

    def item_so_far(self, item_id: str) -> sev.Json | None:
        """One of the reply's conversation items as it stands while the reply runs (conversation.item.retrieve): the
        message with its text so far, or a function call with its arguments so far (completed once its closing
        events went out); None if it is not one of them."""
        if item_id not in self.conversation_items():
            return None
        if item_id == self.item_id:
            return self.message_item("in_progress", self.heard_text(None))
        call = next(c for c in self.tool_calls if c.item_id == item_id)
        return call.item() if item_id in self._calls_closed else call.item("in_progress")

    def output_items(self, status: it.ItemStatus) -> list[sev.Json]:
        items = []
        if self.message_opened:
            items.append(self.message_item(status, self.heard_text(None)))
        return items + [call.item() for call in self.tool_calls]

    async def _finish(self, status: sev.ResponseStatus, reason: str | None = None,
                      error_message: str | None = None) -> None:
        """Close what is open (the message's audio/text, its part and item; the tool calls), then response.done.
        A message that did not finish (cancelled, or cut at max_output_tokens) closes as `incomplete`."""
        self.status = status
        if self.usage is None:  # counted first: a client may answer item.done at once, as if response.done came with it
            self._own_counts = await self._count_own()
        if self.message_opened:
            text = self.heard_text(None)
            if self.audio_out:
                await self._gate.close(self.ev.output_audio_done(**self._pos()))
                await self._gate.close(self.ev.output_audio_transcript_done(**self._pos(), transcript=text))
            else:
                await self._gate.close(self.ev.output_text_done(**self._pos(), text=text))
            await self._gate.close(self.ev.content_part_done(**self._pos(), part=self._part(text)))
            item = self.message_item("completed" if status == "completed" else "incomplete", text)
            await self._gate.close(self.ev.output_item_done(response_id=self.response_id, output_index=0, item=item))
            if self.item_id in self.conversation_items():
                await self._gate.close(self.ev.item_done(item, previous_item_id=self.previous_item_id))
        for call in self.tool_calls:
            if call.item_id not in self._calls_closed:
                await self._close_call(call)
        done = self._response_obj(status, reason=reason, error_message=error_message)
        await self._gate.emit(self.ev.response_done(done))

    async def _close_call(self, call: ToolCall) -> None:
        """A call's closing events, as soon as it is whole (as the API sends them, before the next output item): a
        client runs it while the reply goes on (more calls, the spoken words' audio). A cut one, at the end."""
        self._calls_closed.add(call.item_id)
        index = self._index_of(call)
        if call.complete:  # a cut call's arguments never were done: a client acting on .done would run them
            await self._gate.close(self.ev.function_call_arguments_done(
                response_id=self.response_id, item_id=call.item_id, output_index=index, call_id=call.call_id,
                name=call.name, arguments=call.arguments))
        item = call.item()
        await self._gate.close(self.ev.output_item_done(response_id=self.response_id, output_index=index, item=item))
        if call.item_id in self.conversation_items():
            await self._gate.close(self.ev.item_done(item, previous_item_id=self._previous_of(call)))

    async def finish_empty(self) -> None:
        """Nothing to answer (the user's audio held no words): an empty, completed response."""
        await self.announce()
        await self._finish("completed")

    async def finish_failed(self, message: str) -> None:
        """A model failed: close what is open (as `incomplete`), then response.done `failed`. Through the output
        gate like every other event: a speculation's failure shows only if it is committed, and after what it held."""
        self.status = "failed"
        if self._created:
            await self._finish("failed", error_message=message)

    async def finish_cancelled(self, reason: str | None) -> None:
        """Called after run() was cancelled: closes the response on the wire if it is visible, its open items
        as `incomplete` (the Realtime API sends output_item.done for interrupted items too)."""
        self.status = "cancelled"
        # Items whose output_item.added was still held never reached the client: they are not closed (no .done for an
        # item it never saw) and do not join the conversation.
        unseen = self._gate.drop_held()
        self._calls_closed.clear()  # closings still held are dropped with the rest; the gate skips those sent
        self.message_opened = self.message_opened and self.item_id not in unseen
        self.tool_calls = [c for c in self.tool_calls if c.item_id not in unseen]
        if not self.visible:
            return
        self._gate.let_out()
        await self._finish("cancelled", reason=reason)

    def _response_obj(self, status: sev.ResponseStatus, reason: str | None = None,
                      error_message: str | None = None) -> sev.Json:
        output = [] if status == "in_progress" else self.output_items(
            "completed" if status == "completed" else "incomplete")
        details = sev.status_details(status, reason=reason, error_code="response_failed" if error_message else None,
                                     error_message=error_message)
        used = None if status == "in_progress" else usage(self.usage, self._own_counts, self.speech.audio_tokens)
        return sev.response(self.response_id, status=status, output=output,
                            output_modalities=self.settings.modalities, output_format=self.settings.output_format,
                            voice=self.settings.voice, details=details,
                            max_output_tokens=self.settings.max_output_tokens,
                            conversation_id=self.conversation_id, metadata=self.metadata, usage=used)

    async def _count_own(self) -> tuple[int, int, int]:
        """(prompt, its audio, output) tokens counted here, for a reply whose LM reported no counts: clients read
        response.done's usage without a null check (pipecat does), so every reply has one. The prompt as the
        session's budget counts it, the reply's text and calls as the LM's tokenizer counts them."""
        try:
            count = self.count_prompt if self._prompt_taken else None
            prompt, audio = await count() if count is not None else (0, 0)
            return prompt, audio, await self._count_texts(output_texts(self.text, self.tool_calls))
        except ChatBackendError as exc:  # the LM's tokenizer is gone with the LM (a failed reply): nothing counted
            self.log.warning("response %s: its tokens could not be counted: %s", self.response_id, exc)
            return 0, 0, 0
