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
empty) and replies are capped (tiny: 24 tokens, unless a real Chat LM answers behind --chat-url; TTS: 75 audio
tokens per sentence) so that CPU tests stay fast.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from controller.bridge import iterate_in_thread
from controller.chat_url import open_remote_chat, remote_chat_problem
from controller.errors import ConfigError
from controller.pipeline import Listener, PromptCut, ReplyText, SpeechChunk, VadStream
from controller.step_audio_layout import ChatNeed, check_layout, missing_files
from controller.step_audio_listener import StreamingTokenListener
from controller.step_audio_setup import (
    RANDOM_PROFILES, StepAudioConfig, chat_engine_config, chat_need, loading, tiny_cache_dir,
)
from controller.step_audio_text import Detokenizer, chat_messages, sample_text_token, text_piece_mask

logger = logging.getLogger(__name__)

FLOW_MAX_BATCH = 32  # flow windows of concurrent sessions run as one batch, up to this many
# An utterance's first flow window runs with the TTS LM held (its decoding paused, ~one window's time) while the LM
# speaks at most this many utterances: on an H100 the first audio came 30 ms sooner with the LM paused (run4: 190 vs
# 220 ms), on 2 CPU cores 98 ms (114 vs 212). Busier, the pauses would add up for everyone; the window runs beside.
TTS_HOLD_MAX_STREAMS = 2
MIN_PROMPT_S = 0.5  # a speaker's or a clone's prompt wav; upstream's own are 3-12 s
_REPLY_OPENING = "<|BOT|>assistant\n"  # a chat prompt's end: the reply's turn, opened


def load_step_audio(app_config: Any) -> StepAudioPipeline:
    """controller.app.load_pipeline's entry for step-audio / tiny / full-random."""
    profile = app_config.profile
    model_path = app_config.model_path
    if model_path is None:
        if profile != "tiny":
            raise ConfigError(f"--profile {profile} needs --model-path DIR "
                              f"(stepaudio-rt make-checkpoint --profile {profile} DIR writes a random one)")
        model_path = tiny_cache_dir()
        # Written when absent, and again when incomplete (a write cut short, a file deleted): the user never named
        # this folder, so an error about it would leave them nothing to act on.
        if not model_path.is_dir() or missing_files(model_path, ChatNeed.WEIGHTS):
            from controller.checkpoints import make_checkpoint
            logger.info("no --model-path: writing a tiny model folder to %s", model_path)
            make_checkpoint(model_path, profile="tiny")
    tp = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = StepAudioConfig.for_profile(profile, model_path, threads=app_config.threads,
                                      language=app_config.language, tp=tp, chat_url=app_config.chat_url,
                                      tp_step_timeout_s=app_config.tp_step_timeout_s)
    return StepAudioPipeline(cfg)


def check_voice_prompt(name: str, wav: np.ndarray, rate: int) -> None:
    """Raises StepTtsError for a prompt wav too short to be a voice (the tools check a clone's before loading)."""
    from speech_decoder.step_tts import StepTtsError

    # the trim pads the voice with 0.27 s of silence: a blip would otherwise become a "voice"
    if len(wav) < MIN_PROMPT_S * rate:
        raise StepTtsError(f"speaker {name!r}: a voice prompt needs at least {MIN_PROMPT_S:g} s of speech")


class StepAudioPipeline:
    """SpeechPipeline over a Step-Audio model folder."""

    # Upstream documents only where Step-Audio-Chat's tool definitions go (a message of role `tool_json_schemas`,
    # OpenAI's function format: stepfun-ai/Step-Audio issue #31), not how a call appears in its output, so no call
    # could be parsed out of a reply. Refused rather than ignored: a client would wait for calls that never come.
    tools_refused = ("Step-Audio-Chat has no documented tool-call output format, so this profile cannot call "
                     "function tools")

    def __init__(self, config: StepAudioConfig) -> None:
        import torch

        from vad import SileroModel

        self.config = config
        self.name = config.profile
        check_layout(config.model_path, chat_need(config))
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cpu":
            # Sessions already run the models on several threads (tokenizer, decoder, two engine loops); torch's
            # own intra-op threads on top of those oversubscribe the cores and spin (tiny: ~40x slower measured).
            torch.set_num_threads(1 if config.profile == "tiny" else max(1, config.threads))
        self._vad_model = SileroModel.load()
        self._load_speech_side(device)
        self._load_chat(device)
        self._load_asr()
        self._start_workers()
        logger.info("step-audio pipeline ready (%s, device %s, speakers %s)", config.profile, device,
                    sorted(self.tts.speakers))

    def _load_speech_side(self, device: str) -> None:
        """The tokenizer, TTS-3B, the CosyVoice decoders and the speakers, warmed for the default voice."""
        from controller.checkpoints import TOKENIZER_DIR, TTS_DIR
        from lm_engine import Engine, EngineConfig, SamplingParams, Step1Tokenizer
        from speech_decoder import CosyVoiceModel
        from speech_decoder.step_tts import COMMON_DIR, MUSIC_DIR, StepTts, find_speakers_dir
        from speech_decoder.streaming_decoder import warm_up
        from streaming_tokenizer.step_audio import StepAudioTokenizer

        root = self.config.model_path
        with loading(root / TOKENIZER_DIR):
            self.audio_tokenizer = StepAudioTokenizer.load(root / TOKENIZER_DIR)
        # TTS first with a small GPU share, then the Chat LM takes most of what is left (budgets are cumulative).
        # On one GPU the speech path's stream goes first, then the TTS LM's (the reply's next audio), then Chat's.
        tts_dir = root / TTS_DIR
        with loading(tts_dir):
            self.tts_engine = Engine.from_pretrained(
                tts_dir, device=device, progress=False,
                config=EngineConfig(kv_cache_memory_gib=0.25 if device == "cpu" else 1.0, gpu_memory_utilization=0.3,
                                    seed=self.config.seed, stream_priority=-1))
            tts_tok = self.tts_engine.tokenizer or Step1Tokenizer.from_dir(tts_dir)
        with loading(tts_dir / COMMON_DIR):
            common = CosyVoiceModel.load(tts_dir / COMMON_DIR, device=device)
        music = None
        if (tts_dir / MUSIC_DIR).is_dir():
            with loading(tts_dir / MUSIC_DIR):
                music = CosyVoiceModel.load(tts_dir / MUSIC_DIR, device=device)
        else:  # optional, as in the layout check, but a (RAP) or (哼唱) reply then sounds otherwise than upstream's
            logger.warning("%s has no %s/: RAP and humming are spoken with %s/ instead", tts_dir, MUSIC_DIR,
                           COMMON_DIR)
        self.tts = StepTts(tts_tok, common, music, add_bos=StepTts.tokenizer_adds_bos(tts_dir))
        self.output_rate = int(common.sample_rate)
        speakers = find_speakers_dir(tts_dir, root)
        assert speakers is not None, "check_layout has found it"
        with loading(speakers):
            self._register_speakers(speakers)
        self.default_voice = self.tts.default_speaker()  # Tingting, as upstream's scripts speak
        speaker, model = self.tts.resolve("", None)
        if warm_up(model, speaker.flow_prompt):  # CUDA graphs of the default voice's windows, before any reply
            logger.info("flow CUDA graphs captured for %s's window shapes", self.tts.default_speaker())
        # Every TTS prompt of a voice starts with the same ~400 speaker tokens: prefilled now, into the engine's
        # prefix cache, the first sentence of the first reply computes only its own tokens.
        self.tts_engine.generate(self.tts.prompt_ids("", speaker), SamplingParams(temperature=0.0, max_tokens=1))

    def _load_chat(self, device: str) -> None:
        """The Chat LM in lm_engine, or only its tokenizer when a --chat-url server runs it, or nothing (`tts`)."""
        from controller.checkpoints import CHAT_DIR
        from lm_engine import Engine, Step1Tokenizer

        config = self.config
        chat_dir = config.model_path / CHAT_DIR
        self.chat_engine: Any = None
        self._remote_chat: Any = None
        if config.chat_url:
            # Chat on an OpenAI-compatible server (vLLM serving Step-Audio-Chat with -tp N): it applies the
            # chat template itself; audio turns travel as their <audio_N> text. Only the tokenizer is read here.
            self._remote_chat = open_remote_chat(config.chat_url)
            self.chat_tok = Step1Tokenizer.from_dir(chat_dir)
        elif not config.chat:
            self.chat_tok = None  # `tts`: neither the Chat LM nor its folder
        else:
            with loading(chat_dir, f"tp={config.tp}"):
                self.chat_engine = Engine.from_pretrained(chat_dir, device=device, tp=config.tp, progress=False,
                                                          config=chat_engine_config(config, device == "cpu"))
                self.chat_tok = self.chat_engine.tokenizer or Step1Tokenizer.from_dir(chat_dir)
            self._text_mask = text_piece_mask(self.chat_tok, self.chat_engine.model_config.vocab_size)

    def _load_asr(self) -> None:
        self.asr = None
        self.languages: frozenset[str] | None = None  # without an ASR no transcript is made, in any language
        if self.config.asr:
            try:
                from streaming_tokenizer import WhisperAsr
                from streaming_tokenizer.whisper_asr import whisper_languages
                self.asr = WhisperAsr.load(language=self.config.language,
                                           cpu_threads=max(1, self.config.threads // 2))
                self.languages = whisper_languages()
            except Exception as exc:  # the embedded extra is optional here: transcripts are then ""
                logger.warning("no Whisper ASR (%s): user transcripts will be empty", exc)

    def _start_workers(self) -> None:
        from speech_decoder import FlowBatcher

        n = max(2, self.config.threads)
        self.tok_pool = concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="sa-tokenizer")
        self.asr_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sa-asr")
        self._llm_pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="sa-chat")
        # Decoder threads spend most of a window blocked in the flow batcher, which needs many sessions' windows in
        # flight at once to batch them: one thread per concurrently speaking session, up to its batch size.
        self._flow_batcher = FlowBatcher(max_batch=FLOW_MAX_BATCH)
        self._dec_pool = concurrent.futures.ThreadPoolExecutor(max(n, FLOW_MAX_BATCH),
                                                               thread_name_prefix="sa-decoder")
        self.tokenizer_ids = Counter("stepaudio_tokenizer_ids", "Audio token ids produced by the streaming "
                                     "tokenizer while input audio arrives", registry=None)
        self.tts_tokens = Counter("stepaudio_tts_audio_tokens", "Audio tokens generated by TTS-3B", registry=None)
        # Read at each scrape: a session, reply or fork that never gave its blocks back shows as a level that stays up.
        self.kv_free_blocks = Gauge("stepaudio_lm_free_kv_blocks", "Free KV-cache blocks of an LM engine", ["engine"],
                                    registry=None)
        self.lm_sequences = Gauge("stepaudio_lm_sequences", "Sequences an LM engine holds (sessions, replies, forks)",
                                  ["engine"], registry=None)
        for name, engine in (("tts", self.tts_engine), ("chat", self.chat_engine)):
            if engine is not None:
                self.kv_free_blocks.labels(engine=name).set_function(lambda e=engine: e.num_free_blocks)
                self.lm_sequences.labels(engine=name).set_function(lambda e=engine: e.num_sequences)

    def _register_speakers(self, folder: Path) -> None:
        import soundfile as sf

        from speech_decoder.step_tts import StepTtsError, read_speakers_info

        for name, text in read_speakers_info(folder).items():
            file = folder / f"{name}_prompt.wav"
            try:
                wav, rate = sf.read(str(file), dtype="float32", always_2d=True)
                self.register_speaker(name, wav.mean(axis=1), int(rate), text)
            except (sf.SoundFileError, StepTtsError) as exc:  # neither names the file
                raise ConfigError(f"{file}: {exc}") from exc

    def register_speaker(self, name: str, wav: np.ndarray, rate: int, prompt_text: str, *,
                         cloned: bool = False) -> None:
        """A voice from a prompt wav and its transcript (upstream registers speakers and clones this way: its
        tts.py preprocess_prompt_wav tokenises the silence-trimmed wav, the flow's prompt mel is of the whole wav)."""
        from speech_decoder.step_tts import check_prompt_ids

        check_voice_prompt(name, wav, rate)
        ids = self.audio_tokenizer.tokenize_offline(wav, rate, upstream=True, trim=True)
        check_prompt_ids(name, len(ids), self.tts_engine.model_config.max_seq_len)
        self.tts.register(name, wav, rate, prompt_text, ids, cloned=cloned)

    @property
    def voices(self) -> frozenset[str]:
        """The speakers folder's voices (their RAP / 哼唱 variants included), and any cloned since."""
        return frozenset(self.tts.speakers)

    def register_metrics(self, registry: CollectorRegistry) -> None:
        for metric in (self.tokenizer_ids, self.tts_tokens, self.kv_free_blocks, self.lm_sequences):
            registry.register(metric)

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
        return "".join(_turn(m) for m in chat_messages(messages)) + _REPLY_OPENING

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.chat_tok.encode(self.render_chat(messages), add_bos=True)

    def reply(self, request: Any) -> AsyncIterator[Any]:
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
        cut = None
        if len(ids) > limit:
            ids, cut = self._fit_prompt(request.messages, ids, limit)
        if self.config.constrain_text:
            deltas = self._reply_constrained(ids, request.temperature, max_tokens)
        else:
            deltas = self._reply_stream(ids, request.temperature, max_tokens)
        return deltas if cut is None else _after(cut, deltas)

    def _fit_prompt(self, messages: list[dict], ids: list[int], limit: int) -> tuple[list[int], PromptCut | None]:
        """A prompt longer than the Chat LM's context less the reply: the system turns at its start (the
        instructions) and the newest tokens that fit beside them, the middle dropped, which is logged. A system
        part of more than half the room is cut too (the newest tokens are the turn being answered). Returns the
        kept ids, and a PromptCut when the last turn itself lost its start (not only older turns went)."""
        turns = chat_messages(messages)
        lead = []
        for m in turns:
            if m["role"] != "system":
                break
            lead.append(_turn(m))
        head = self.chat_tok.encode("".join(lead), add_bos=True)
        if ids[:len(head)] != head or len(head) > limit // 2:
            head = ids[:1]  # the BOS alone
        kept = head + ids[len(ids) - (limit - len(head)):]
        logger.warning("chat prompt of %d tokens is longer than the %d that fit (the model's %d less the reply's "
                       "%d): kept the system message (%d tokens) and the newest %d, dropped %d", len(ids), limit,
                       self.chat_engine.model_config.max_seq_len, self.chat_engine.model_config.max_seq_len - limit,
                       len(head), len(kept) - len(head), len(ids) - len(kept))
        # The prompt ends with the last turn, then the reply's opening: what the kept tail holds of that turn.
        last = len(self.chat_tok.encode(_turn(turns[-1])))
        heard = max(0, min(last, limit - len(head) - len(self.chat_tok.encode(_REPLY_OPENING))))
        return kept, PromptCut(tokens=last, kept=heard, limit=limit) if heard < last else None

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
        detok = Detokenizer(tok)
        n = 0
        with self._chat_lm_down():
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
            detok = Detokenizer(tok)
            sid = engine.open(ids)
            finish = "length"
            generated = 0
            try:
                for step in range(max_tokens):
                    if cancel.is_set():
                        return
                    with self._chat_lm_down():
                        logits = engine.next_logits(sid).float().clone()
                    logits[~mask[: logits.numel()]] = float("-inf")
                    if step < 3 and tok.eot_id < logits.numel():
                        logits[tok.eot_id] = float("-inf")  # a few words at least
                    token = sample_text_token(logits, temperature, 0.9, gen)
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

    def new_reply_text(self) -> ReplyText:
        """The reply's leading (tag) reaches each of its sentences, as it would the whole text read at once."""
        from speech_decoder.step_tts import ReplyTag

        return ReplyTag()

    async def synthesize(self, text: str, voice: str, speed: float = 1.0) -> AsyncIterator[SpeechChunk]:
        """TTS-3B on one sentence; its audio tokens stream into a StreamingDecoder; float32 chunks at 22050 Hz, each
        with the audio tokens pushed for it (a push may yield no audio yet: its tokens then come with an empty one).
        A speed other than 1.0 becomes TTS-3B's speed tag."""
        from lm_engine import SamplingParams
        from speech_decoder import StreamingDecoder
        from speech_decoder.step_tts import speakable, with_speed

        text = text.strip()
        if not speakable(text):
            return
        text = with_speed(text, speed)
        speaker, model = self.tts.resolve(text, voice)
        ids = self.tts.prompt_ids(text, speaker)
        budget = self.tts.max_new_tokens(text, self.config.tts_max_tokens)
        params = SamplingParams(temperature=0.7, repetition_aware=True, max_tokens=budget,
                                stop_token_ids=(self.tts.tok.eot_id,))
        decoder = StreamingDecoder(model, speaker.flow_prompt, seed=self.config.seed, flow=self._flow_batcher.run)
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue[int | None] = asyncio.Queue()

        async def generate() -> None:
            n = 0
            try:
                async with contextlib.aclosing(self.tts_engine.stream(ids, params)) as stream:
                    async for t in stream:
                        tokens.put_nowait(t)
                        n += 1
            finally:
                tokens.put_nowait(None)
            # Random checkpoints never stop by themselves; a real TTS-3B that runs out of budget is cut mid-sentence.
            if n >= budget and self.config.profile not in RANDOM_PROFILES:
                logger.warning("TTS-3B used its whole budget of %d audio tokens on %r: its end may be cut off",
                               budget, text[:60])

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
                    if decoder.runs_window(len(flow)):
                        hold = decoder.runs_first_window(len(flow)) and \
                            self.tts_engine.active_streams <= TTS_HOLD_MAX_STREAMS
                        audio = await loop.run_in_executor(self._dec_pool, self._push, decoder, flow, hold)
                    else:  # only stored: no trip through a decoder thread (24 of them before the first window)
                        audio = decoder.push(flow)
                    yield SpeechChunk(audio, len(flow))
            await producer  # re-raises a generation error
            audio = await loop.run_in_executor(self._dec_pool, decoder.finish)
            if audio.size:
                yield SpeechChunk(audio)
        finally:
            if not producer.done():
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)

    def _push(self, decoder: Any, flow: list[int], hold_tts: bool) -> np.ndarray:
        """decoder.push(flow) on a decoder thread, with the TTS LM held meanwhile if asked (TTS_HOLD_MAX_STREAMS)."""
        with self.tts_engine.hold() if hold_tts else contextlib.nullcontext():
            return decoder.push(flow)

    @contextlib.contextmanager
    def _chat_lm_down(self) -> Iterator[None]:
        """A Chat LM that is down (a tensor-parallel rank lost) fails a reply as a --chat-url server that is down does:
        with why, in one log line; not with the failed step's text (gloo's, sequence ids), nor a traceback each reply.
        The detail was logged once, when it went down."""
        from lm_engine import ChatBackendError, EngineError

        try:
            yield
        except EngineError as exc:
            problem = self.chat_problem()
            if problem is None:
                raise
            raise ChatBackendError(problem) from exc

    def chat_problem(self) -> str | None:
        if self._remote_chat is not None:
            return remote_chat_problem(self._remote_chat)
        problem = self.chat_engine.problem if self.chat_engine is not None else None
        return f"the chat LM is down: {problem}; the server needs a restart" if problem else None

    def close(self) -> None:
        for pool in (self.tok_pool, self.asr_pool, self._llm_pool, self._dec_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        self._flow_batcher.close()
        for closable in (self._remote_chat, self.chat_engine, self.tts_engine):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()


def _turn(message: dict[str, str]) -> str:
    """One chat_messages() turn in Step-Audio's chat template."""
    role = "human" if message["role"] == "user" else message["role"]
    return f"<|BOT|>{role}\n{message['content']}<|EOT|>"


async def _length_as_stop(deltas: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async with contextlib.aclosing(deltas):  # type: ignore[type-var]
        async for delta in deltas:
            yield replace(delta, finish_reason="stop") if getattr(delta, "finish_reason", None) == "length" else delta


async def _after(cut: PromptCut, deltas: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The reply's deltas, told first that its prompt was cut (the session tells the client)."""
    async with contextlib.aclosing(deltas):  # type: ignore[type-var]
        yield cut
        async for delta in deltas:
            yield delta
