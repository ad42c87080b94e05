"""The Step-Audio pipeline (profiles step-audio, tiny, full-random): one model folder, the real loaders.

    DIR/Step-Audio-Tokenizer   streaming dual-codebook tokenizer: a session's audio becomes <audio_N> ids while
                               the user speaks (worker thread, 240 ms hops), kept with their audio times
    DIR/Step-Audio-Chat        Step-1 chat LM in lm_engine (tensor parallel under torchrun: tp = WORLD_SIZE)
    DIR/Step-Audio-TTS-3B      TTS-3B LM (lm_engine) -> audio tokens -> StreamingDecoder (flow + HiFT, 22050 Hz),
                               speakers/ for the voices, CosyVoice-300M-25Hz{,-Music}

A user turn reaches the Chat LM as its `<audio_N>` text (what upstream sends vLLM; the chat tokenizer maps it back
to ids). Its transcript, which the conversation keeps as history (the paper keeps history as text), comes from the
embedded Whisper ASR when that package is installed, else it is "". The reply is the chat template
`<|BOT|>{role}\\n{content}<|EOT|>` (user -> human) streamed from the Chat LM; each sentence of it is spoken by
TTS-3B, whose audio tokens stream into the decoder so that audio leaves as soon as the first window is ready.

Random checkpoints (tiny, full-random) emit mostly audio / reserved ids as "text". For those profiles the Chat
LM samples under a mask of the tokenizer's normal text pieces (so that replies are speakable words, never
empty) and replies are capped (tiny: 24 tokens; TTS: 75 audio tokens per sentence) so that CPU tests stay fast.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import logging
import math
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from controller.bridge import iterate_in_thread
from controller.errors import ConfigError
from controller.pipeline import Listener, TurnInput, VadStream

logger = logging.getLogger(__name__)

GROUP_MS = 120  # one interleaved group: 2 vq02 + 3 vq06 ids
GROUP_IDS = 5
RANDOM_PROFILES = ("tiny", "full-random")
DEFAULT_SYSTEM = "You are a helpful assistant."
FLOW_MAX_BATCH = 32  # flow windows of concurrent sessions run as one batch, up to this many


@dataclass(frozen=True, slots=True, kw_only=True)
class StepAudioConfig:
    model_path: Path
    profile: str = "step-audio"  # step-audio | tiny | full-random
    threads: int = 2
    language: str = "en"
    tp: int = 1
    chat_url: str | None = None
    chat: bool = True  # load the Chat LM (the `tts` tool never asks it: only its tokenizer is read then)
    asr: bool = True  # Whisper transcripts for the history (when the package is installed)
    device: str | None = None  # None: cuda when available
    max_reply_tokens: int | None = None  # None: the request's max_tokens (tiny: 24)
    tts_max_tokens: int = 2048  # audio tokens per sentence at most (tiny: 75)
    constrain_text: bool = False  # sample the Chat LM under a text-pieces mask (random checkpoints)
    seed: int = 0

    @classmethod
    def for_profile(cls, profile: str, model_path: Path, **kw: Any) -> StepAudioConfig:
        random = profile in RANDOM_PROFILES
        defaults: dict[str, Any] = dict(constrain_text=random)
        if profile == "tiny":
            defaults.update(max_reply_tokens=24, tts_max_tokens=75, device="cpu")
        return cls(model_path=Path(model_path), profile=profile, **{**defaults, **kw})


def tiny_cache_dir() -> Path:
    """Where `serve --profile tiny` without --model-path keeps its folder: $STEPAUDIO_RT_CACHE/tiny."""
    from lm_engine.assets import default_cache_dir

    return default_cache_dir() / "tiny"


def chat_engine_config(on_cpu: bool, seed: int) -> Any:
    """The Chat LM's engine settings; every tensor-parallel rank must build the same."""
    from lm_engine import EngineConfig

    return EngineConfig(kv_cache_memory_gib=0.25 if on_cpu else 1.0, gpu_memory_utilization=0.9, seed=seed)


def follow_chat_rank(app_config: Any) -> None:
    """Ranks > 0 of `torchrun --nproc-per-node N stepaudio-rt serve --profile P --model-path DIR`: load this
    rank's shard of the Chat LM and run rank 0's engine steps until rank 0 closes it; no server, no other model.
    Rank 0 serves as usual and drives the others (lm_engine.engine.tp_worker). Exits the process when done."""
    import torch

    from controller.checkpoints import CHAT_DIR
    from lm_engine import Engine

    tp = int(os.environ.get("WORLD_SIZE", "1"))
    if app_config.profile not in ("step-audio", *RANDOM_PROFILES):
        raise ConfigError(f"torchrun (WORLD_SIZE={tp}) shards the Step-Audio Chat LM; profile "
                          f"{app_config.profile!r} has none")
    if app_config.model_path is None or app_config.chat_url:
        raise ConfigError("tensor parallel serving needs --model-path DIR (the same on every rank) and no "
                          "--chat-url")
    cfg = StepAudioConfig.for_profile(app_config.profile, app_config.model_path, tp=tp)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_num_threads(1)  # as rank 0 does for tiny: the ranks share the machine's cores
    chat_dir = cfg.model_path / CHAT_DIR
    logger.info("rank %s: following rank 0 with %s (tp=%d)", os.environ.get("RANK"), chat_dir, tp)
    Engine.from_pretrained(chat_dir, device=device, tp=tp, progress=False,
                           config=chat_engine_config(device == "cpu", cfg.seed))
    raise SystemExit(0)  # from_pretrained returns only on rank 0


def load_step_audio(app_config: Any) -> StepAudioPipeline:
    """controller.app.load_pipeline's entry for step-audio / tiny / full-random."""
    profile = app_config.profile
    model_path = app_config.model_path
    if model_path is None:
        if profile != "tiny":
            raise ConfigError(f"--profile {profile} needs --model-path DIR "
                              f"(stepaudio-rt make-checkpoint --profile {profile} DIR writes a random one)")
        model_path = tiny_cache_dir()
        if not (model_path / "Step-Audio-TTS-3B" / "config.json").is_file():
            from controller.checkpoints import make_checkpoint
            logger.info("no --model-path: writing a tiny model folder to %s", model_path)
            make_checkpoint(model_path, profile="tiny")
    tp = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = StepAudioConfig.for_profile(profile, model_path, threads=app_config.threads,
                                      language=app_config.language, tp=tp, chat_url=app_config.chat_url)
    return StepAudioPipeline(cfg)


class StepAudioPipeline:
    """SpeechPipeline over a Step-Audio model folder."""

    def __init__(self, config: StepAudioConfig) -> None:
        import torch

        from controller.checkpoints import CHAT_DIR, TOKENIZER_DIR, TTS_DIR
        from lm_engine import Engine, EngineConfig, SamplingParams, Step1Tokenizer
        from speech_decoder import CosyVoiceModel, FlowBatcher
        from speech_decoder.step_tts import COMMON_DIR, MUSIC_DIR, StepTts, find_speakers_dir
        from speech_decoder.streaming_decoder import warm_up
        from streaming_tokenizer.step_audio import StepAudioTokenizer
        from vad import SileroModel

        self.config = config
        self.name = config.profile
        root = config.model_path
        for sub in (TOKENIZER_DIR, CHAT_DIR, TTS_DIR):
            if not (root / sub).is_dir():
                raise ConfigError(f"{root} has no {sub}/ (expected Step-Audio-Tokenizer/, Step-Audio-Chat/, "
                                  f"Step-Audio-TTS-3B/; make-checkpoint writes that layout)")
        chat_dir = root / CHAT_DIR
        if config.chat and not config.chat_url and not any(chat_dir.glob("*.safetensors")):
            raise ConfigError(f"{chat_dir} holds no weights (make-checkpoint --with-chat-weights writes them, "
                              f"or serve it elsewhere and pass --chat-url)")
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        on_cpu = device == "cpu"
        if on_cpu:
            # Sessions already run the models on several threads (tokenizer, decoder, two engine loops); torch's
            # own intra-op threads on top of those oversubscribe the cores and spin (tiny: ~40x slower measured).
            torch.set_num_threads(1 if config.profile == "tiny" else max(1, config.threads))
        self._vad_model = SileroModel.load()
        logger.info("loading %s", root / TOKENIZER_DIR)
        self.audio_tokenizer = StepAudioTokenizer.load(root / TOKENIZER_DIR)
        # TTS first with a small GPU share, then the Chat LM takes most of what is left (budgets are cumulative).
        logger.info("loading %s", root / TTS_DIR)
        tts_dir = root / TTS_DIR
        self.tts_engine = Engine.from_pretrained(
            tts_dir, device=device, progress=False,
            config=EngineConfig(kv_cache_memory_gib=0.25 if on_cpu else 1.0, gpu_memory_utilization=0.3,
                                seed=config.seed))
        common = CosyVoiceModel.load(tts_dir / COMMON_DIR, device=device)
        music = CosyVoiceModel.load(tts_dir / MUSIC_DIR, device=device) if (tts_dir / MUSIC_DIR).is_dir() else None
        tts_tok = self.tts_engine.tokenizer or Step1Tokenizer.from_dir(tts_dir)
        self.tts = StepTts(tts_tok, common, music, add_bos=StepTts.tokenizer_adds_bos(tts_dir))
        self.output_rate = int(common.sample_rate)
        speakers = find_speakers_dir(tts_dir, root)
        if speakers is None:
            raise ConfigError(f"no speakers folder: put upstream's speakers/ (speakers_info.json, NAME_prompt.wav) "
                              f"in {tts_dir} or {root}")
        self._register_speakers(speakers)
        speaker, model = self.tts.resolve("", None)
        if warm_up(model, speaker.flow_prompt):  # CUDA graphs of the default voice's windows, before any reply
            logger.info("flow CUDA graphs captured for %s's window shapes", self.tts.default_speaker())
        # Every TTS prompt of a voice starts with the same ~400 speaker tokens: prefilled now, into the engine's
        # prefix cache, the first sentence of the first reply computes only its own tokens.
        self.tts_engine.generate(self.tts.prompt_ids("", speaker), SamplingParams(temperature=0.0, max_tokens=1))
        self.chat_engine: Any = None
        self._remote_chat: Any = None
        if config.chat_url:
            # Chat on an OpenAI-compatible server (vLLM serving Step-Audio-Chat with -tp N): it applies the
            # chat template itself; audio turns travel as their <audio_N> text. Only the tokenizer is read here.
            from lm_engine import RemoteChatBackend  # the optional `remote` extra
            logger.info("chat LM: remote server %s", config.chat_url)
            self._remote_chat = RemoteChatBackend(config.chat_url)
            self.chat_tok = Step1Tokenizer.from_dir(chat_dir)
        elif not config.chat:
            self.chat_tok = Step1Tokenizer.from_dir(chat_dir)
        else:
            logger.info("loading %s (tp=%d)", chat_dir, config.tp)
            self.chat_engine = Engine.from_pretrained(chat_dir, device=device, tp=config.tp, progress=False,
                                                      config=chat_engine_config(on_cpu, config.seed))
            self.chat_tok = self.chat_engine.tokenizer or Step1Tokenizer.from_dir(chat_dir)
            self._text_mask = _text_piece_mask(self.chat_tok, self.chat_engine.model_config.vocab_size)
        self._asr = None
        if config.asr:
            try:
                from streaming_tokenizer import WhisperAsr
                self._asr = WhisperAsr.load(language=config.language, cpu_threads=max(1, config.threads // 2))
            except Exception as exc:  # the embedded extra is optional here: transcripts are then ""
                logger.warning("no Whisper ASR (%s): user transcripts will be empty", exc)
        n = max(2, config.threads)
        self._tok_pool = concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="sa-tokenizer")
        self._asr_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sa-asr")
        self._llm_pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="sa-chat")
        # Decoder threads spend most of a window blocked in the flow batcher, which needs many sessions' windows in
        # flight at once to batch them: one thread per concurrently speaking session, up to its batch size.
        self._flow_batcher = FlowBatcher(max_batch=FLOW_MAX_BATCH)
        self._dec_pool = concurrent.futures.ThreadPoolExecutor(max(n, FLOW_MAX_BATCH),
                                                               thread_name_prefix="sa-decoder")
        self.tokenizer_ids = Counter("stepaudio_tokenizer_ids", "Audio token ids produced by the streaming "
                                     "tokenizer while input audio arrives", registry=None)
        self.tts_tokens = Counter("stepaudio_tts_audio_tokens", "Audio tokens generated by TTS-3B", registry=None)
        logger.info("step-audio pipeline ready (%s, device %s, speakers %s)", config.profile, device,
                    sorted(self.tts.speakers))

    def _register_speakers(self, folder: Path) -> None:
        import soundfile as sf

        from speech_decoder.step_tts import read_speakers_info

        for name, text in read_speakers_info(folder).items():
            wav_path = folder / f"{name}_prompt.wav"
            if not wav_path.is_file():
                logger.warning("speaker %s: missing %s", name, wav_path)
                continue
            wav, rate = sf.read(str(wav_path), dtype="float32", always_2d=True)
            self.register_speaker(name, wav.mean(axis=1), int(rate), text)

    def register_speaker(self, name: str, wav: np.ndarray, rate: int, prompt_text: str, *,
                         cloned: bool = False) -> None:
        """A voice from a prompt wav and its transcript (upstream registers speakers and clones this way)."""
        ids = self.audio_tokenizer.tokenize_offline(wav, rate, upstream=True)
        self.tts.register(name, wav, rate, prompt_text, ids, cloned=cloned)

    def register_metrics(self, registry: CollectorRegistry) -> None:
        registry.register(self.tokenizer_ids)
        registry.register(self.tts_tokens)

    # ------------------------------------------------------------------ SpeechPipeline

    def new_vad(self) -> VadStream:
        from vad import SileroVad
        return SileroVad(self._vad_model)

    def new_listener(self) -> Listener:
        return StreamingTokenListener(self)

    def count_tokens(self, text: str) -> int:
        return len(self.chat_tok.encode(text)) + 3  # + <|BOT|> role \n ... <|EOT|>

    def render_chat(self, messages: list[dict]) -> str:
        """Step-Audio's chat template over `chat_messages(messages)`."""
        roles = {"user": "human"}
        out = [f"<|BOT|>{roles.get(m['role'], m['role'])}\n{m['content']}<|EOT|>" for m in chat_messages(messages)]
        out.append("<|BOT|>assistant\n")
        return "".join(out)

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.chat_tok.encode(self.render_chat(messages), add_bos=True)

    def reply(self, request: Any) -> AsyncIterator[Any]:
        if getattr(request, "tools", None):
            logger.debug("Step-Audio Chat has no tool calling: tools ignored")
        max_tokens = request.max_tokens
        if self.config.max_reply_tokens is not None and self.config.max_reply_tokens < max_tokens:
            # The profile's own cap (random checkpoints ramble): a reply it ends is complete as far as the client's
            # max_output_tokens goes.
            return _length_as_stop(self._reply(request, self.config.max_reply_tokens))
        return self._reply(request, max_tokens)

    def _reply(self, request: Any, max_tokens: int) -> AsyncIterator[Any]:
        if self._remote_chat is not None:
            return self._reply_remote(request, max_tokens)
        ids = self.chat_prompt_ids(request.messages)
        limit = self.chat_engine.model_config.max_seq_len - max_tokens
        if len(ids) > limit:  # keep the system message and the newest tokens
            ids = ids[:1] + ids[len(ids) - limit + 1:]
        if self.config.constrain_text:
            return self._reply_constrained(ids, request.temperature, max_tokens)
        return self._reply_stream(ids, request.temperature, max_tokens)

    def _usage(self, ids: list[int], generated: int) -> Any:
        from lm_engine import ChatUsage

        offset = self.chat_tok.audio_offset
        audio = sum(1 for i in ids if i >= offset) if offset >= 0 else 0
        return ChatUsage(prompt_tokens=len(ids), completion_tokens=generated, prompt_audio_tokens=audio)

    def _reply_remote(self, request: Any, max_tokens: int) -> AsyncIterator[Any]:
        remote = self._remote_chat
        plain = replace(request, messages=chat_messages(request.messages), max_tokens=max_tokens,
                                    tools=None, tool_choice="auto")

        def run(cancel: threading.Event) -> Iterator[Any]:
            return iter(remote.stream(plain, cancel))

        return iterate_in_thread(run, self._llm_pool)

    async def _reply_stream(self, ids: list[int], temperature: float, max_tokens: int) -> AsyncIterator[Any]:
        from lm_engine import ChatDelta, SamplingParams

        tok = self.chat_tok
        params = SamplingParams(temperature=temperature, top_p=0.9, max_tokens=max_tokens,
                                stop_token_ids=(tok.eot_id, tok.bot_id))
        detok = _Detokenizer(tok)
        n = 0
        async with contextlib.aclosing(self.chat_engine.stream(ids, params)) as stream:
            async for token in stream:
                n += 1
                text = detok.push(token)
                if text:
                    yield ChatDelta(text=text)
        text = detok.flush()
        if text:
            yield ChatDelta(text=text)
        yield ChatDelta(finish_reason="length" if n >= max_tokens else "stop", usage=self._usage(ids, n))

    def _reply_constrained(self, ids: list[int], temperature: float, max_tokens: int) -> AsyncIterator[Any]:
        """Token-by-token sampling under the text-piece mask (worker thread; the engine serialises steps)."""
        import torch

        from lm_engine import ChatDelta

        engine, tok, mask = self.chat_engine, self.chat_tok, self._text_mask
        gen = torch.Generator().manual_seed(self.config.seed + len(ids))

        def run(cancel: threading.Event) -> Iterator[Any]:
            detok = _Detokenizer(tok)
            sid = engine.open(ids)
            finish = "length"
            generated = 0
            try:
                for step in range(max_tokens):
                    if cancel.is_set():
                        return
                    logits = engine.next_logits(sid).float().clone()
                    logits[~mask[: logits.numel()]] = float("-inf")
                    if step < 3 and tok.eot_id < logits.numel():
                        logits[tok.eot_id] = float("-inf")  # a few words at least
                    token = _sample(logits, temperature, 0.9, gen)
                    generated += 1
                    if token == tok.eot_id:
                        finish = "stop"
                        break
                    engine.extend(sid, [token])
                    text = detok.push(token)
                    if text:
                        yield ChatDelta(text=text)
                text = detok.flush()
                if text:
                    yield ChatDelta(text=text)
                yield ChatDelta(finish_reason=finish, usage=self._usage(ids, generated))
            finally:
                engine.release(sid)

        return iterate_in_thread(run, self._llm_pool)

    async def synthesize(self, text: str, voice: str) -> AsyncIterator[np.ndarray]:
        """TTS-3B on one sentence; its audio tokens stream into a StreamingDecoder; float32 chunks at 22050 Hz."""
        from lm_engine import SamplingParams
        from speech_decoder import StreamingDecoder

        text = text.strip()
        if not any(ch.isalnum() for ch in text):
            return
        speaker, model = self.tts.resolve(text, voice)
        ids = self.tts.prompt_ids(text, speaker)
        params = SamplingParams(temperature=0.7, repetition_aware=True,
                                max_tokens=self.tts.max_new_tokens(text, self.config.tts_max_tokens),
                                stop_token_ids=(self.tts.tok.eot_id,))
        decoder = StreamingDecoder(model, speaker.flow_prompt, seed=self.config.seed, flow=self._flow_batcher.run)
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue[int | None] = asyncio.Queue()

        async def generate() -> None:
            try:
                async with contextlib.aclosing(self.tts_engine.stream(ids, params)) as stream:
                    async for t in stream:
                        tokens.put_nowait(t)
            finally:
                tokens.put_nowait(None)

        producer = asyncio.create_task(generate())
        try:
            done = False
            while not done:
                batch = [await tokens.get()]
                while not tokens.empty():
                    batch.append(tokens.get_nowait())
                done = batch[-1] is None
                flow = self.tts.flow_tokens(t for t in batch if t is not None)
                if flow:
                    self.tts_tokens.inc(len(flow))
                    audio = await loop.run_in_executor(self._dec_pool, decoder.push, flow)
                    if audio.size:
                        yield audio
            await producer  # re-raises a generation error
            audio = await loop.run_in_executor(self._dec_pool, decoder.finish)
            if audio.size:
                yield audio
        finally:
            if not producer.done():
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)

    def close(self) -> None:
        for pool in (self._tok_pool, self._asr_pool, self._llm_pool, self._dec_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        self._flow_batcher.close()
        for closable in (self._remote_chat, self.chat_engine, self.tts_engine):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()


class StreamingTokenListener:
    """Tokenises a session's audio while it arrives (one ordered job queue on a worker thread).

    The stream runs over the whole session, so group g of ids covers session audio [120 g, 120 g + 120) ms.
    A turn [start, end) gets the groups that overlap it; the last ones (the tokenizer holds ~480 ms of lookahead)
    come from a copy of the stream state flushed with the edge rule, so the live stream is never disturbed.
    """

    MAX_GROUPS = 30_000  # one hour of ids per session

    def __init__(self, pipeline: StepAudioPipeline) -> None:
        self._p = pipeline
        self._stream = pipeline.audio_tokenizer.new_session(16000)
        self._jobs: deque[Any] = deque()
        self._lock = threading.Lock()
        self._running = False
        self._closed = False
        self._groups: list[list[int]] = []  # ids of groups _base.. (5 each)
        self._base = 0
        self._fed = 0  # samples queued
        self.samples_done = 0  # samples tokenised

    # -- event loop side

    def feed(self, pcm16k: np.ndarray) -> None:
        if self._closed or pcm16k.size == 0:
            return
        self._fed += int(pcm16k.size)
        self._submit(np.asarray(pcm16k, dtype=np.float32).copy())

    async def turn_input(self, pcm16k: np.ndarray, start_ms: int, end_ms: int,
                         language: str | None) -> TurnInput:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[int]] = loop.create_future()

        def deliver(result: object) -> None:
            if fut.done():
                return
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)  # type: ignore[arg-type]

        end_ms = max(end_ms, start_ms)
        if self._fed * 1000 // 16000 + GROUP_MS < end_ms:
            # The turn's audio did not come through feed() (should not happen): tokenise it whole.
            tokens = loop.run_in_executor(self._p._tok_pool, self._p.audio_tokenizer.tokenize_offline, pcm16k, 16000)
        else:
            self._submit(_Snapshot(start_ms, end_ms, lambda r: loop.call_soon_threadsafe(deliver, r)))
            tokens = fut
        asr = self._p._asr
        transcript: Any = None
        if asr is not None and pcm16k.size:
            transcript = loop.run_in_executor(self._p._asr_pool, asr.transcribe, pcm16k,
                                              language or self._p.config.language)
        ids = await tokens
        text = ""
        if transcript is not None:
            try:
                text = (await transcript).strip()
            except Exception:
                logger.exception("transcription failed")
        from streaming_tokenizer.step_audio import ids_to_text
        return TurnInput(transcript=text, lm_content=ids_to_text(ids))

    def close(self) -> None:
        self._closed = True
        with self._lock:
            self._jobs.clear()

    # -- worker side

    def _submit(self, job: Any) -> None:
        with self._lock:
            self._jobs.append(job)
            if self._running:
                return
            self._running = True
        try:
            self._p._tok_pool.submit(self._drain)
        except RuntimeError:  # pool shut down
            with self._lock:
                self._running = False

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._jobs or self._closed:
                    self._running = False
                    return
                job = self._jobs.popleft()
            try:
                if isinstance(job, _Snapshot):
                    job.reply(self._snapshot(job.start_ms, job.end_ms))
                else:
                    self._add(self._stream.feed(job))
                    self.samples_done += len(job)
            except Exception as exc:
                logger.exception("streaming tokenizer failed")
                if isinstance(job, _Snapshot):
                    job.reply(exc)

    def _add(self, ids: list[int]) -> None:
        if not ids:
            return
        for k in range(0, len(ids), GROUP_IDS):
            self._groups.append(ids[k:k + GROUP_IDS])
        self._p.tokenizer_ids.inc(len(ids))
        extra = len(self._groups) - self.MAX_GROUPS
        if extra > 0:
            del self._groups[:extra]
            self._base += extra

    def _snapshot(self, start_ms: int, end_ms: int) -> list[int]:
        g0 = start_ms // GROUP_MS
        g1 = math.ceil(end_ms / GROUP_MS)
        groups = self._groups
        if self._base + len(groups) < g1:  # the tail is still inside the lookahead: flush a copy
            tok = self._stream.tok
            memo = {id(tok): tok, **{id(v): v for v in vars_of(tok)}}
            tail = copy.deepcopy(self._stream, memo).finish()
            groups = groups + [tail[k:k + GROUP_IDS] for k in range(0, len(tail), GROUP_IDS)]
        lo, hi = max(0, g0 - self._base), max(0, g1 - self._base)
        return [i for g in groups[lo:hi] for i in g]


def vars_of(obj: Any) -> list[Any]:
    """The shared (read-only) model objects a tokenizer session refers to: never deep-copied."""
    return [v for v in vars(obj).values() if v is not None]


@dataclass(slots=True)
class _Snapshot:
    start_ms: int
    end_ms: int
    reply: Any


class _Detokenizer:
    """Incremental text of generated ids: audio and control ids dropped, partial UTF-8 held back."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.ids: list[int] = []
        self.sent = ""
        self._special = {tok.bos_id, tok.eot_id, tok.bot_id, 0, 2}

    def push(self, token: int) -> str:
        if token in self._special or (self.tok.audio_offset >= 0 and token >= self.tok.audio_offset):
            return ""
        self.ids.append(token)
        text = self.tok.decode(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.sent):
            return ""
        new, self.sent = text[len(self.sent):], text
        return new

    def flush(self) -> str:
        text = self.tok.decode(self.ids).replace("\ufffd", "")
        new = text[len(self.sent):] if text.startswith(self.sent) else ""
        self.sent = text
        return new


async def _length_as_stop(deltas: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async with contextlib.aclosing(deltas):  # type: ignore[type-var]
        async for delta in deltas:
            yield replace(delta, finish_reason="stop") if delta.finish_reason == "length" else delta


def chat_messages(messages: list[dict]) -> list[dict[str, str]]:
    """The conversation as Step-Audio Chat sees it: text contents (a user audio turn is its <audio_N> text), roles
    system / user / assistant, tool calls folded into the assistant's text (the model has no tool calling), and a
    default system message when the conversation has none."""
    out = []
    if not any(m.get("role") in ("system", "developer") for m in messages):
        out.append({"role": "system", "content": DEFAULT_SYSTEM})
    for m in messages:
        role = "system" if m["role"] == "developer" else m["role"]
        content = _text_of(m.get("content"))
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = "; ".join(f"{c['function']['name']}({c['function'].get('arguments', '')})"
                              for c in m["tool_calls"])
            content = (content + "\n" if content else "") + calls
        out.append({"role": role, "content": content})
    return out


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or p.get("transcript") or "") for p in content if isinstance(p, dict))
    return str(content)


def _text_piece_mask(tok: Any, vocab: int) -> Any:
    """True for ids that decode to plain text (no control, unknown, unused, byte or audio pieces) and for EOT."""
    import torch

    sp = tok.sp
    mask = torch.zeros(vocab, dtype=torch.bool)
    limit = min(vocab, sp.get_piece_size(), tok.audio_offset if tok.audio_offset >= 0 else vocab)
    for i in range(limit):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i) or sp.is_byte(i):
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("<") and piece.endswith(">"):
            continue
        text = piece.replace("\u2581", " ")
        if text.strip() and all(ch.isprintable() for ch in text):
            mask[i] = True
    if 0 <= tok.eot_id < vocab:
        mask[tok.eot_id] = True
    return mask


def _sample(logits: Any, temperature: float, top_p: float, gen: Any) -> int:
    import torch

    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_p, order = probs.sort(descending=True)
    keep = (sorted_p.cumsum(0) - sorted_p) < top_p
    sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
    choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)
    return int(order[choice])


# ---------------------------------------------------------------------- offline tools (stepaudio-rt tts / chat)

def run_offline_tool(args: Any) -> int:
    """`stepaudio-rt tts` (text -> wav, default speaker or clone) and `stepaudio-rt chat` (wav|text -> reply)."""
    import sys
    import time

    import soundfile as sf

    cfg = StepAudioConfig.for_profile(args.profile, args.model_path, threads=args.threads, asr=False,
                                      chat=args.command == "chat", chat_url=getattr(args, "chat_url", None))
    pipeline = StepAudioPipeline(cfg)
    try:
        voice = args.speaker
        if args.command == "tts" and args.clone_wav is not None:
            if not args.clone_text:
                raise ConfigError("--clone-wav needs --clone-text (the transcript of the clone wav)")
            wav, rate = sf.read(str(args.clone_wav), dtype="float32", always_2d=True)
            voice = "clone"
            pipeline.register_speaker(voice, wav.mean(axis=1), int(rate), args.clone_text, cloned=True)
        if voice is not None and voice not in pipeline.tts.speakers:
            raise ConfigError(f"unknown speaker {voice!r}; known: {', '.join(sorted(pipeline.tts.speakers))}")
        t0 = time.monotonic()
        if args.command == "tts":
            text, audio = asyncio.run(_speak_all(pipeline, [args.text], voice))
        else:
            text, audio = asyncio.run(_chat_once(pipeline, args, voice))
            print(text)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(args.out), audio, pipeline.output_rate, subtype="PCM_16")
        print(f"wrote {args.out}: {len(audio) / pipeline.output_rate:.2f} s of audio in "
              f"{time.monotonic() - t0:.2f} s", file=sys.stderr)
    finally:
        pipeline.close()
    return 0


async def _speak_all(pipeline: StepAudioPipeline, sentences: list[str], voice: str | None
                     ) -> tuple[str, np.ndarray]:
    chunks: list[np.ndarray] = []
    for sentence in sentences:
        async for chunk in pipeline.synthesize(sentence, voice or ""):
            chunks.append(chunk)
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return " ".join(sentences), audio.astype(np.float32)


async def _chat_once(pipeline: StepAudioPipeline, args: Any, voice: str | None) -> tuple[str, np.ndarray]:
    from lm_engine import ChatRequest
    from speech_decoder import SentenceChunker
    from streaming_tokenizer.step_audio import ids_to_text

    if args.wav is not None:
        import soundfile as sf
        wav, rate = sf.read(str(args.wav), dtype="float32", always_2d=True)
        content = ids_to_text(pipeline.audio_tokenizer.tokenize_offline(wav, int(rate)))
    else:
        content = args.text
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": content}]
    text = ""
    async for delta in pipeline.reply(ChatRequest(messages=messages, temperature=0.7, max_tokens=2048)):
        text += delta.text
    chunker = SentenceChunker()
    sentences = chunker.push(text) + chunker.flush()
    _, audio = await _speak_all(pipeline, sentences, voice)
    return text, audio
