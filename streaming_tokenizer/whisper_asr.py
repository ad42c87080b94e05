"""Whisper speech recognition for the embedded profile (faster-whisper / CTranslate2, int8 on the CPU)."""

from __future__ import annotations

import logging
import re
import threading
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model_files.native import native_name
from streaming_tokenizer.assets import tiny_en_dir, whisper_base_dir

if TYPE_CHECKING:
    import ctranslate2
    from faster_whisper import WhisperModel

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
# Whisper invents words for near-empty input; below this there is nothing worth transcribing.
MIN_SAMPLES = SAMPLE_RATE // 10
# Turns up to this long are decoded in one window sized to the audio (see _transcribe_window).
SHORT_CLIP_SAMPLES = 25 * SAMPLE_RATE
# A short clip whose window decode loops is decoded again in pieces of at most this, cut at pauses.
PIECE_SAMPLES = 8 * SAMPLE_RATE
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's window
WINDOW_MAX_FRAMES = 3000
# faster-whisper's own threshold for a looping, hallucinated decode.
MAX_COMPRESSION_RATIO = 2.4
# A decode of a window cut to the audio sometimes starts the clip over once it has read it and goes on until the
# length cap (seen with tiny.en on 1-3 s questions: "What is the capital of France? What is the capital of France?
# What is"); too short to compress past MAX_COMPRESSION_RATIO. Its sign: from some word on, the text reads its own
# beginning again, for at least this many words. A speaker who restarts a phrase ("I want to go to the store and then
# I want to go to the park") goes on differently.
RESTART_WORDS = 4


def _starts_over(text: str) -> bool:
    """Whether, from some word on, the text is its own beginning again, for RESTART_WORDS words or more."""
    words = re.findall(r"[\w']+", text.lower())
    return any(words[k:] == words[:len(words) - k] for k in range(1, len(words) - RESTART_WORDS + 1))


def _looped(text: str) -> bool:
    return _compression_ratio(text) > MAX_COMPRESSION_RATIO or _starts_over(text)


def split_at_pauses(audio: np.ndarray, max_samples: int) -> list[np.ndarray]:
    """`audio` cut into pieces of at most `max_samples`, each cut at the quietest 100 ms of its piece's middle half
    (between phrases, in speech), so that no word is cut where a pause exists."""
    if audio.size <= max_samples:
        return [audio]
    frame = SAMPLE_RATE // 10
    start, stop = audio.size // 4 // frame, audio.size * 3 // 4 // frame
    energy = [float(np.square(audio[i * frame:(i + 1) * frame]).mean()) for i in range(start, stop)]
    cut = (start + int(np.argmin(energy))) * frame + frame // 2
    return split_at_pauses(audio[:cut], max_samples) + split_at_pauses(audio[cut:], max_samples)


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def normalize_language(language: str | None) -> str | None:
    """"en", "EN", "en-US", "en_GB" -> "en"; None or "" stays None (auto-detect)."""
    if not language:
        return None
    return language.replace("_", "-").split("-")[0].strip().lower() or None


def uses_whisper_base(language: str | None) -> bool:
    """Whether WhisperAsr.load takes Whisper base (assembled into the cache) rather than the packaged tiny.en."""
    return normalize_language(language) not in (None, "en")


def whisper_languages() -> frozenset[str]:
    """The language codes Whisper transcribes ("en", "de", "zh", "yue", ...), as normalize_language() writes them."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES  # faster-whisper is pinned; this is its one list of them

    return frozenset(_LANGUAGE_CODES)


class WhisperAsr:
    """One loaded Whisper model. `transcribe` is blocking and thread-safe (calls are serialised).

    `calls` counts the transcriptions that actually ran the model; callers and tests use it to see
    that cached results cost nothing.
    """

    def __init__(self, model: WhisperModel, *, name: str, multilingual: bool,
                 default_language: str | None, decoder: ctranslate2.models.Whisper | None = None) -> None:
        self._model = model
        # Greedy decoding steps are small matrix products that run no faster on two threads than on one, while
        # the encoder gains from two: a second, one-thread copy of the model decodes what the first encoded.
        # Measured on two cores, 4 s turns: tiny.en 137-189 ms vs 133-207 ms a turn, base 325-406 vs 397-515.
        self._decoder = decoder if decoder is not None else model.model
        self._lock = threading.Lock()
        self.name = name
        self.multilingual = multilingual
        self.default_language = default_language
        self.calls = 0
        self._warned: set[str] = set()

    @classmethod
    def load(cls, language: str | None = "en", cpu_threads: int = 2, *,
             cache_dir: Path | str | None = None) -> WhisperAsr:
        """Load tiny.en for English (or None), Whisper base (multilingual) for any other language.

        Args:
            language: the session's expected language; picks the model and is the default for transcribe().
            cpu_threads: CTranslate2 intra-op threads.
            cache_dir: where Whisper base gets assembled; defaults to $STEPAUDIO_RT_CACHE or ~/.cache/stepaudio-rt.

        Raises:
            AsrAssetError: the model's package is not installed (the message names it).
        """
        if cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1, got {cpu_threads}")
        lang = normalize_language(language)
        english = not uses_whisper_base(lang)
        path = tiny_en_dir() if english else whisper_base_dir(cache_dir)
        import ctranslate2
        from faster_whisper import WhisperModel  # deferred: imports ctranslate2, av and tokenizers

        with native_name(path) as name:
            model = WhisperModel(name, device="cpu", compute_type="int8", cpu_threads=cpu_threads,
                                 local_files_only=True)
            decoder = (ctranslate2.models.Whisper(name, device="cpu", compute_type="int8", intra_threads=1)
                       if cpu_threads > 1 else None)
        return cls(model, name="tiny.en" if english else "base", multilingual=not english,
                   default_language=lang if not english else "en", decoder=decoder)

    def transcribe(self, pcm16k: np.ndarray, language: str | None = None,
                   cancel: threading.Event | None = None) -> str:
        """Transcribe 16 kHz mono float32 audio ([n]) to text ("" for silence or very short input).

        `language` None means the language given to load(); an English-only model transcribes
        everything as English. `cancel` set: nobody wants the text any more; "" without running the model if it is
        set by the time this call gets the model (calls wait for each other), or between two segments of a long turn.
        """
        audio = np.ascontiguousarray(pcm16k, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected mono audio of shape [n], got shape {audio.shape}")
        if audio.size < MIN_SAMPLES:
            return ""
        lang = self._resolve_language(normalize_language(language))
        with self._lock:
            if cancel is not None and cancel.is_set():
                return ""
            self.calls += 1
            looped = False
            if audio.size <= SHORT_CLIP_SAMPLES:
                text = self._transcribe_window(audio, lang)
                if not _looped(text):
                    return text
                # A cut window can make Whisper loop on a phrase (seen with base and tiny.en). Shorter windows, cut
                # at pauses, loop far less: an 18 s turn without pauses looped in its window and, on some CPUs
                # (int8 kernels differ), in the standard decode below as well, to the length cap.
                looped = True
                texts = []
                for piece in split_at_pauses(audio, PIECE_SAMPLES) if audio.size > PIECE_SAMPLES else []:
                    if cancel is not None and cancel.is_set():
                        return ""
                    texts.append(self._transcribe_window(piece, lang) if piece.size >= MIN_SAMPLES else "")
                if texts and not any(_looped(t) for t in texts):
                    return " ".join(t for t in texts if t)
            # Greedy decoding at temperature 0 only: the fallback ladder can re-decode up to six times,
            # which would make latency unpredictable. Timestamps and conditioning on earlier windows
            # are off: we transcribe one short turn at a time and want only its text. No VAD filter:
            # silero already cut the turn. Past one 30 s window timestamps stay on: without them faster-whisper moves
            # on by whole windows, and a window that starts mid-phrase is often decoded as a few words then the end
            # of text, so most of a long turn's words were lost; with them each window starts where the last
            # decoded segment ended. They stay on for a clip whose window decode looped, too: without them the
            # standard decode of an 18 s turn looped as well ("bail again" to the length cap), with them each
            # segment ends.
            segments, _info = self._model.transcribe(
                audio, language=lang, task="transcribe", beam_size=1, best_of=1, temperature=0.0,
                vad_filter=False, without_timestamps=audio.size <= WINDOW_SAMPLES and not looped,
                condition_on_previous_text=False)
            # The segments are a lazy generator: decoding happens here, still under the lock.
            texts = []
            for segment in segments:
                if cancel is not None and cancel.is_set():
                    return ""
                texts.append(segment.text)
            return "".join(texts).strip()

    def _transcribe_window(self, audio: np.ndarray, language: str | None) -> str:
        """Greedy decoding with the encoder run over the clip plus a second, not over 30 s.

        Whisper pads every input to a 30 s window, mostly silence for a spoken turn, and the encoder
        cost grows with the window. Encoding a window cut to the audio (whisper.cpp's audio_ctx)
        keeps the transcript and cuts the encoder's cost by the ratio of lengths: 0.40 s -> 0.04 s
        for a 4 s turn with tiny.en on two cores.
        """
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        model = self._model
        feats = model.feature_extractor(audio)  # [n_mels, frames], 100 frames per second
        # The encoder's first conv has stride 2, so keep an even frame count; whole seconds suffice.
        frames = min(WINDOW_MAX_FRAMES, -(-(feats.shape[1] + 100) // 100) * 100)
        window = np.zeros((1, feats.shape[0], frames), dtype=np.float32)  # zero features = Whisper's padding
        window[0, :, : min(frames, feats.shape[1])] = feats[:, :frames]
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                              language=language or "en")
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        encoded = model.model.encode(ctranslate2.StorageView.from_array(window), to_cpu=True)
        # Speech runs at well under 10 tokens a second: the cap bounds the cost of a looping decode.
        max_length = min(448, len(prompt) + 16 + 10 * audio.size // SAMPLE_RATE)
        result = self._decoder.generate(encoded, [prompt], beam_size=1, max_length=max_length,
                                        suppress_blank=True, suppress_tokens=[-1])
        ids = [t for t in result[0].sequences_ids[0] if t < tokenizer.eot]
        return tokenizer.decode(ids).strip()

    def _resolve_language(self, language: str | None) -> str | None:
        if not self.multilingual:
            if language not in (None, "en") and language not in self._warned:
                self._warned.add(language)
                logger.warning("Whisper %s is English-only; transcribing %r audio as English "
                               "(load WhisperAsr with that language for a multilingual model)",
                               self.name, language)
            return "en"
        return language if language is not None else self.default_language
