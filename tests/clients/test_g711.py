"""G.711 (ITU-T G.711, tables 1a/2a) against CPython's audioop reference coder, exhaustively."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from clients import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


@pytest.mark.parametrize(("ours", "ref"), [(g711.ulaw_encode, audioop.lin2ulaw),
                                            (g711.alaw_encode, audioop.lin2alaw)])
def test_encode_every_int16(ours, ref) -> None:
    assert ours(ALL_INT16) == ref(ALL_INT16.tobytes(), 2)
    assert ours(ALL_INT16.tobytes()) == ref(ALL_INT16.tobytes(), 2)  # bytes input too


@pytest.mark.parametrize(("ours", "ref"), [(g711.ulaw_decode, audioop.ulaw2lin),
                                            (g711.alaw_decode, audioop.alaw2lin)])
def test_decode_every_code(ours, ref) -> None:
    out = ours(ALL_CODES)
    assert out.dtype == np.int16
    assert out.tobytes() == ref(ALL_CODES, 2)


@pytest.mark.parametrize(("enc", "dec"), [(g711.ulaw_encode, g711.ulaw_decode),
                                          (g711.alaw_encode, g711.alaw_decode)])
def test_decode_then_encode_round_trips(enc, dec) -> None:
    codes = np.frombuffer(enc(dec(ALL_CODES)), dtype=np.uint8)
    expected = np.arange(256)
    if enc is g711.ulaw_encode:
        expected[0x7F] = 0xFF  # mu-law "negative zero" decodes to 0, which encodes as positive zero
    assert np.array_equal(codes, expected)


def test_wire_constants() -> None:
    """Silence is 0xFF in mu-law and 0xD5 in A-law (G.711 sec. 2: positive zero)."""
    assert g711.ulaw_encode(np.zeros(1, np.int16)) == b"\xff"
    assert g711.alaw_encode(np.zeros(1, np.int16)) == b"\xd5"
    assert g711.ulaw_encode(np.array([32767, -32768], np.int16)) == b"\x80\x00"
    assert g711.alaw_encode(np.array([32767, -32768], np.int16)) == b"\xaa\x2a"


def test_rejects_non_int16() -> None:
    with pytest.raises(ValueError):
        g711.ulaw_encode(np.zeros(4, np.float32))
