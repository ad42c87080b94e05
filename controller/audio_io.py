"""Audio at the session's edges: client formats in and out, resampled with soxr (vad.Resampler)."""

from __future__ import annotations

import numpy as np

from clients import g711
from controller.errors import MediaError
from controller.realtime.session_config import AudioFormat
from vad import Resampler

PIPELINE_RATE = 16000


def bytes_per_ms(fmt: AudioFormat) -> float:
    width = 2 if fmt is AudioFormat.PCM else 1
    return fmt.sample_rate * width / 1000.0


def decode(data: bytes, fmt: AudioFormat) -> np.ndarray:
    """Client bytes -> float32 mono at the format's rate."""
    if fmt is AudioFormat.PCM:
        if len(data) % 2:
            raise MediaError("audio/pcm data must be whole 16-bit little-endian samples")
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if fmt is AudioFormat.PCMU:
        return g711.ulaw_decode(data).astype(np.float32) / 32768.0
    if fmt is AudioFormat.PCMA:
        return g711.alaw_decode(data).astype(np.float32) / 32768.0
    raise MediaError(f"unsupported audio format {fmt.value!r}")


def encode(pcm: np.ndarray, fmt: AudioFormat) -> bytes:
    """float32 mono at the format's rate -> client bytes."""
    ints = np.clip(np.round(pcm * 32767.0), -32768, 32767).astype("<i2")
    if fmt is AudioFormat.PCM:
        return ints.tobytes()
    if fmt is AudioFormat.PCMU:
        return g711.ulaw_encode(ints)
    if fmt is AudioFormat.PCMA:
        return g711.alaw_encode(ints)
    raise MediaError(f"unsupported audio format {fmt.value!r}")


class InputConverter:
    """Client bytes in their format -> float32 at 16 kHz, streaming (keeps the resampler's state).

    audio/pcm appends are one byte stream: a client forwarding what a pipe read gives may split a sample across two
    appends, and its odd byte waits for the next. (A stray byte therefore shifts every later sample; `split_samples`
    counts the appends that left one over, which the session logs the first time.)"""

    def __init__(self, fmt: AudioFormat) -> None:
        self.fmt = fmt
        self._resampler = Resampler(fmt.sample_rate, PIPELINE_RATE)
        self._odd = b""  # a split 16-bit sample waits for its other byte
        self.split_samples = 0

    def convert(self, data: bytes) -> np.ndarray:
        if self.fmt is AudioFormat.PCM:
            data = self._odd + data
            cut = len(data) - len(data) % 2
            data, self._odd = data[:cut], data[cut:]
            self.split_samples += bool(self._odd)
        return self._resampler.process(decode(data, self.fmt))

    def flush(self) -> np.ndarray:
        """The samples the resampler still holds (its filter delay: ~9 ms of 24 kHz input), at 16 kHz; the stream
        then starts afresh. A committed buffer ends with them, not short of them."""
        return self._resampler.flush()

    def reset(self) -> None:
        """Drop what was sent so far, the odd byte of a split sample too: kept past input_audio_buffer.clear, that
        byte would shift every later sample and turn the user's speech into noise for the rest of the session."""
        self._odd = b""
        self._resampler.flush()


class OutputConverter:
    """Synthesised float32 at `src_rate` -> client bytes, streaming."""

    def __init__(self, src_rate: int, fmt: AudioFormat) -> None:
        self.fmt = fmt
        self._resampler = Resampler(src_rate, fmt.sample_rate)

    def convert(self, pcm: np.ndarray) -> bytes:
        return encode(self._resampler.process(pcm.astype(np.float32)), self.fmt)

    def flush(self) -> bytes:
        return encode(self._resampler.flush(), self.fmt)
