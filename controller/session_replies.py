"""The replies side of a session: starting, running and cancelling responses (the conversation's, speculative or
not, and out-of-band ones), and where their items sit on the wire.

Split from session.py to keep each file about one thing; `RepliesMixin` is only ever mixed into Session and uses
its turn-taking core, emit, metrics and pipeline (session_host.SessionHost declares what it uses, for mypy).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from controller import turn_events as te
from controller import turn_taking as tt
from controller.errors import EngineError, MediaError, RemoteProtocolError
from controller.pipeline import PromptCut, TurnInput
from controller.realtime import client_events as ce
from controller.realtime.session_config import SessionConfig, apply_patch
from controller.response import InputEntry, Response
from controller.response_settings import ResponseSettings
from lm_engine.chat import ChatBackendError

if TYPE_CHECKING:
    from controller.session_host import SessionHost as _Base
else:
    _Base = object


# The API's reasons for a cancelled response: "turn_detected" or "client_cancelled". A server shutdown is neither:
# it gives none (the close code that follows, 1001 going away, says why).
_WIRE_CANCEL_REASONS: dict[str, str | None] = {"barge_in": "turn_detected", "server_shutdown": None}


class RepliesMixin(_Base):
    def _response_settings(self, cfg: SessionConfig) -> ResponseSettings:
        limit = cfg.max_output_tokens
        default = self.defaults.max_output_tokens
        cap = default * 4  # the longest reply: "inf", and any larger number, get this
        return ResponseSettings(
            modalities=cfg.output_modalities, voice=cfg.voice, speed=cfg.speed, output_format=cfg.output_format,
            temperature=cfg.temperature if cfg.temperature is not None else 0.7,
            max_output_tokens=default if limit is None else cap if limit == "inf" else min(limit, cap))

    def _new_response(self, gen_id: int, speculative: bool, create: ce.ResponseCreate | None,
                      inputs: tuple[InputEntry, ...] | None = None) -> tuple[Response, SessionConfig]:
        """A reply under the session's config with the response.create's overrides (inputs: its response.input, as
        check_input made it); and that config."""
        cfg = self.cfg if create is None else apply_patch(self.cfg, create.overrides)
        resp = Response(gen_id=gen_id, speculative=speculative, events=self.events, new_id=self.new_id,
                        pipeline=self.pipeline, settings=self._response_settings(cfg),
                        emit=lambda e: self.emit(e, gen_id), previous_item_id=None,
                        on_first_audio=lambda: self._first_audio(gen_id),
                        on_prompt_cut=lambda cut: self._notice_prompt_cut(resp, cut),
                        count_texts=self.budget.texts_tokens, log=self.log)
        if create is not None:
            resp.out_of_band = create.conversation == "none"
            resp.input_items = inputs
            resp.metadata = create.metadata
        resp.conversation_id = None if resp.out_of_band else self.conversation_id
        return resp, cfg

    async def _start_out_of_band(self, create: ce.ResponseCreate, inputs: tuple[InputEntry, ...] | None) -> None:
        """A response.create with conversation "none". The API runs these beside the conversation's reply (only one
        response writes to the conversation at a time) and VAD interrupts only that one, so turn-taking never sees
        them; their generation ids count down from -1, apart from its own."""
        self._last_oob_gen -= 1
        resp, cfg = self._new_response(self._last_oob_gen, False, create, inputs)
        self._responses[resp.gen_id] = (resp, asyncio.create_task(self._run_response(resp, None, cfg)))
        await resp.announce()

    def _out_of_band(self, response_id: str | None) -> Response | None:
        """The out-of-band reply in progress of that id (one whose response.done is out has none left to cancel)."""
        return next((resp for resp, _ in self._responses.values()
                     if resp.out_of_band and resp.response_id == response_id and not resp.ended), None)

    def _start_response(self, action: te.StartGeneration) -> Response:
        create, inputs = self._response_overrides or (None, None)
        self._response_overrides = None
        resp, cfg = self._new_response(action.gen_id, action.speculative, create, inputs)
        resp.answers_audio_end_ms = action.audio_end_ms
        self._cut_by_truncate = None  # a cancel from now on concerns this reply
        resp.say, self._say = self._say, None
        turn = None
        if action.audio_end_ms is not None:
            # Capture the turn now: by the time the task runs, the session may have moved on. A
            # speculation answers the turn still open; a reply at end of turn, the one just committed.
            item_id, start = self._turn_item_id, self._turn_start_ms
            if self._committed_turn is not None and self._committed_turn[2] == action.audio_end_ms:
                item_id, start, _ = self._committed_turn
            turn = (item_id, self.turn_task(start, action.audio_end_ms))
            resp.answers_turn = (item_id, start, action.audio_end_ms)
        elif (create is not None and self._committed_turn is not None
              and self.conversation.last_item_id() == self._committed_turn[0]):
            # A reply the client asked for right after a commit (push-to-talk) answers that turn as the LM reads a
            # spoken turn (Step-Audio: its audio ids), from the input the commit started.
            item_id, start, end = self._committed_turn
            task = self._turn_inputs.get((start, end))
            turn = (item_id, task) if task is not None else None
            resp.answers_turn = self._committed_turn
        if action.speculative:
            self.metrics.speculations_started.inc()
        self._responses[action.gen_id] = (resp, asyncio.create_task(self._run_response(resp, turn, cfg)))
        return resp

    async def _notice_prompt_cut(self, resp: Response, cut: PromptCut) -> None:
        """The chat LM read only the end of a reply's prompt, down into the spoken turn it answers: the reply hears
        only the turn's end, which the user would otherwise learn only from a reply to part of what they said. Told
        once per turn, by the reply the client gets (Response tells it once released)."""
        if resp.answers_turn is None or resp.answers_turn[0] in self._cut_turns:
            return  # no spoken turn: the session's prompt budget keeps text prompts well within the context
        item_id, start_ms, end_ms = resp.answers_turn
        self._cut_turns.add(item_id)
        seconds = (end_ms - start_ms) / 1000
        await self.error(MediaError(
            f"The user turn {item_id} lasted {seconds:.0f} s; the chat model reads at most {cut.limit} tokens of "
            f"prompt (its context less the reply), so only its last {seconds * cut.kept / cut.tokens:.0f} s were "
            "answered. Speak in shorter turns, or commit the buffer more often."), code="turn_truncated")

    def visible_response(self) -> Response | None:
        """The reply in progress in the conversation as the client knows it (a speculation it has not seen yet is
        none; out-of-band replies run beside it)."""
        entry = self._responses.get(self.turns.current_gen) if self.turns.current_gen is not None else None
        return entry[0] if entry is not None and entry[0].visible else None

    def _current_response_id(self) -> str | None:
        resp = self.visible_response()
        return resp.response_id if resp is not None else None

    def reply_items_added(self) -> list[str]:
        """The output items of the reply in progress that the client has seen added. They join the conversation only
        when the reply ends, right after the item the reply follows (its previous_item_id)."""
        resp = self.visible_response()
        return [] if resp is None else resp.conversation_items()

    def _as_seen(self, previous: str | None) -> str | None:
        """An item's predecessor in the conversation as the client sees it: the reply in progress's items added on the
        wire sit right after the item the reply follows, so what follows that item follows them."""
        items = self.reply_items_added()
        resp = self.visible_response()
        return items[-1] if items and resp is not None and previous == resp.previous_item_id else previous

    def wire_previous(self, item_id: str) -> str | None:
        """The item that precedes item_id (in the conversation) as the client sees it."""
        return self._as_seen(self.conversation.previous_item_id(item_id))

    def last_item_sent(self) -> str | None:
        """The item a new one appended follows on the wire."""
        return self._as_seen(self.conversation.last_item_id())

    def _first_audio(self, gen_id: int) -> None:
        resp = self._responses.get(gen_id)
        if resp is None:
            return
        self._last_audio_response_id = resp[0].response_id
        end = resp[0].answers_audio_end_ms
        arrived = self.audio.arrival_time(end) if end is not None else None
        if arrived is not None and resp[0].first_audio_at is not None:
            self.metrics.first_audio_latency.observe(max(0.0, resp[0].first_audio_at - arrived))
        self.spawn(self.apply(te.GenerationAudioStarted(gen_id)))

    async def _run_response(self, resp: Response, turn: tuple[str, asyncio.Task[TurnInput]] | None,
                            cfg: SessionConfig) -> None:
        try:
            request = resp.say if resp.say is not None else await self.build_request(resp, turn, cfg)
            resp.mark("input_ready")
            if turn is not None:
                resp.input_wait = resp.marks["input_ready"] - resp.marks["start"]
                self.count_input_wait(resp)
            # A speculation gets here before the turn it answers is committed. It is committed only right after
            # that turn (anything else joining the conversation makes it stale), so its reply follows that turn.
            if turn is not None and self.turn_open(turn[0]):
                resp.previous_item_id = turn[0]
            else:
                resp.previous_item_id = self.conversation.last_item_id()
            if request is None:  # nothing was said: no reply
                await resp.finish_empty()
            else:
                await resp.run(request)
            await resp.wait_released()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a model failed: this reply fails, the session goes on
            if isinstance(exc, ChatBackendError):  # expected (the chat server is down or refused): its message says it
                self.log.error("response %s failed: %s", resp.response_id, exc)
            else:
                self.log.exception("response %s failed", resp.response_id)
            with contextlib.suppress(Exception):
                await resp.finish_failed(str(exc))
            # A speculation that failed stays invisible until it is committed (a rollback cancels it here).
            await resp.wait_released()
            await self.error(EngineError(f"response generation failed: {exc}"), code="response_failed")
        self.record_reply(resp, heard_ms=None)
        self.log.info("response %s %s (%s): %s", resp.response_id, resp.status,
                      "speculative" if resp.speculative else "direct", resp.timeline())
        self.metrics.responses_total.labels(status=resp.status).inc()
        if resp.speech.synth_seconds and resp.speech.audio_ms:
            self.metrics.tts_rtf.observe(resp.speech.synth_seconds / (resp.speech.audio_ms / 1000.0))
        self._responses.pop(resp.gen_id, None)
        await self.apply(te.GenerationFinished(resp.gen_id))

    def count_input_wait(self, resp: Response) -> None:
        """Observe how long a reply waited for its turn's input, once it is a reply the user gets: a speculation
        discarded at the end of the turn delayed nobody, and counting it skewed the histogram (its help text)."""
        if resp.input_wait is not None and (not resp.speculative or "committed" in resp.marks):
            self.metrics.turn_input_wait.observe(resp.input_wait)
            resp.input_wait = None

    async def clear_output_audio(self, event: ce.OutputAudioBufferClear) -> None:
        """output_audio_buffer.clear: cut off the audio being played, whatever response it belongs to. Each reply cut
        off ends as a response.cancel would end it (response.done cancelled), then output_audio_buffer.cleared names
        it. The API documents one response's audio at a time; with out-of-band replies speaking beside the
        conversation's, all of them are cut off, each with its own cleared event (undocumented: the least surprising
        reading of "clear the buffer", since the client hears them all)."""
        cleared = False
        # The conversation's reply: there is none to stop while only a speculation runs.
        if self.turns.state in (tt.TurnState.RESPONDING, tt.TurnState.SPEAKING):
            response_id = self._current_response_id()
            await self.apply_for(event, te.CancelRequested())
            if response_id is not None:
                await self.emit(self.events.output_audio_buffer_cleared(response_id=response_id))
                cleared = True
        # Out-of-band replies that speak; a text-only one puts nothing in the output audio buffer and goes on.
        for resp in [r for r, _ in self._responses.values() if r.out_of_band and r.audio_out]:
            self.outbox.drop_audio(resp.gen_id)
            await self._cancel_response(resp.gen_id, "client_cancelled")
            await self.emit(self.events.output_audio_buffer_cleared(response_id=resp.response_id))
            cleared = True
        if cleared:
            return
        # Nothing left to cut (the documented order is response.cancel first, then this): the buffer is empty, and a
        # client that waits for cleared gets it, naming the reply whose audio was sent last, in or out of band.
        if self._last_audio_response_id is not None:
            await self.emit(self.events.output_audio_buffer_cleared(response_id=self._last_audio_response_id))
            return
        # No response ever spoke: cleared must name "the response that produced the audio", and there is none, so
        # the client gets an error (with its event_id) rather than silence it would wait on.
        raise RemoteProtocolError("There is no response audio to clear: no response has sent audio in this session.",
                                  code="output_audio_buffer_empty")

    async def _cancel_response(self, gen_id: int, reason: str) -> None:
        entry = self._responses.get(gen_id)
        # A reply whose response.done is out (a speculation's release has just sent it) is over for the client: its
        # task, about to resume, records it as it ended. Cancelling it sent a second response.done, cancelled.
        if entry is None or entry[0].ended:
            return
        del self._responses[gen_id]
        resp, task = entry
        tasks = [task] + ([resp.release_task] if resp.release_task else [])
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if resp.visible:
            heard = resp.heard_ms_now()
            await resp.finish_cancelled(_WIRE_CANCEL_REASONS.get(reason, reason))
            # Only the server's own barge-in cuts the item to what was heard, and says so with
            # conversation.item.truncated. A client's response.cancel (or output_audio_buffer.clear) leaves the item
            # as generated up to the cancel, as response.done and conversation.item.done showed it: the API keeps
            # what was generated and leaves cutting it to conversation.item.truncate, which the client sends since
            # only it knows what it played (the openai SDK's interruption pattern: cancel, then truncate).
            server_cut = reason == "barge_in"
            self.record_reply(resp, heard_ms=heard if server_cut else None)
            self.log.info("response %s cancelled (%s, %d ms of its audio heard): %s", resp.response_id, reason,
                          int(heard), resp.timeline())
            self.metrics.responses_total.labels(status="cancelled").inc()
            if server_cut and resp.audio_out and resp.item_id in self.conversation:
                await self.emit(self.events.item_truncated(item_id=resp.item_id, content_index=0,
                                                           audio_end_ms=int(heard)))
