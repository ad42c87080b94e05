"""Per-turn streaming transcription on top of a whole-utterance ASR (re-transcribe the growing turn)."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Asr(Protocol):
    """What StreamingTranscriber needs: blocking 16 kHz audio -> text (WhisperAsr is one)."""

    def transcribe(self, pcm16k: np.ndarray, language: str | None) -> str: ...


class StreamingTranscriber:
    """Collects one user turn's 16 kHz audio and transcribes it on demand.

    Whisper has no incremental decoder, so `partial()` re-transcribes all audio so far (about one model
    call per second of speech when called every ~1 s). The result is cached with the sample count it
    covers: `partial()` or `finalize()` with no new audio since return the cached text without work.
    """

    def __init__(self, asr: Asr, language: str | None) -> None:
        self._asr = asr
        self.language = language
        self._pieces: list[np.ndarray] = []
        self._samples = 0
        self._text = ""
        self._text_samples = 0  # how many samples self._text covers

    @property
    def samples(self) -> int:
        """Samples fed since the turn began."""
        return self._samples

    @property
    def text(self) -> str:
        """The latest transcript, without running anything (may lag the audio)."""
        return self._text

    def feed(self, pcm16k: np.ndarray) -> None:
        """Append 16 kHz mono float32 audio ([n]) to the turn."""
        x = np.array(pcm16k, dtype=np.float32, copy=True)  # the caller may reuse its buffer
        if x.ndim != 1:
            raise ValueError(f"expected mono audio of shape [n], got shape {x.shape}")
        if x.size:
            self._pieces.append(x)
            self._samples += x.size

    def partial(self) -> str:
        """Transcript of all audio fed so far (re-run only if audio arrived since the last run)."""
        return self._transcribe()

    def finalize(self) -> str:
        """The turn's final transcript; free when nothing was fed since the last partial()."""
        return self._transcribe()

    def reset(self) -> None:
        """Start a new turn."""
        self._pieces.clear()
        self._samples = 0
        self._text = ""
        self._text_samples = 0

    def _transcribe(self) -> str:
        if self._samples == self._text_samples:
            return self._text
        if len(self._pieces) > 1:
            # Keep one array so repeated partials do not re-concatenate the whole turn.
            self._pieces = [np.concatenate(self._pieces)]
        self._text = self._asr.transcribe(self._pieces[0], self.language)
        self._text_samples = self._samples
        return self._text
