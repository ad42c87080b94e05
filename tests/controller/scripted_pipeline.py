"""A scripted SpeechPipeline (the port a profile implements) behind the real server, session and wire.

No models: the VAD hears any chunk louder than 0.01 as speech, the listener returns a fixed transcript for
audio with speech in it, the LM streams fixed words and records every request, the synthesiser makes 50 ms
of tone per word. Everything above the pipeline (server, session, turn-taking, responses) is the real code,
so these tests see what a client sees, in milliseconds instead of a model load.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import numpy as np

from controller.app import App, AppConfig
from controller.cli import log_handler
from controller.pipeline import PromptCut, ReplyText, SpeechChunk, TurnInput, VerbatimText
from controller.server import ServerConfig
from lm_engine.chat import ChatDelta, ChatRequest, ToolCallDelta
from tests.e2e.helpers import RATE, Conversation, open_conversation, silence

CHUNK = 512  # samples at 16 kHz, as silero


class ScriptedVad:
    def __init__(self) -> None:
        self._rest = np.zeros(0, np.float32)

    def process(self, pcm16k: np.ndarray) -> list[float]:
        data = np.concatenate([self._rest, pcm16k])
        n = len(data) // CHUNK
        self._rest = data[n * CHUNK:]
        return [1.0 if np.abs(data[i * CHUNK:(i + 1) * CHUNK]).max() > 0.01 else 0.0 for i in range(n)]

    def reset(self) -> None:
        self._rest = np.zeros(0, np.float32)


class ScriptedListener:
    def __init__(self, pipeline: ScriptedPipeline) -> None:
        self._pipeline = pipeline

    def feed(self, pcm16k: np.ndarray) -> None:
        pass

    async def turn_input(self, pcm16k: np.ndarray, start_ms: int, end_ms: int,
                         language: str | None) -> TurnInput:
        p = self._pipeline
        p.languages_asked.append(language)
        seconds, transcript = p.turn_scripts.pop(0) if p.turn_scripts else (p.asr_seconds, p.transcript)
        async with p.asr_lock or contextlib.nullcontext():
            await asyncio.sleep(seconds)
        if p.asr_error is not None:
            raise RuntimeError(p.asr_error)
        text = transcript if pcm16k.size and np.abs(pcm16k).max() > 0.01 else ""
        if p.heard_as is None:
            return TurnInput.of_text(text)

        async def later() -> str:
            await asyncio.sleep(p.transcript_lag_seconds)
            return text

        return TurnInput(lm_content=p.heard_as if text else "", transcript=asyncio.ensure_future(later()))

    def close(self) -> None:
        pass


class ScriptedPipeline:
    name = "scripted"
    output_rate = 24000
    tools_refused = None
    default_voice = "joe"
    voices = None
    languages: frozenset[str] | None = None

    def __init__(self) -> None:
        self.transcript = "what time is it"
        self.asr_seconds = 0.0
        self.asr_error: str | None = None  # the listener raises this
        self.turn_scripts: list[tuple[float, str]] = []  # (ASR seconds, transcript) of the next turns heard, in turn
        self.asr_lock: asyncio.Lock | None = None  # set: one recognition at a time, as Whisper's (the others queue)
        # What the LM reads of a turn when that is not its transcript (Step-Audio's audio ids), and how long after it
        # the transcript comes (Whisper running beside the tokenizer).
        self.heard_as: str | None = None
        self.transcript_lag_seconds = 0.0
        self.reply_words = ["It", "is", "noon."]
        self.word_seconds = 0.0  # LM time per word
        self.word_pauses: dict[int, float] = {}  # more LM time before the word of that index (a stalled LM)
        self.fail_after_words: int | None = None  # the LM raises after this many words
        self.fail_with: type[Exception] = RuntimeError  # ... this (a backend's own failures are ChatBackendError)
        self.tool_calls: list[ToolCallDelta] = []  # streamed after the words, then the reply stops for them
        self.tool_call_seconds = 0.0  # LM time before each tool call delta
        self.finish_reason: str | None = None  # how the LM ends the reply (None: "tool_calls" after calls, or "stop")
        self.requests: list[ChatRequest] = []
        # set: one reply at a time, as llama.cpp's one slot (the others queue); a reply tells the session when the LM
        # takes its request, with an empty delta, as the pipelines that queue do
        self.lm_lock: asyncio.Lock | None = None
        self.languages_asked: list[str | None] = []  # the language of each turn_input() call (None: detect it)
        # Prompt tokens the LM reads (None: all): a longer last message loses its start, as Step-Audio's Chat LM cuts
        # a turn longer than its context, and the reply says so first (PromptCut).
        self.prompt_limit: int | None = None
        self.reply_text: Callable[[], ReplyText] = VerbatimText  # the per-reply hook new_reply_text() returns
        self.synthesized: list[str] = []  # every text synthesize() was given
        self.voices_used: list[str] = []  # the voice of each synthesize() call
        self.synth_seconds = 0.0  # TTS time before each sentence's audio (Step-Audio's: its transcript goes first)

    def new_vad(self) -> ScriptedVad:
        return ScriptedVad()

    def new_listener(self) -> ScriptedListener:
        return ScriptedListener(self)

    async def reply(self, request: ChatRequest) -> AsyncIterator[ChatDelta | PromptCut]:
        self.requests.append(request)
        async with self.lm_lock or contextlib.nullcontext():
            if self.lm_lock is not None:
                yield ChatDelta()
            async for delta in self._reply(request):
                yield delta

    async def _reply(self, request: ChatRequest) -> AsyncIterator[ChatDelta | PromptCut]:
        if self.prompt_limit is not None:  # the LM's own count, apart from the session's (only when it cuts)
            last = self.count_tokens(request.messages[-1]["content"])
            if last > self.prompt_limit:
                yield PromptCut(tokens=last, kept=self.prompt_limit, limit=self.prompt_limit)
        for i, word in enumerate(self.reply_words):
            if self.fail_after_words == i:
                raise self.fail_with("the LM backend went away")
            await asyncio.sleep(self.word_seconds + self.word_pauses.get(i, 0.0))
            yield ChatDelta(text=word if i == 0 else " " + word)
        for call in self.tool_calls:
            await asyncio.sleep(self.tool_call_seconds)
            yield ChatDelta(tool_call=call)
        yield ChatDelta(finish_reason=self.finish_reason or ("tool_calls" if self.tool_calls else "stop"))

    def new_reply_text(self) -> ReplyText:
        return self.reply_text()

    async def synthesize(self, text: str, voice: str, speed: float = 1.0) -> AsyncIterator[SpeechChunk]:
        self.synthesized.append(text)
        self.voices_used.append(voice)
        await asyncio.sleep(self.synth_seconds)
        for _ in text.split():  # 50 ms a word at speed 1
            yield SpeechChunk(0.2 * np.sin(np.arange(int(self.output_rate / 20 / speed)) * 0.1).astype(np.float32))

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def close(self) -> None:
        pass


def speech(seconds: float) -> np.ndarray:
    """A tone the scripted VAD hears as speech, at 24 kHz."""
    return (0.3 * np.sin(np.arange(int(seconds * RATE)) * 0.05)).astype(np.float32)


@asynccontextmanager
async def scripted_server(pipeline: ScriptedPipeline, **app: object) -> AsyncIterator[App]:
    """The real App and server on a free port, with `pipeline` as its models."""
    server = App(AppConfig(**{"server": ServerConfig(port=0), **app}), pipeline=pipeline)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def conversation(pipeline: ScriptedPipeline, **app: object) -> AsyncIterator[tuple[App, Conversation]]:
    """scripted_server with one client connected; the client is closed on the way out, its events kept."""
    async with scripted_server(pipeline, **app) as server:
        conv = await open_conversation(f"ws://127.0.0.1:{server.server.port}/v1/realtime")
        try:
            yield server, conv
        finally:
            await conv.close()


@contextmanager
def served_log(level: int = logging.INFO) -> Iterator[io.StringIO]:
    """The controller's log as `stepaudio-rt serve` writes it (its format, session tags included), in a string."""
    stream = io.StringIO()
    handler = log_handler(stream)
    root = logging.getLogger("controller")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def user_messages(request: ChatRequest) -> list[str]:
    return [m["content"] for m in request.messages if m["role"] == "user"]


async def speak_turn(conv: Conversation, pause_wait: float = 0.3) -> dict[str, object]:
    """One spoken turn under server_vad: speech, a pause long enough to speculate (and for the speculation to
    build its prompt), then the rest of the end-of-turn silence; returns the reply's response.done."""
    n = len(conv.events)
    await conv.stream(np.concatenate([speech(1.0), silence(0.3)]), pace=0)
    await asyncio.sleep(pause_wait)
    await conv.stream(silence(0.5), pace=0)
    return await conv.wait_for("response.done", after=n, timeout=10)


async def push_to_talk_turn(conv: Conversation) -> None:
    """One push-to-talk turn as the browser page and the openai SDK example send it: turn_detection null, a second
    of speech, then input_audio_buffer.commit and response.create at once (the reply is not awaited)."""
    await conv.update_session(audio={"input": {"turn_detection": None}})
    await conv.stream(np.concatenate([speech(1.0), silence(0.2)]), pace=0)
    await conv.send({"type": "input_audio_buffer.commit"})
    await conv.send({"type": "response.create"})
