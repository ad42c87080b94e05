"""The speech pipeline a session drives, and the embedded profile's implementation of it.

A pipeline bundles the models of one profile. Sessions share it; every model call runs on the
pipeline's worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from prometheus_client import CollectorRegistry

from context_manager import TemplateCosts, measure_template_costs
from context_manager.conversation import MESSAGE_OVERHEAD_TOKENS, Message
from controller.bridge import call_in_thread, iterate_in_thread
from controller.chat_url import open_remote_chat, remote_chat_problem
from controller.errors import PipelineClosed, stop_if_cancelled
from lm_engine.chat import ChatDelta, ChatRequest, PrefillBackend

if TYPE_CHECKING:
    from lm_engine.backends.remote import RemoteChatBackend

logger = logging.getLogger(__name__)

TEMPLATE_COSTS_KEPT = 64  # tools lists whose template costs the embedded pipeline keeps (sessions mostly share one)


class VadStream(Protocol):
    def process(self, pcm16k: np.ndarray) -> list[float]: ...
    def reset(self) -> None: ...


@dataclass(frozen=True, slots=True)
class TurnInput:
    """What a user turn becomes: the content the LM receives for it now (the transcript, or Step-Audio's
    `<audio_N>` tokens) and its transcript (kept in the conversation, shown to the client). The transcript may come
    after the content: Step-Audio's Chat LM reads the turn's audio ids, so its reply need not wait for Whisper."""

    lm_content: str
    transcript: asyncio.Future[str]  # shared: await it through asyncio.shield

    @classmethod
    def of_text(cls, text: str) -> TurnInput:
        """A turn that the LM reads as its transcript."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        done.set_result(text)
        return cls(lm_content=text, transcript=done)


@dataclass(frozen=True, slots=True)
class PromptCut:
    """A reply's first item when its prompt is longer than the LM reads (its context less the reply): the prompt's
    start went, down into its last message (the turn being answered), of which the LM reads the last `kept` of
    `tokens` tokens. The reply goes on from what was kept."""

    tokens: int
    kept: int
    limit: int  # prompt tokens the LM reads at most


@dataclass(frozen=True, slots=True)
class SpeechChunk:
    """A piece of synthesised speech, and the audio tokens the synthesiser generated for it (a TTS that speaks
    through audio tokens, as Step-Audio's TTS-3B; 0 for one that makes the waveform directly, as Piper). They are
    the reply's output audio tokens in response.done's usage."""

    pcm: np.ndarray  # [samples] float32 at the pipeline's output_rate; may be empty when only tokens were made
    audio_tokens: int = 0


class ReplyText(Protocol):
    """A reply's own hook between its sentences and synthesize(), one per reply: the text each sentence is
    synthesised as, which may depend on the reply's earlier sentences (Step-Audio carries the reply's leading
    instruction tag to each). What the client and the conversation see is the sentence as the LM wrote it."""

    def for_synthesis(self, sentence: str) -> str: ...


class VerbatimText:
    """ReplyText of a synthesiser that reads each sentence as it is."""

    def for_synthesis(self, sentence: str) -> str:
        return sentence


class Listener(Protocol):
    """Per-session input side of a profile: sees the 16 kHz audio as it arrives."""

    def feed(self, pcm16k: np.ndarray) -> None:
        """Called on the event loop for every piece of input audio; must not block (offload work)."""

    async def turn_input(self, pcm16k: np.ndarray, start_ms: int, end_ms: int,
                         language: str | None) -> TurnInput:
        """The turn [start_ms, end_ms) of the session's audio (`pcm16k` holds exactly that audio)."""

    def close(self) -> None: ...


class SpeechPipeline(Protocol):
    """What a session needs from a profile's models. A profile may have the optional features below too."""

    # Read-only properties: a profile may declare each narrower, as a class attribute (voices = None) or a property.
    @property
    def name(self) -> str: ...
    @property
    def output_rate(self) -> int: ...  # sample rate of synthesize()'s chunks
    @property
    def tools_refused(self) -> str | None: ...  # why this profile's chat LM cannot call function tools (None: it can)
    @property
    def default_voice(self) -> str: ...  # what a session speaks in until the client picks a voice (session.created)
    @property
    def voices(self) -> frozenset[str] | None: ...  # the voices a client may pick (None: any name, in the one voice)
    @property
    def languages(self) -> frozenset[str] | None: ...  # language codes a session may transcribe in (None: any)

    def new_vad(self) -> VadStream: ...
    def new_listener(self) -> Listener: ...
    # The reply's stream. Its first item says the LM took the request and reads its prompt (which then counts as the
    # reply's input tokens): an LM that queues requests yields an empty ChatDelta when it takes one.
    def reply(self, request: ChatRequest) -> AsyncIterator[ChatDelta | PromptCut]: ...
    def new_reply_text(self) -> ReplyText: ...
    def synthesize(self, text: str, voice: str, speed: float = 1.0) -> AsyncIterator[SpeechChunk]: ...
    def count_tokens(self, text: str) -> int: ...  # the chat LM's tokens of a text; may block for milliseconds
    def close(self) -> None: ...


# A pipeline's optional features, one protocol each: the session or the app asks `isinstance(pipeline, Feature)`,
# which mypy narrows, so that each call is checked against its signature as the required ones are.

@runtime_checkable
class Prefills(Protocol):
    async def prefill(self, request: ChatRequest) -> None:
        """Warm the LM's prompt cache with a request whose prompt a later reply will start with (sessions call it
        while the user speaks)."""


@runtime_checkable
class MeasuresTemplate(Protocol):
    def template_costs(self, tools: list[Message], system: bool) -> TemplateCosts:
        """The TemplateCosts of the chat LM's template for a ChatRequest's tools. Blocking: sessions ask on a worker
        thread for every prompt, and count ChatML's markers and no tools of a pipeline without it."""


@runtime_checkable
class CountsAudioTokens(Protocol):
    def count_audio_tokens(self, text: str) -> int:
        """How many of count_tokens' tokens of a text are audio (Step-Audio's <audio_N> pieces): a reply's input
        audio tokens when its LM reported no counts. Blocking, as count_tokens; a pipeline without it has none."""


@runtime_checkable
class ChecksChat(Protocol):
    def chat_problem(self) -> str | None:
        """Why the chat LM cannot answer now (a chat server down), or None. Blocking: /healthz asks it in a thread."""


@runtime_checkable
class OwnsMetrics(Protocol):
    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Add the pipeline's own counters to the server's /metrics."""


class RefusesAfterClose:
    """A pipeline whose close() releases its models. Each use checks here first, so that one after close() says the
    pipeline is closed: it raised AttributeError for a model dropped, or a shut pool's 'cannot schedule new futures
    after shutdown', and a library user read a bug in the pipeline."""

    name: str
    _closed = False

    def _close_once(self) -> bool:
        """Marks the pipeline closed; False when it already was (its models are released once)."""
        first, self._closed = not self._closed, True
        return first

    def _check_open(self, part: str) -> None:
        if self._closed:
            raise PipelineClosed(f"the {self.name} pipeline is closed: no {part} after close()")


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddedConfig:
    language: str = "en"
    threads: int = 2
    # llama.cpp's threads wait for each other at every step of a token: as many of them as cores, beside the ASR and
    # TTS that run while it decodes (and any other busy process), and one of them descheduled stalls the others.
    # On 2 loaded cores 2 threads gave 0.6 tokens/s (below speaking pace), 1 thread 4.5 (bench/RESULTS.md).
    lm_threads: int = 1
    n_ctx: int = 4096
    chat_url: str | None = None  # an OpenAI-compatible server for the chat LM instead of in-process llama.cpp
    lm_nice: int = 0  # niceness of llama.cpp's threads (Linux); see LlamaCppConfig.nice
    lm_slots: int = 1  # replies llama.cpp decodes at once; see LlamaCppConfig.n_parallel


class EmbeddedPipeline(RefusesAfterClose, Prefills, MeasuresTemplate, ChecksChat):
    """Silero VAD + Whisper (faster-whisper) + Qwen2.5-0.5B (xllamacpp) + Piper, all on the CPU."""

    name = "embedded"
    tools_refused = None
    default_voice = "joe"  # the one packaged Piper voice
    voices = None  # OpenAI's voice names included: stock clients send them

    def __init__(self, config: EmbeddedConfig, cancel: threading.Event | None = None) -> None:
        """Loads the models one after another; LoadCancelled before the next one once `cancel` is set."""
        # Imported here so that importing the controller never loads model runtimes.
        from lm_engine import ChatBackend, LlamaCppBackend
        from lm_engine.assets import embedded_gguf_path
        from speech_decoder import PiperTts
        from streaming_tokenizer import WhisperAsr
        from streaming_tokenizer.whisper_asr import normalize_language, whisper_languages
        from vad import SileroModel

        def loading(what: str) -> None:
            stop_if_cancelled(cancel)
            logger.info("loading %s", what)

        self.config = config
        loading("silero-vad")
        self._vad_model = SileroModel.load()
        loading(f"Whisper ({normalize_language(config.language)})")  # as Whisper reads it: "EN-us" is en
        self._asr = WhisperAsr.load(language=config.language, cpu_threads=config.threads)
        self.languages = whisper_languages()
        loading("Piper TTS")
        # Two threads even on two cores, beside llama.cpp's: the latency bench measured synthesis RTF
        # 0.124 -> 0.096 with them (2 vCPUs), and every later sentence is synthesised well ahead of playback.
        self._tts = PiperTts.load(cpu_threads=min(2, config.threads))
        self.output_rate = int(self._tts.sample_rate)
        self._llm: ChatBackend
        self._remote: RemoteChatBackend | None = None  # the --chat-url server, asked whether it answers
        self._template_costs: dict[tuple[str, bool], TemplateCosts] = {}
        self._template_costs_lock = threading.Lock()  # sessions ask from worker threads
        self._count_tokens: Callable[[str], int]
        self._render_prompt: Callable[[list[Message], list[Message] | None], str] | None = None  # None: not here
        if config.chat_url:
            self._llm = self._remote = open_remote_chat(config.chat_url)
            self._count_tokens = self._remote.estimate_tokens  # the server's model and tokenizer are not here
        else:
            loading("the chat LM")
            llm = LlamaCppBackend.load(embedded_gguf_path(), n_threads=config.lm_threads, n_ctx=config.n_ctx,
                                       nice=config.lm_nice, n_parallel=config.lm_slots)
            self._llm, self._count_tokens, self._render_prompt = llm, llm.count_tokens, llm.render_prompt
        # ASR, LLM and TTS each get their own thread so that synthesis of one sentence overlaps
        # generation of the next; llama.cpp serialises its own requests.
        self._asr_pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="asr")
        self._llm_pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="llm")
        self._tts_pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="tts")

    def new_vad(self) -> VadStream:
        from vad import SileroVad
        self._check_open("voice activity detection")
        return SileroVad(self._vad_model)

    def new_listener(self) -> Listener:
        return _TranscribingListener(self)

    async def transcribe(self, pcm16k: np.ndarray, language: str | None) -> str:
        self._check_open("speech-to-text")
        return await call_in_thread(self._asr_pool, self._asr.transcribe, pcm16k, language or self.config.language)

    def reply(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        self._check_open("chat LM")
        llm = self._llm

        def run(cancel: threading.Event) -> Iterator[ChatDelta]:
            return iter(llm.stream(request, cancel))

        return iterate_in_thread(run, self._llm_pool)

    async def prefill(self, request: ChatRequest) -> None:
        """Warm the LM's prompt cache with a request whose prompt a later reply will start with."""
        self._check_open("chat LM")
        llm = self._llm
        if not isinstance(llm, PrefillBackend):  # a --chat-url server's cache is not ours to warm
            return
        # Cancelling the awaiting task (the session closed, its turn ended) leaves the thread inside llama.cpp:
        # the cancel event tells it to stop there, else it would hold the LM for other sessions' replies.
        await call_in_thread(self._llm_pool, llm.prefill, request)

    def new_reply_text(self) -> ReplyText:
        return VerbatimText()  # Piper has no instruction tags

    def synthesize(self, text: str, voice: str, speed: float = 1.0) -> AsyncIterator[SpeechChunk]:
        self._check_open("text-to-speech")
        tts = self._tts

        def run(cancel: threading.Event) -> Iterator[SpeechChunk]:
            for chunk in tts.synthesize(text, speed):
                if cancel.is_set():
                    return
                yield SpeechChunk(chunk)  # Piper makes the waveform from phonemes: no audio tokens

        return iterate_in_thread(run, self._tts_pool, maxsize=8)

    def count_tokens(self, text: str) -> int:
        """Blocking (a loopback call to llama.cpp): sessions count on a worker thread, each text once."""
        self._check_open("chat LM")
        return self._count_tokens(text)

    def template_costs(self, tools: list[Message], system: bool) -> TemplateCosts:
        """Blocking (about 15 loopback calls the first time a tools list is seen): sessions ask on a worker thread.
        A --chat-url server's template is not here: none counted (its prompts are estimated anyway)."""
        if self._render_prompt is None or not tools:  # ChatML's markers are TemplateCosts' own
            return TemplateCosts()
        key = (json.dumps(tools, sort_keys=True), system)
        with self._template_costs_lock:
            costs = self._template_costs.get(key)
        if costs is None:
            costs = measure_template_costs(self._render_prompt, self._count_tokens, tools, system=system,
                                           message_overhead=MESSAGE_OVERHEAD_TOKENS)
            with self._template_costs_lock:
                if len(self._template_costs) >= TEMPLATE_COSTS_KEPT:  # a client may send new tools every turn
                    del self._template_costs[next(iter(self._template_costs))]
                self._template_costs[key] = costs
        return costs

    def chat_problem(self) -> str | None:
        return remote_chat_problem(self._remote) if self._remote is not None else None

    def close(self) -> None:
        """Stop taking work and release the models: llama.cpp's threads and its loopback listener once its requests
        under way have stopped (LlamaCppBackend.close waits for them), the ASR's, TTS's and VAD's native sessions
        and thread pools once no call under way holds them. Blocking (0.2-0.3 s idle on 2 cores): App calls it in a
        thread. Any use afterwards raises PipelineClosed."""
        if not self._close_once():
            return
        for pool in (self._asr_pool, self._llm_pool, self._tts_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        self._llm.close()
        # Their last references (a session's VAD stream holds the VAD's): the native sessions go with them.
        del self._asr, self._tts, self._vad_model


class _TranscribingListener:
    """Whisper needs the whole turn at once: nothing to do while audio streams in."""

    def __init__(self, pipeline: EmbeddedPipeline) -> None:
        self._pipeline = pipeline

    def feed(self, pcm16k: np.ndarray) -> None:
        pass

    async def turn_input(self, pcm16k: np.ndarray, start_ms: int, end_ms: int,
                         language: str | None) -> TurnInput:
        text = (await self._pipeline.transcribe(pcm16k, language)).strip()
        return TurnInput.of_text(text)

    def close(self) -> None:
        pass
