"""Streaming sample-rate conversion for mono float32 audio (python-soxr)."""

from __future__ import annotations

import numpy as np


class Resampler:
    """Converts a mono float32 stream from `src_rate` to `dst_rate`, chunk by chunk.

    soxr keeps filter state between chunks, so splitting the input anywhere gives the same output as
    resampling it whole. It buffers internally: a call may return fewer samples than the ratio
    suggests (even none); `flush()` drains the tail at the end of a stream.
    """

    def __init__(self, src_rate: int, dst_rate: int, *, quality: str = "HQ") -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
        self.src_rate = int(src_rate)
        self.dst_rate = int(dst_rate)
        self._stream = None
        if self.src_rate != self.dst_rate:
            import soxr  # deferred so that importing vad stays cheap

            self._stream = soxr.ResampleStream(self.src_rate, self.dst_rate, 1, dtype="float32",
                                               quality=quality)

    @property
    def identity(self) -> bool:
        return self._stream is None

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample the next piece of the stream. `x`: [n] float (any float dtype), returns [m] float32."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono audio of shape [n], got shape {x.shape}")
        if self._stream is None:
            return x.copy()
        out: np.ndarray = self._stream.resample_chunk(x)
        return out

    def flush(self) -> np.ndarray:
        """Return the samples still held in the filter and make the resampler ready for a new stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        tail: np.ndarray = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        # After last=True soxr would refuse more input; clear() lets the object be reused.
        self._stream.clear()
        return tail
