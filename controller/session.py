"""The asyncio shell of one Realtime session: its connection's life, client events, turn-taking's actions and timers.

The decisions live in pure cores (controller.turn_taking, controller.realtime, context_manager,
vad.TurnDetector); this file only feeds them events and carries out their actions. Beside it: session_input (the
input audio), session_turns (user turns and their transcripts), session_items (the conversation's items),
session_replies (responses), session_operator (the event bus's commands), outbox (what goes to the client),
item_wire (items as the client sees them), prompt_budget, chat_request and settings_checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from context_manager import Conversation
from controller import turn_events as te
from controller import turn_taking as tt
from controller.errors import EngineError, MediaError, ProtocolError, RemoteProtocolError
from controller.input_audio import InputAudio
from controller.item_wire import ItemWire
from controller.metrics import Metrics
from controller.outbox import AUDIO_DELTA, Outbox
from controller.pipeline import SpeechPipeline, TurnInput
from controller.prompt_budget import PromptBudget
from controller.realtime import client_events as ce
from controller.realtime.server_events import Json, SequentialIds, ServerEvents
from controller.realtime.session_config import SessionConfig, Transcription, apply_patch, session_to_wire
from controller.response import InputEntry, Response, Say
from controller.session_defaults import SessionDefaults
from controller.session_input import InputAudioMixin
from controller.session_items import ItemsMixin
from controller.session_operator import OperatorMixin
from controller.session_parts import SessionParts, initial_parts, updated_parts
from controller.session_replies import RepliesMixin
from controller.session_turns import TurnsMixin
from controller.settings_checks import REPLY_FIELDS, SettingsChecks, log_served_as
from controller.throttle import Throttle

logger = logging.getLogger(__name__)
DEFAULT_MODEL = "stepaudio-rt"  # the model a session shows until its client names one


class Session(InputAudioMixin, TurnsMixin, ItemsMixin, RepliesMixin, OperatorMixin):
    def __init__(self, *, session_id: str, model: str | None, pipeline: SpeechPipeline, metrics: Metrics,
                 defaults: SessionDefaults, kind: str = "realtime") -> None:
        """model: the ?model= the client connected with, None if it named none; kind: "realtime", or
        "transcription" for a connection made with ?intent=transcription."""
        self.session_id = session_id
        self.conversation_id = "conv_" + session_id.removeprefix("sess_")  # the session's one conversation
        self.model = model or DEFAULT_MODEL
        # The API fixes a session's model when it connects (?model=, or the client secret's session). A client that
        # named none there (the Agents SDK given a url without ?model=) names it in its first session.update.
        self._model_chosen = model is not None
        self.pipeline = pipeline
        self.metrics = metrics
        self.defaults = defaults
        # ids unique across sessions, as the API's are (a client logging several sessions tells their events apart)
        self.events = ServerEvents(SequentialIds(f"event_{session_id.removeprefix('sess_')}_"))
        self._id_sources: dict[str, SequentialIds] = {}
        self.cfg = (SessionConfig(kind="transcription", transcription=Transcription(), voice=pipeline.default_voice)
                    if kind == "transcription" else SessionConfig(voice=pipeline.default_voice))
        parts = initial_parts(self.cfg, pause_ms=defaults.pause_ms, speculation=defaults.speculation)
        self.turns = tt.TurnTaking(config=parts.turns)
        self.conversation = Conversation()
        self.budget = PromptBudget(pipeline, defaults.context_budget_tokens, self.conversation)
        self.checks = SettingsChecks(pipeline, self.budget)
        self.vad = pipeline.new_vad()
        self.listener = pipeline.new_listener()
        self.detector, self.converter = parts.detector, parts.converter
        self.audio = InputAudio(defaults.max_input_audio_s)
        self._cut_told: int | None = None  # the start (audio ms) of the turn whose lost start the client was told of
        self.log = logging.LoggerAdapter(logger, {"session_id": session_id})
        self.outbox = Outbox(defaults.out_queue_events, defaults.send_stall_s)
        self._errors = Throttle(defaults.error_rate, defaults.error_burst)
        self._paced = False  # the input was held back once for turns waiting for transcripts (logged once)
        self._responses: dict[int, tuple[Response, asyncio.Task[None]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._turn_inputs: dict[tuple[int, int], asyncio.Task[TurnInput]] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._item_transcriptions: dict[str, asyncio.Future[None]] = {}  # user items still being transcribed
        # A session.update and the bus's instructions command each build the new config from the current one, across
        # an await (a long text is counted on a worker thread): one at a time, or the later one's change is lost.
        self._config_changes = asyncio.Lock()
        self._last_transcription: asyncio.Future[None] | None = None  # the latest of them: the next one's events follow
        self._turn_start_ms = 0  # where the current user turn's audio begins
        self._prefill_task: asyncio.Task[object] | None = None
        self._prefilled_to_ms = 0  # audio end of the last early prefill
        self._turn_item_id = self.new_id("item")
        self._committed_turn: tuple[str, int, int] | None = None  # (item id, start ms, end ms)
        self._cut_turns: set[str] = set()  # spoken turns the chat LM read only the end of, the client told
        self._idle_from_ms = 0  # audio time at which the idle timeout's silence began
        # The response.create the next reply answers, with its response.input (checked, its audio decoded)
        self._response_overrides: tuple[ce.ResponseCreate, tuple[InputEntry, ...] | None] | None = None
        self._last_oob_gen = 0  # out-of-band replies' generation ids: -1, -2, ...
        self._client_event_id: str | None = None  # the client event being applied (errors echo it)
        self._say: Say | None = None  # the next response speaks this text instead of asking the LM
        # The reply the client's conversation.item.truncate ended while it was being spoken. The API keeps such a reply
        # going until the client cancels it, and the Agents SDK sends response.cancel right behind its truncate: that
        # cancel finds the reply already cancelled here, which is no error. Cleared when the next reply starts.
        self._cut_by_truncate: str | None = None
        self.observer: Callable[[str, Json], None] | None = None  # sees every event once sent (event bus)
        self._spoken: dict[str, Response] = {}  # recent replies, for truncation
        self._last_audio_response_id: str | None = None  # the latest response that sent audio (any conversation)
        self.item_wire = ItemWire()
        self._voice_locked = False  # assistant audio was sent: the voice may not change any more
        self.closed = False
        self._ws: ServerConnection | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    async def run(self, ws: ServerConnection) -> None:
        self._ws = ws
        writer = asyncio.create_task(self.outbox.send(ws, self._sent))
        reader = asyncio.create_task(self._reader(ws))
        self.metrics.sessions_live.inc()
        self.metrics.sessions_total.inc()
        opened = time.monotonic()
        peer = ws.remote_address[:2] if isinstance(ws.remote_address, tuple) else ws.remote_address
        self.log.info("session opened (%s, from %s)", self.cfg.kind, peer)
        try:
            await self.emit(self.events.session_created(session_to_wire(
                self.cfg, session_id=self.session_id, model=self.model)))
            # Either side ending ends the session. A writer that died (the connection is gone) may leave the
            # output queue full, with a client event waiting on it for ever: the reader is cancelled, not awaited.
            await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                reader.result()  # a failure of the session itself surfaces to the server
            elif isinstance(writer.exception(), TimeoutError):
                self.log.warning("client stopped reading: nothing could be sent for %.0f s, %d events queued; "
                                 "connection dropped", self.defaults.send_stall_s, len(self.outbox))
            elif not isinstance(writer.exception(), ConnectionClosed):  # a gone connection is the usual end
                self.log.error("sending to the client failed", exc_info=writer.exception())
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            await self.close()
            self.metrics.sessions_live.dec()
            # One line an operator can find a session's end by (a client that stopped reading is cut by the keepalive)
            self.log.info("session closed after %.1f s: code %s%s", time.monotonic() - opened,
                          ws.close_code, f" ({ws.close_reason})" if ws.close_reason else "")

    async def _reader(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                await self.receive(raw)
                # Not reading meanwhile holds the client back through the socket (websockets' max_queue).
                if (wait := self._errors.delay(time.monotonic())) > 0:
                    await asyncio.sleep(wait)

    async def close(self) -> None:
        """Free every task, timer and buffer of the session."""
        if self.closed:
            return
        self.closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        # A reply the client had seen start ends here, unfinished: it has its log line and count like one cancelled on
        # the wire, else an operator's record of it (and responses_total) stops at its start. Not sent: the
        # connection is gone (or going).
        for resp, _ in self._responses.values():
            if resp.visible and resp.status == "in_progress":
                self.log.info("response %s cancelled (session closed): %s", resp.response_id, resp.timeline())
                self.metrics.responses_total.labels(status="cancelled").inc()
            if resp.speculative and "committed" not in resp.marks:  # dropped uncommitted: started = committed + this
                self.metrics.speculations_rolled_back.inc()
        tasks = ([task for _, task in self._responses.values()] + list(self._tasks)
                 + [resp.release_task for resp, _ in self._responses.values() if resp.release_task]
                 + list(self._turn_inputs.values()) + list(self._item_transcriptions.values()))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._responses.clear()
        self._tasks.clear()
        self._turn_inputs.clear()
        self.listener.close()
        self.audio = InputAudio(self.defaults.max_input_audio_s)

    @property
    def live_tasks(self) -> int:
        pending = sum(not t.done() for t in self._turn_inputs.values())
        return (len(self._responses) + len(self._tasks) + pending + len(self._timers)
                + len(self._item_transcriptions))

    async def end_replies(self, drain_s: float) -> None:
        """Server shutdown, before the connection closes (1001): each reply in progress ends on the wire as the API
        ends every response, with response.done (cancelled), and the events queued for the client go out, for at
        most drain_s (a client that stopped reading holds the shutdown no longer)."""
        for gen_id in list(self._responses):
            self.outbox.drop_audio(gen_id)
            await self._cancel_response(gen_id, "server_shutdown")
        await self.outbox.drain(drain_s)

    def _sent(self, event: Json) -> None:
        # Seen once sent: a barge-in drops the audio still queued, which an event bus counted as the client's.
        if self.observer is not None:
            self.observer(self.session_id, event)

    async def emit(self, event: Json, gen_id: int | None = None) -> None:
        if self.closed:
            return
        self._voice_locked = self._voice_locked or event["type"] == AUDIO_DELTA
        await self.outbox.put(event, gen_id)

    def _voice_lock(self) -> str | None:
        """Why the voice may not change now (the end of the refusal's sentence), None if it may. A reply speaks in
        the voice its response.created named, from before its first audio delta: a change accepted then was not the
        voice the client heard. The API fixes the voice "once the model has responded with audio"; a reply cancelled
        before any audio leaves it free."""
        if self._voice_locked:
            return "if assistant audio is present"
        speaking = next((r for r, _ in self._responses.values() if r.audio_out and r.visible and not r.ended), None)
        return None if speaking is None else f"while response {speaking.response_id}, with audio, is in progress"

    async def error(self, exc: ProtocolError | MediaError | EngineError, event_id: str | None = None,
                    code: str | None = None) -> None:
        if isinstance(exc, ProtocolError):
            code = exc.code
            event = self.events.error_from(exc, event_id)
        else:
            code = code or ("invalid_audio" if isinstance(exc, MediaError) else "engine_error")
            event = self.events.error(message=str(exc), code=code, client_event_id=event_id,
                                      error_type="invalid_request_error" if isinstance(exc, MediaError)
                                      else "server_error")
        self.metrics.errors_total.labels(code=code).inc()
        self._errors.charge(time.monotonic())
        await self.emit(event)

    def spawn(self, coro: Awaitable[object]) -> asyncio.Task[object]:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self.task_done)
        return task

    def task_done(self, task: asyncio.Task[object]) -> None:
        """The done callback of the session's own tasks: forgets the task, and logs its failure."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("session task failed", exc_info=task.exception())

    # ---- client events -----------------------------------------------------------------------

    async def receive(self, raw: str | bytes) -> None:
        event: ce.ClientEvent | None = None
        try:
            event = ce.parse_client_event(raw, max_bytes=self.defaults.max_event_bytes)
            await self._dispatch(event)
        except (ProtocolError, MediaError) as exc:
            await self.error(exc, event.event_id if event else None)
        except Exception as exc:  # a bug parsing or handling one event must not end the session
            self.log.exception("failed to handle %s", type(event).__name__ if event else "a client event")
            await self.error(EngineError(f"internal error handling the event: {exc}"),
                             event.event_id if event else None, code="server_error")

    async def _dispatch(self, event: ce.ClientEvent) -> None:
        match event:
            case ce.InputAudioBufferAppend():
                await self.append_audio(event.audio)
            case ce.SessionUpdate():
                await self._session_update(event)
            case ce.InputAudioBufferCommit():
                await self.commit_input_audio()
            case ce.InputAudioBufferClear():
                await self.clear_input_audio()
            case ce.OutputAudioBufferClear():
                await self.clear_output_audio(event)
            case ce.ResponseCreate() if self.cfg.kind == "transcription":
                raise RemoteProtocolError("A transcription session has no responses: it only transcribes the input "
                                          "audio (connect without intent=transcription for a conversation).",
                                          code="unsupported_in_transcription_session")
            case ce.ResponseCreate():
                log_served_as(self.log, "response.create", event.served_as)
                inputs = await self.check_input(event)
                await self.checks.response_create(self.cfg, event.overrides, voice_lock=self._voice_lock())
                if event.conversation == "none":
                    await self._start_out_of_band(event, inputs)
                else:
                    self._response_overrides = (event, inputs)
                    await self.apply_for(event, te.ResponseRequested())
            case ce.ResponseCancel():
                oob = self._out_of_band(event.response_id)
                if oob is not None:
                    self.outbox.drop_audio(oob.gen_id)
                    await self._cancel_response(oob.gen_id, "client_cancelled")
                elif self._cut_by_truncate is not None and event.response_id in (None, self._cut_by_truncate):
                    self._cut_by_truncate = None  # its response.done (cancelled) went out with the truncate
                elif event.response_id is not None and event.response_id != self._current_response_id():
                    # A cancel aimed at a reply that has ended must not cancel the one in progress now.
                    raise RemoteProtocolError(f"Cancellation failed: no active response with id "
                                              f"{event.response_id!r}.", code="response_cancel_not_active",
                                              param="response_id")
                elif (resp := self.visible_response()) is not None and resp.ended:
                    # Its response.done is out (a speculation's release has just sent it) and its task is yet to take
                    # it off the list: over for the client, as a moment later, when the core would refuse the cancel.
                    raise RemoteProtocolError(tt.NO_ACTIVE_RESPONSE, code="response_cancel_not_active")
                else:  # the reply in the default conversation, as the API's cancel without a response_id
                    await self.apply_for(event, te.CancelRequested())
            case _:
                await self.handle_item_event(event)

    async def apply_for(self, event: ce.ClientEvent, request: te.Event) -> None:
        """apply() on behalf of a client event: a refusal from the state machine echoes the event's id."""
        self._client_event_id = event.event_id
        try:
            await self.apply(request)
        finally:
            self._client_event_id = None

    async def _session_update(self, event: ce.SessionUpdate) -> None:
        log_served_as(self.log, "session.update", event.served_as)
        if self.cfg.kind == "transcription" and (unused := sorted(event.patch.changes().keys() & REPLY_FIELDS)):
            self.log.warning("session.update: %s: not used by a transcription session, which has no replies",
                             ", ".join(unused))
        async with self._config_changes:
            await self._apply_session_update(event)

    async def _apply_session_update(self, event: ce.SessionUpdate) -> None:
        new = apply_patch(self.cfg, event.patch)
        # The whole update is refused, so that nothing of it half-applies.
        await self.checks.session_update(self.cfg, new, model=self.model, model_chosen=self._model_chosen,
                                         requested_model=event.model, voice_lock=self._voice_lock())
        # Everything is built before the session takes any of it: a step that fails leaves it as it was.
        parts = updated_parts(self.cfg, new, SessionParts(converter=self.converter, detector=self.detector,
                                                          turns=self.turns.config),
                              audio_ms=self.audio.total_ms, pause_ms=self.defaults.pause_ms,
                              speculation=self.defaults.speculation)
        model = self.model if event.model is None else event.model
        updated = self.events.session_updated(session_to_wire(new, session_id=self.session_id, model=model))
        self.cfg, self.converter, self.detector = new, parts.converter, parts.detector
        self.model, self._model_chosen = model, self._model_chosen or event.model is not None
        await self.emit(updated)
        await self.apply(te.ConfigChanged(parts.turns, self.audio.total_ms))

    # ---- core actions ------------------------------------------------------------------------

    async def apply(self, event: te.Event) -> None:
        for action in self.turns.handle(event, time.monotonic()):
            await self._carry_out(action)

    async def _carry_out(self, action: te.Action) -> None:
        match action:
            case te.EmitSpeechStarted(audio_ms=ms):
                await self.emit(self.events.speech_started(item_id=self._turn_item_id, audio_start_ms=ms))
            case te.EmitSpeechStopped(audio_ms=ms):
                await self.emit(self.events.speech_stopped(item_id=self._turn_item_id, audio_end_ms=ms))
            case te.CommitUserTurn(audio_end_ms=end):
                await self.commit_user_turn(end)
            case te.StartGeneration(speculative=speculative):
                resp = self._start_response(action)
                if not speculative:
                    # response.created goes out before the next client event is handled: a response.cancel or a
                    # second response.create right behind the response.create concerns a response the client saw.
                    await resp.announce()
            case te.CommitGeneration(gen_id=gen_id):
                self.metrics.speculations_committed.inc()
                resp, _ = self._responses[gen_id]
                await resp.commit()
                self.count_input_wait(resp)
                resp.release_task = asyncio.create_task(resp.release())
            case te.CancelGeneration(gen_id=gen_id, reason=reason):
                if reason in ("rollback", "stale"):  # the core's word: a speculation dropped before its commit
                    self.metrics.speculations_rolled_back.inc()
                await self._cancel_response(gen_id, reason)
            case te.FlushAudio(gen_id=gen_id):
                self.outbox.drop_audio(gen_id)
            case te.RejectRequest(code=code, message=message, active_gen=active):
                # A refused response.create (or operator say) leaves nothing behind for the next reply.
                self._response_overrides, self._say = None, None
                if active in self._responses:  # named as the Realtime API names it, so a client can cancel it
                    message = (f"{message[:-1]}: {self._responses[active][0].response_id}. Wait until the response "
                               "is finished before creating a new one.")
                await self.error(RemoteProtocolError(message, code=code), self._client_event_id)
            case te.StartTimer(key=key, deadline=deadline):
                if key == te.IDLE_TIMER:  # the silence it times starts here: after the last reply, in audio time
                    self._idle_from_ms = self.audio.total_ms
                loop = asyncio.get_running_loop()
                delay = max(0.0, deadline - time.monotonic())
                self._timers[key] = loop.call_later(
                    delay, lambda: self.spawn(self._timer_fired(key)))
            case te.CancelTimer(key=key):
                handle = self._timers.pop(key, None)
                if handle is not None:
                    handle.cancel()
            case te.EmitIdleTimeout():
                end = self.audio.total_ms
                await self.emit(self.events.timeout_triggered(
                    item_id=self._turn_item_id, audio_start_ms=self._idle_from_ms, audio_end_ms=end))

    async def _timer_fired(self, key: str) -> None:
        self._timers.pop(key, None)
        await self.apply(te.TimerFired(key))

    def reset_turn(self, end_ms: int) -> None:
        if self._prefill_task is not None:
            self._prefill_task.cancel()  # a warm-up for the turn that ended: its reply (if any) starts now
        self._turn_start_ms = end_ms
        self._turn_item_id = self.new_id("item")
        # Keep a little audio before the new turn for the next speech start's prefix padding.
        self.audio.trim(max(0, end_ms - 1000))

    def new_id(self, kind: str) -> str:
        source = self._id_sources.get(kind)
        if source is None:
            source = self._id_sources[kind] = SequentialIds(f"{kind}_{self.session_id}_")
        return source()
