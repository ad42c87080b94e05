"""What Session's mixins (session_input.InputAudioMixin, session_turns.TurnsMixin, session_items.ItemsMixin,
session_replies.RepliesMixin, session_operator.OperatorMixin) use of the Session they are mixed into: its state
(SessionHost) and its methods (the SessionMethods protocol, which SessionHost extends).

Each mixin has SessionHost as its base for the type checker only (at run time the base is object): mypy then checks
every `self.x` in a mixin against these declarations, and Session's own definitions against them in turn. Session
itself could not be that base: it inherits from the mixins, so mypy saw a cycle and typed the mixins' `self` as Any.
Session, the one class made of the mixins, implements each method here (or fails to instantiate under mypy).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Protocol

import numpy as np
from websockets.asyncio.server import ServerConnection
from context_manager import Conversation
from controller import turn_events as te
from controller import turn_taking as tt
from controller.audio_io import InputConverter
from controller.errors import EngineError, MediaError, ProtocolError
from controller.input_audio import InputAudio
from controller.item_wire import ItemWire
from controller.metrics import Metrics
from controller.outbox import Outbox
from controller.pipeline import Listener, SpeechPipeline, TurnInput, VadStream
from controller.prompt_budget import PromptBudget
from controller.realtime import client_events as ce
from controller.realtime.server_events import Json, ServerEvents
from controller.realtime.session_config import SessionConfig
from controller.response import InputEntry, Response, Say
from controller.session_defaults import SessionDefaults
from lm_engine.chat import ChatRequest
from vad import TurnDetector



class SessionMethods(Protocol):
    """Session's methods, and those each mixin lends another."""

    async def apply(self, event: te.Event) -> None: ...
    async def apply_for(self, event: ce.ClientEvent, request: te.Event) -> None: ...
    async def emit(self, event: Json, gen_id: int | None = None) -> None: ...
    async def error(self, exc: ProtocolError | MediaError | EngineError, event_id: str | None = None,
                    code: str | None = None) -> None: ...
    def spawn(self, coro: Awaitable[object]) -> asyncio.Task[object]: ...
    def task_done(self, task: asyncio.Task[object]) -> None: ...
    def new_id(self, kind: str) -> str: ...
    def reset_turn(self, end_ms: int) -> None: ...

    # ---- what each mixin lends the other ------------------------------------------------------
    # TurnsMixin's, for RepliesMixin (turn_open for ItemsMixin too):
    def turn_task(self, start_ms: int, end_ms: int, *, unless_silent: bool = False) -> asyncio.Task[TurnInput]: ...
    def turn_open(self, item_id: str) -> bool: ...
    # TurnsMixin's, for ItemsMixin:
    def transcribe_audio_item(self, item_id: str, pcm: np.ndarray, rate: int,
                              around: list[str | None] | None) -> None: ...
    async def heard_around(self, pcm: np.ndarray, rate: int, around: list[str | None]) -> str | None: ...
    # TurnsMixin's, for InputAudioMixin (drop_warm_up for ItemsMixin too):
    def drop_stale_turn_inputs(self) -> None: ...
    def drop_open_turn_inputs(self) -> None: ...
    def maybe_warm_turn_input(self) -> None: ...
    def maybe_prefill(self) -> None: ...
    def drop_warm_up(self) -> None: ...
    # ItemsMixin's, for RepliesMixin:
    async def build_request(self, resp: Response, turn: tuple[str, asyncio.Task[TurnInput]] | None,
                            cfg: SessionConfig) -> ChatRequest | None: ...
    def record_reply(self, resp: Response, heard_ms: float | None) -> None: ...
    # RepliesMixin's, for ItemsMixin and TurnsMixin:
    def visible_response(self) -> Response | None: ...
    def reply_items_added(self) -> list[str]: ...
    def wire_previous(self, item_id: str) -> str | None: ...
    def last_item_sent(self) -> str | None: ...


class SessionHost(SessionMethods):
    """Session's state. A plain class, not a Protocol: mypy takes a protocol's bare `x: T` for an abstract member,
    which a mixin's own `self.x = ...` would redefine with the type of that value, unchecked against T."""

    session_id: str
    model: str
    conversation_id: str
    pipeline: SpeechPipeline
    metrics: Metrics
    defaults: SessionDefaults
    events: ServerEvents
    budget: PromptBudget
    outbox: Outbox
    cfg: SessionConfig
    turns: tt.TurnTaking
    conversation: Conversation
    listener: Listener
    detector: TurnDetector
    converter: InputConverter
    vad: VadStream
    audio: InputAudio
    log: logging.LoggerAdapter[logging.Logger]
    item_wire: ItemWire
    _responses: dict[int, tuple[Response, asyncio.Task[None]]]
    _turn_inputs: dict[tuple[int, int], asyncio.Task[TurnInput]]
    _item_transcriptions: dict[str, asyncio.Future[None]]
    _last_transcription: asyncio.Future[None] | None
    _turn_start_ms: int
    _cut_told: int | None
    _paced: bool
    _turn_item_id: str
    _prefill_task: asyncio.Task[object] | None
    _prefilled_to_ms: int
    _committed_turn: tuple[str, int, int] | None
    _cut_turns: set[str]
    _response_overrides: tuple[ce.ResponseCreate, tuple[InputEntry, ...] | None] | None
    _say: Say | None
    _cut_by_truncate: str | None
    _last_oob_gen: int
    _spoken: dict[str, Response]
    _last_audio_response_id: str | None
    _config_changes: asyncio.Lock
    _ws: ServerConnection | None
