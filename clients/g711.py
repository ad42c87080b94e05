"""ITU-T G.711 mu-law and A-law companding, vectorised with numpy (pure; no I/O).

Both laws map a linear sample to one byte: a sign bit, a 3-bit segment (chord) number and a 4-bit step
inside the segment. Segment k covers twice the range of segment k-1, so the step size doubles per segment.

mu-law (G.711 table 2a) works on 14-bit magnitudes: the 16-bit input is shifted right by 2, a bias of 33
is added so that the segment boundaries fall on powers of two (segment k ends at 2**(k+6) - 1), and every
bit of the result is inverted on the wire.
A-law (G.711 table 1a) works on 13-bit values (input >> 3); segments 0 and 1 share the finest step
(linear near zero, there is no bias) and the even bits are inverted on the wire (XOR 0x55).

Rounding of negative inputs follows the widespread reference coder (CPython's audioop, Sun's g711.c):
mu-law takes the magnitude of the arithmetically shifted value, A-law its one's complement. Tests check
every int16 input and every code against `audioop`.

Public API: `ulaw_encode`, `ulaw_decode`, `alaw_encode`, `alaw_decode`; encoders take int16 samples (array or
PCM16 little-endian bytes) and return bytes; decoders take bytes and return an int16 array.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

_ULAW_BIAS = 33      # 0x84 >> 2: the 16-bit reference bias expressed at 14-bit resolution
_ULAW_CLIP = 8159    # 14-bit magnitude clip of the reference coder; biased values are then capped at 0x1FFF

Int16Array = npt.NDArray[np.int16]


def _as_int16(samples: bytes | bytearray | memoryview | npt.ArrayLike) -> npt.NDArray[np.int32]:
    if isinstance(samples, (bytes, bytearray, memoryview)):
        arr = np.frombuffer(samples, dtype="<i2")
    else:
        arr = np.asarray(samples)
        if arr.dtype != np.int16:
            raise ValueError(f"G.711 encoders take int16 samples, got {arr.dtype}")
    # int32 working copy: negating -32768 or adding the bias must not overflow.
    return arr.reshape(-1).astype(np.int32)


def _segment(mag: npt.NDArray[np.int32], first_end_bits: int) -> npt.NDArray[np.int32]:
    """Segment number of non-negative `mag`: segment k holds values < 2**(k + first_end_bits)."""
    # bit_length(mag >> (first_end_bits - 1)) - 1, clamped at 0: computed without a Python loop.
    shifted = mag >> first_end_bits
    seg = np.zeros_like(mag)
    for k in range(1, 8):  # 7 vectorised comparisons, cheaper than np.log2 on ints and exact
        seg += (shifted >= (1 << (k - 1))).astype(np.int32)
    return seg


def ulaw_encode(samples: bytes | bytearray | memoryview | npt.ArrayLike) -> bytes:
    """Encode int16 samples (array or PCM16 LE bytes) to G.711 mu-law bytes, one byte per sample."""
    x = _as_int16(samples) >> 2  # 14-bit two's complement (arithmetic shift, floors negatives)
    negative = x < 0
    # 8159 + 33 = 0x2000 overflows segment 7; the reference coder answers the maximum code (0x7F before
    # inversion) for it, which is exactly what capping the biased magnitude at 0x1FFF produces.
    mag = np.minimum(np.minimum(np.abs(x), _ULAW_CLIP) + _ULAW_BIAS, 0x1FFF)
    seg = _segment(mag, 6)  # segment k ends at 2**(k+6) - 1
    step = (mag >> (seg + 1)) & 0x0F
    code = (seg << 4) | step
    # Positive values invert all 8 bits (sign bit becomes 1); negative ones invert the 7 low bits.
    code ^= np.where(negative, 0x7F, 0xFF)
    return code.astype(np.uint8).tobytes()


@functools.cache
def _ulaw_table() -> Int16Array:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    seg = (u >> 4) & 0x07
    # Reconstruct the middle of the step in 16-bit units: ((step << 3) + bias) << seg, minus the bias.
    t = (((u & 0x0F) << 3) + 0x84) << seg
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def ulaw_decode(codes: bytes | bytearray | memoryview) -> Int16Array:
    """Decode G.711 mu-law bytes to int16 samples."""
    return _ulaw_table()[np.frombuffer(codes, dtype=np.uint8)]


def alaw_encode(samples: bytes | bytearray | memoryview | npt.ArrayLike) -> bytes:
    """Encode int16 samples (array or PCM16 LE bytes) to G.711 A-law bytes, one byte per sample."""
    x = _as_int16(samples) >> 3  # 13-bit two's complement
    negative = x < 0
    mag = np.where(negative, ~x, x)  # one's complement magnitude: 0 ..= 4095
    seg = _segment(mag, 5)  # segment k ends at 2**(k+5) - 1; segments 0 and 1 share step 2
    step = np.where(seg < 2, mag >> 1, mag >> np.maximum(seg, 1)) & 0x0F
    code = (seg << 4) | step
    # Even-bit inversion (0x55) on the wire; the sign bit is 1 for non-negative values.
    code ^= np.where(negative, 0x55, 0xD5)
    return code.astype(np.uint8).tobytes()


@functools.cache
def _alaw_table() -> Int16Array:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a >> 4) & 0x07
    t = ((a & 0x0F) << 4) + np.where(seg == 0, 8, 0x108)  # middle of the step, 16-bit units
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


def alaw_decode(codes: bytes | bytearray | memoryview) -> Int16Array:
    """Decode G.711 A-law bytes to int16 samples."""
    return _alaw_table()[np.frombuffer(codes, dtype=np.uint8)]
