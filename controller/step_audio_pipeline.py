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
The Chat LM's side (prompts, context cuts, replies) is controller.step_audio_chat, speaking a sentence
controller.step_audio_synthesis; this module loads the models and composes them.

Random checkpoints (tiny, full-random) are capped so that CPU tests stay fast: replies at 24 tokens (unless a real
Chat LM answers behind --chat-url), TTS at 75 audio tokens per sentence.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from context_manager import TemplateCosts
from context_manager.conversation import Message
from controller.errors import ConfigError, stop_if_cancelled
from controller.pipeline import (
    ChecksChat, CountsAudioTokens, Listener, MeasuresTemplate, OwnsMetrics, PromptCut, RefusesAfterClose, ReplyText,
    SpeechChunk, VadStream,
)
from controller.step_audio_chat import StepAudioChat
from controller.step_audio_layout import ChatNeed, check_layout, check_weights_match, missing_files
from controller.step_audio_listener import StreamingTokenListener
from controller.step_audio_setup import (StepAudioConfig, chat_need, loading, tiny_cache_dir, tiny_folder_error,
                                         whisper_cache_error)
from controller.step_audio_synthesis import SentenceSynthesizer
from lm_engine.chat import ChatDelta, ChatRequest

if TYPE_CHECKING:  # imported where the models load: it brings torch
    from lm_engine.engine_api import Engine

logger = logging.getLogger(__name__)


def load_step_audio(app_config: Any, cancel: threading.Event | None = None) -> StepAudioPipeline:
    """controller.app.load_pipeline's entry for step-audio / tiny / full-random; LoadCancelled once `cancel` is set
    (before the next model loads)."""
    if app_config.model_path is not None:
        return StepAudioPipeline(_pipeline_config(app_config, app_config.model_path), cancel)
    model_path = tiny_model_folder(app_config.profile)
    with said_of_tiny_folder(model_path):
        return StepAudioPipeline(_pipeline_config(app_config, model_path), cancel)


def tiny_model_folder(profile: str) -> Path:
    """The model folder of `--profile tiny` without --model-path (serve, tts, chat): $STEPAUDIO_RT_CACHE/tiny, written
    when absent and again when incomplete (a write cut short, a file deleted or cut short): the user never named it.
    ConfigError for the other profiles, which need a folder named."""
    if profile != "tiny":
        # make-checkpoint writes random folders only: a step-audio user has downloaded the real ones
        where = (" (stepaudio-rt make-checkpoint --profile full-random DIR writes a random one)"
                 if profile == "full-random" else ", the folder of the downloaded checkpoints")
        raise ConfigError(f"--profile {profile} needs --model-path DIR{where}")
    model_path = tiny_cache_dir()
    with said_of_tiny_folder(model_path):
        stale = not model_path.is_dir() or bool(missing_files(model_path, ChatNeed.WEIGHTS))
    if stale:
        from controller.checkpoints import make_checkpoint
        logger.info("no --model-path: writing a tiny model folder to %s", model_path)
        try:
            make_checkpoint(model_path, profile="tiny")
        except OSError as exc:  # full, or made unwritable since the check before listening: it was a traceback
            raise tiny_folder_error(exc) from exc
    return model_path


@contextlib.contextmanager
def said_of_tiny_folder(model_path: Path) -> Iterator[None]:
    """A damaged file in the tiny folder (a config.json edited, a wav replaced) is named with what the folder is and
    how to rebuild it: the user never named it."""
    try:
        yield
    except ConfigError as exc:
        if str(model_path) not in str(exc):
            raise
        raise ConfigError(f"{exc} ({model_path} is the tiny profile's model folder, written on the first `serve "
                          "--profile tiny` (or tts, chat) without --model-path; rebuild it with `stepaudio-rt "
                          f"make-checkpoint --profile tiny --overwrite {model_path}`)") from exc


def _pipeline_config(app_config: Any, model_path: Path) -> StepAudioConfig:
    return StepAudioConfig.for_profile(app_config.profile, model_path, threads=app_config.threads,
                                       language=app_config.language, tp=int(os.environ.get("WORLD_SIZE", "1")),
                                       chat_url=app_config.chat_url, tp_step_timeout_s=app_config.tp_step_timeout_s)


class StepAudioPipeline(RefusesAfterClose, MeasuresTemplate, CountsAudioTokens, ChecksChat, OwnsMetrics):
    """SpeechPipeline over a Step-Audio model folder."""

    # Upstream documents only where Step-Audio-Chat's tool definitions go (a message of role `tool_json_schemas`,
    # OpenAI's function format: stepfun-ai/Step-Audio issue #31), not how a call appears in its output, so no call
    # could be parsed out of a reply. Refused rather than ignored: a client would wait for calls that never come.
    tools_refused = ("Step-Audio-Chat has no documented tool-call output format, so this profile cannot call "
                     "function tools")

    def __init__(self, config: StepAudioConfig, cancel: threading.Event | None = None) -> None:
        """Loads the models one after another; LoadCancelled before the next one once `cancel` is set."""
        import torch

        from vad import SileroModel

        self.config = config
        self.name = config.profile
        self._cancel = cancel
        check_layout(config.model_path, chat_need(config))
        check_weights_match(config.model_path, chat_need(config))
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cpu":
            # Sessions already run the models on several threads (tokenizer, decoder, two engine loops); torch's
            # own intra-op threads on top of those oversubscribe the cores and spin (tiny: ~40x slower measured).
            torch.set_num_threads(1 if config.profile == "tiny" else max(1, config.threads))
        self._vad_model = SileroModel.load()
        self._load_speech_side(device)
        self.chat = StepAudioChat(config, device, cancel)
        stop_if_cancelled(cancel)
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
        with loading(root / TOKENIZER_DIR, cancel=self._cancel):
            self.audio_tokenizer = StepAudioTokenizer.load(root / TOKENIZER_DIR)
        # TTS first with a small GPU share, then the Chat LM takes most of what is left (budgets are cumulative).
        # On one GPU the speech path's stream goes first, then the TTS LM's (the reply's next audio), then Chat's.
        tts_dir = root / TTS_DIR
        with loading(tts_dir, cancel=self._cancel):
            self.tts_engine = Engine.from_pretrained(
                tts_dir, device=device, progress=False,
                config=EngineConfig(kv_cache_memory_gib=0.25 if device == "cpu" else 1.0, gpu_memory_utilization=0.3,
                                    seed=self.config.seed, stream_priority=-1))
            tts_tok = self.tts_engine.tokenizer or Step1Tokenizer.from_dir(tts_dir)
        with loading(tts_dir / COMMON_DIR, cancel=self._cancel):
            common = CosyVoiceModel.load(tts_dir / COMMON_DIR, device=device)
        music = None
        if (tts_dir / MUSIC_DIR).is_dir():
            with loading(tts_dir / MUSIC_DIR, cancel=self._cancel):
                music = CosyVoiceModel.load(tts_dir / MUSIC_DIR, device=device)
        else:  # optional, as in the layout check, but a (RAP) or (哼唱) reply then sounds otherwise than upstream's
            logger.warning("%s has no %s/: RAP and humming are spoken with %s/ instead", tts_dir, MUSIC_DIR,
                           COMMON_DIR)
        self.tts = StepTts(tts_tok, common, music, add_bos=StepTts.tokenizer_adds_bos(tts_dir))
        self.output_rate = int(common.sample_rate)
        speakers = find_speakers_dir(tts_dir, root)
        assert speakers is not None, "check_layout has found it"
        with loading(speakers, cancel=self._cancel):
            self._register_speakers(speakers)
        self.default_voice = self.tts.default_speaker()  # Tingting, as upstream's scripts speak
        speaker, model = self.tts.resolve("", None)
        if warm_up(model, speaker.flow_prompt):  # CUDA graphs of the default voice's windows, before any reply
            logger.info("flow CUDA graphs captured for %s's window shapes", self.tts.default_speaker())
        # Every TTS prompt of a voice starts with the same ~400 speaker tokens: prefilled now, into the engine's
        # prefix cache, the first sentence of the first reply computes only its own tokens.
        self.tts_engine.generate(self.tts.prompt_ids("", speaker), SamplingParams(temperature=0.0, max_tokens=1))

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
            except OSError as exc:  # the cache Whisper base (--language other than en) is assembled into: this
                # was a warning, and a server that made every transcript empty
                raise whisper_cache_error(self.config.language, exc) from exc
            except Exception as exc:  # the embedded extra is optional here: transcripts are then ""
                logger.warning("no Whisper ASR (%s): user transcripts will be empty", exc)

    def _start_workers(self) -> None:
        n = max(2, self.config.threads)
        self.tok_pool = concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="sa-tokenizer")
        self.asr_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sa-asr")
        self.synthesizer = SentenceSynthesizer(self.tts, self.tts_engine, self.config, threads=n)
        self.tokenizer_ids = Counter("stepaudio_tokenizer_ids", "Audio token ids produced by the streaming "
                                     "tokenizer while input audio arrives", registry=None)
        # Read at each scrape: a session, reply or fork that never gave its blocks back shows as a level that stays up.
        self.kv_free_blocks = Gauge("stepaudio_lm_free_kv_blocks", "Free KV-cache blocks of an LM engine", ["engine"],
                                    registry=None)
        self.lm_sequences = Gauge("stepaudio_lm_sequences", "Sequences an LM engine holds (sessions, replies, forks)",
                                  ["engine"], registry=None)
        for name, engine in (("tts", self.tts_engine), ("chat", self.chat.engine)):
            if engine is not None:
                self._watch_engine(name, engine)

    def _watch_engine(self, name: str, engine: Engine) -> None:
        self.kv_free_blocks.labels(engine=name).set_function(lambda: engine.num_free_blocks)
        self.lm_sequences.labels(engine=name).set_function(lambda: engine.num_sequences)

    def _register_speakers(self, folder: Path) -> None:
        import soundfile as sf

        from speech_decoder.step_tts import StepTtsError, prompt_wav_name, read_prompt_wav, read_speakers_info

        for name, text in read_speakers_info(folder).items():
            file = folder / prompt_wav_name(name)
            try:
                self.register_speaker(name, *read_prompt_wav(file), text)
            except (sf.SoundFileError, StepTtsError) as exc:  # neither names the file
                raise ConfigError(f"{file}: {exc}") from exc

    def register_speaker(self, name: str, wav: np.ndarray, rate: int, prompt_text: str, *,
                         cloned: bool = False) -> None:
        """A voice from a prompt wav and its transcript (upstream registers speakers and clones this way: its
        tts.py preprocess_prompt_wav tokenises the silence-trimmed wav, the flow's prompt mel is of the whole wav)."""
        from speech_decoder.step_tts import check_prompt_ids, check_prompt_wav

        self._check_open("text-to-speech")
        check_prompt_wav(name, wav, rate)
        ids = self.audio_tokenizer.tokenize_offline(wav, rate, upstream=True, trim=True)
        check_prompt_ids(name, len(ids), self.tts_engine.model_config.max_seq_len)
        self.tts.register(name, wav, rate, prompt_text, ids, cloned=cloned)

    @property
    def voices(self) -> frozenset[str]:
        """The speakers folder's voices (their RAP / 哼唱 variants included), and any cloned since."""
        return frozenset(self.tts.speakers)

    def register_metrics(self, registry: CollectorRegistry) -> None:
        for metric in (self.tokenizer_ids, self.synthesizer.tokens, self.kv_free_blocks, self.lm_sequences):
            registry.register(metric)

    # ------------------------------------------------------------------ SpeechPipeline

    def new_vad(self) -> VadStream:
        from vad import SileroVad
        self._check_open("voice activity detection")
        return SileroVad(self._vad_model)

    def new_listener(self) -> Listener:
        self._check_open("audio tokenizer")
        return StreamingTokenListener(self)

    def count_tokens(self, text: str) -> int:
        self._check_open("chat LM")
        return self.chat.count_tokens(text)

    def count_audio_tokens(self, text: str) -> int:
        self._check_open("chat LM")
        return self.chat.count_audio_tokens(text)

    def template_costs(self, tools: list[Message], system: bool) -> TemplateCosts:
        """The chat template's role markers and fixed part; no tools (this profile refuses them)."""
        return self.chat.template_costs(system)

    def reply(self, request: ChatRequest) -> AsyncIterator[ChatDelta | PromptCut]:
        self._check_open("chat LM")
        return self.chat.reply(request)

    def new_reply_text(self) -> ReplyText:
        """The reply's leading (tag) reaches each of its sentences, as it would the whole text read at once."""
        from speech_decoder.step_tts import ReplyTag

        return ReplyTag()

    def synthesize(self, text: str, voice: str, speed: float = 1.0) -> AsyncIterator[SpeechChunk]:
        self._check_open("text-to-speech")
        return self.synthesizer.synthesize(text, voice, speed)

    def chat_problem(self) -> str | None:
        return self.chat.problem()

    def close(self) -> None:
        """Stops the worker threads and the engines. Any use afterwards raises PipelineClosed."""
        if not self._close_once():
            return
        for pool in (self.tok_pool, self.asr_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        self.synthesizer.close()
        self.chat.close()
        with contextlib.suppress(Exception):
            self.tts_engine.close()

