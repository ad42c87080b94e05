"""Audio helpers for the client: format conversion, chunking, pacing maths and the send log. Pure: the caller
passes time in; nothing here sleeps or reads a clock (wire_blocks only awaits its source).

Pacing models a microphone: the chunk that covers audio [a, b) can only leave once that audio has been captured,
so it is sent `b / rate / speed` seconds after the stream started. With speed = inf everything leaves at once.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import soxr

__all__ = [
    "WIRE_RATE", "AudioSource", "Chunker", "Pacing", "SendLog", "StreamResampler", "chunk_samples", "float_to_pcm16",
    "last_voiced_at_or_before", "last_voiced_index", "pcm16_to_float", "to_mono_float32", "voiced_indices",
    "wire_blocks",
]

WIRE_RATE = 24_000  # audio/pcm in the Realtime API: 24 kHz, mono, 16-bit little endian
AudioSource = np.ndarray | bytes | Iterable[np.ndarray | bytes] | AsyncIterable[np.ndarray | bytes]
# More columns than this in a 2-D array are samples, not channels (a [channels, n] array); 64 covers 7th-order
# ambisonics. A row count is no test: a stream's last [n, channels] block may hold a single frame.
MAX_CHANNELS = 64

FloatArray = npt.NDArray[np.float32]


def to_mono_float32(x: npt.ArrayLike | bytes) -> FloatArray:
    """Samples as float32 in [-1, 1], downmixed to mono.

    Accepts PCM16 LE bytes, int16 arrays (scaled by 1/32768), float arrays (taken as is), shape [n] or
    [n, channels] (soundfile's layout; raises ValueError for more than MAX_CHANNELS columns, a [channels, n] array).
    """
    if isinstance(x, (bytes, bytearray, memoryview)):
        if len(x) % 2:
            raise ValueError(f"PCM16 audio bytes come in pairs (2 a sample), got {len(x)}: is this PCM16 audio?")
        arr: np.ndarray = np.frombuffer(x, dtype="<i2")
    else:
        arr = np.asarray(x)
    if arr.dtype == np.int16:
        arr = arr.astype(np.float32) / 32768.0
    elif arr.dtype.kind == "i":
        raise ValueError(f"integer audio must be int16, got {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 2:
        if arr.shape[1] > MAX_CHANNELS:  # torchaudio's and librosa's layout: downmixed, it was a few samples
            raise ValueError(f"audio must be [n, channels] (soundfile's layout), got shape {arr.shape}: is it "
                             "[channels, n]? Pass it transposed (x.T)")
        arr = arr.mean(axis=1, dtype=np.float32)
    elif arr.ndim != 1:
        raise ValueError(f"audio must be [n] or [n, channels], got shape {arr.shape}")
    return arr


def float_to_pcm16(x: FloatArray) -> bytes:
    """float32 [-1, 1] -> PCM16 LE bytes, rounded and clipped (full scale +1.0 maps to 32767)."""
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype("<i2").tobytes()


def pcm16_to_float(pcm: bytes) -> FloatArray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def chunk_samples(chunk_ms: int, rate: int = WIRE_RATE) -> int:
    """Samples per chunk; chunks are 20..100 ms (small enough for VAD latency, large enough for overhead)."""
    if not 20 <= chunk_ms <= 100:
        raise ValueError(f"chunk_ms must be within 20..100, got {chunk_ms}")
    return rate * chunk_ms // 1000


class StreamResampler:
    """Streaming soxr resampler to the wire rate; `process` per block, `flush` once at the end."""

    def __init__(self, src_rate: int, dst_rate: int = WIRE_RATE) -> None:
        self.src_rate, self.dst_rate = src_rate, dst_rate
        self._stream = (None if src_rate == dst_rate
                        else soxr.ResampleStream(src_rate, dst_rate, 1, dtype="float32", quality="HQ"))

    def process(self, x: FloatArray) -> FloatArray:
        if self._stream is None:
            return x
        return self._stream.resample_chunk(x)  # type: ignore[no-any-return]

    def flush(self) -> FloatArray:
        if self._stream is None:
            return np.zeros(0, np.float32)
        return self._stream.resample_chunk(np.zeros(0, np.float32), last=True)  # type: ignore[no-any-return]


class Chunker:
    """Cuts a stream of float32 blocks into fixed-size chunks; `flush` returns the short tail."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("chunk size must be positive")
        self.size = size
        self._buf = np.zeros(0, np.float32)

    def push(self, x: FloatArray) -> list[FloatArray]:
        buf = np.concatenate([self._buf, x]) if self._buf.size else x
        n_full = buf.size // self.size
        out = [buf[i * self.size:(i + 1) * self.size] for i in range(n_full)]
        self._buf = buf[n_full * self.size:].copy()
        return out

    def flush(self) -> list[FloatArray]:
        tail, self._buf = self._buf, np.zeros(0, np.float32)
        return [tail] if tail.size else []


@dataclass(frozen=True, slots=True)
class Pacing:
    """How fast audio is sent: `speed` 1.0 = real time, 2.0 = twice as fast, inf = no pacing."""

    speed: float = 1.0

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"pacing speed must be > 0, got {self.speed}")

    @classmethod
    def from_arg(cls, realtime: bool | float) -> Pacing:
        """True -> real time, False -> as fast as possible, a number -> that speed factor."""
        if realtime is True:
            return cls(1.0)
        if realtime is False:
            return cls(math.inf)
        return cls(float(realtime))

    @property
    def paced(self) -> bool:
        return math.isfinite(self.speed)

    def send_offset(self, samples_end: int, rate: int = WIRE_RATE) -> float:
        """Seconds after the stream start at which the chunk ending at sample `samples_end` may be sent."""
        if not self.paced:
            return 0.0
        return samples_end / rate / self.speed

    def delay(self, samples_end: int, started_at: float, now: float, rate: int = WIRE_RATE) -> float:
        """How long to wait at `now` before sending that chunk. The schedule is fixed at the start, so after a
        stall the overdue chunks leave at once, as a microphone's buffered audio would."""
        return max(0.0, started_at + self.send_offset(samples_end, rate) - now)


@dataclass(slots=True)
class SendLog:
    """When each chunk of a stream left: chunk i covered wire samples [ends[i-1], ends[i]) and left at times[i].

    `base` is the wire-sample offset of the stream inside the session's input audio (several streams may follow
    each other on one session; server audio_start_ms/audio_end_ms count from the session's first sample).
    """

    rate: int = WIRE_RATE
    base: int = 0
    ends: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def record(self, samples_end: int, t: float) -> None:
        if self.ends and samples_end < self.ends[-1]:
            raise ValueError("send log samples must not go backwards")
        self.ends.append(samples_end)
        self.times.append(t)

    @property
    def samples_sent(self) -> int:
        return self.ends[-1] if self.ends else 0

    @property
    def duration_s(self) -> float:
        return self.samples_sent / self.rate

    @property
    def started_at(self) -> float | None:
        return self.times[0] if self.times else None

    @property
    def finished_at(self) -> float | None:
        return self.times[-1] if self.times else None

    def time_of_sample(self, index: int) -> float | None:
        """Time the chunk holding stream sample `index` was sent; None if it has not been sent."""
        i = bisect.bisect_right(self.ends, index)  # first chunk whose end is past the sample
        return self.times[i] if i < len(self.ends) else None

    def time_of_ms(self, session_ms: int) -> float | None:
        """Like time_of_sample for a server timestamp (ms of session input audio)."""
        index = session_ms * self.rate // 1000 - self.base
        return self.time_of_sample(max(0, index))


def _threshold(threshold_dbfs: float) -> float:
    return float(10.0 ** (threshold_dbfs / 20.0))


def voiced_indices(x: FloatArray, threshold_dbfs: float = -40.0) -> npt.NDArray[np.int64]:
    """Sorted indices of samples whose magnitude is above `threshold_dbfs` (0 dBFS = 1.0)."""
    return np.flatnonzero(np.abs(x) > _threshold(threshold_dbfs)).astype(np.int64)


def last_voiced_index(x: FloatArray, threshold_dbfs: float = -40.0) -> int | None:
    """Index of the last sample above `threshold_dbfs`; None for all-silent audio."""
    idx = voiced_indices(x, threshold_dbfs)
    return int(idx[-1]) if idx.size else None


def last_voiced_at_or_before(indices: Sequence[int] | npt.NDArray[np.int64], limit: int) -> int | None:
    """The largest voiced index <= limit (None if there is none)."""
    i = int(np.searchsorted(np.asarray(indices), limit, side="right"))
    return int(indices[i - 1]) if i > 0 else None


async def wire_blocks(source: AudioSource, rate: int) -> AsyncIterator[np.ndarray]:
    """Normalise any audio source to float32 mono blocks at 24 kHz."""
    if isinstance(source, (bytes, bytearray, memoryview)):  # whole PCM16: iterated, it would be a stream of ints
        source = to_mono_float32(source)
    if isinstance(source, np.ndarray):
        x = to_mono_float32(source)
        # One-shot resampling of a whole array has no streaming delay, so sample i maps to i * 24000 / rate.
        yield x if rate == WIRE_RATE else soxr.resample(x, rate, WIRE_RATE, quality="HQ").astype(np.float32)
        return
    rs = StreamResampler(rate, WIRE_RATE)
    odd = b""  # PCM16 bytes read in any pieces (a pipe) may split a sample: its first byte waits for the next piece

    def samples(block: object) -> np.ndarray:
        nonlocal odd
        if isinstance(block, (bytes, bytearray, memoryview)):
            data = odd + bytes(block)
            whole = len(data) - len(data) % 2
            block, odd = data[:whole], data[whole:]
        return rs.process(to_mono_float32(block))  # type: ignore[arg-type]

    if isinstance(source, AsyncIterable):
        async for block in source:
            yield samples(block)
    else:
        for block in source:
            yield samples(block)
    if odd:
        raise ValueError("the PCM16 audio bytes end mid-sample (an odd count in all): is this PCM16 audio?")
    yield rs.flush()
