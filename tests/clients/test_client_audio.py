"""Conversion, chunking, microphone-like pacing maths and the send log."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Awaitable, Callable

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from clients.audio import (Chunker, Pacing, SendLog, StreamResampler, chunk_samples, float_to_pcm16,
                           last_voiced_at_or_before, last_voiced_index, pcm16_to_float, to_mono_float32,
                           voiced_indices)
from clients.realtime_client import RealtimeClient


def test_to_mono_float32_downmixes_and_scales() -> None:
    st = np.array([[16384, -16384], [32767, 32767]], np.int16)
    assert to_mono_float32(st).tolist() == [0.0, 32767 / 32768]
    assert to_mono_float32(b"\x00\x80").tolist() == [-1.0]
    f = np.array([0.25, -0.5], np.float64)
    assert to_mono_float32(f).dtype == np.float32
    with pytest.raises(ValueError):
        to_mono_float32(np.zeros(3, np.int32))
    with pytest.raises(ValueError):
        to_mono_float32(np.zeros((2, 2, 2), np.float32))


def test_pcm16_bytes_of_odd_length_are_named_as_such() -> None:
    """numpy's own message ("buffer size must be a multiple of element size") did not say what was wrong."""
    with pytest.raises(ValueError, match="PCM16 audio bytes come in pairs .* got 3"):
        to_mono_float32(b"\x00\x01\x02")


async def test_pcm16_bytes_read_in_odd_pieces_stream_as_the_whole() -> None:
    """stream_audio's source may be PCM16 bytes as a pipe gives them: a piece that splits a sample is joined with the
    next, as the server joins appends (it failed with numpy's 'buffer size must be a multiple of element size')."""
    from clients.audio import wire_blocks

    pcm = (np.sin(np.arange(4800) * 0.05) * 12000).astype("<i2").tobytes()
    pieces = [pcm[i:i + 333] for i in range(0, len(pcm), 333)]  # odd sizes: most pieces split a sample

    async def gather(source: object) -> np.ndarray:
        return np.concatenate([b async for b in wire_blocks(source, 24000)])  # type: ignore[arg-type]

    assert np.array_equal(await gather(pieces), await gather([pcm]))
    with pytest.raises(ValueError, match="end mid-sample"):
        await gather([pcm[:-1]])


def test_pcm16_round_trip_and_clipping() -> None:
    x = np.array([-1.5, -1.0, 0.0, 0.5, 1.0], np.float32)
    assert np.frombuffer(float_to_pcm16(x), "<i2").tolist() == [-32768, -32768, 0, 16384, 32767]
    assert pcm16_to_float(float_to_pcm16(np.array([0.5], np.float32))).tolist() == [0.5]


def test_chunk_samples_bounds() -> None:
    assert chunk_samples(20) == 480 and chunk_samples(100) == 2400 and chunk_samples(20, 8000) == 160
    for bad in (10, 101):
        with pytest.raises(ValueError):
            chunk_samples(bad)


def test_chunker_whole_or_piecewise_gives_same_chunks() -> None:
    x = np.arange(1000, dtype=np.float32)
    whole = Chunker(480)
    a = whole.push(x) + whole.flush()
    piece = Chunker(480)
    b = [c for i in range(0, 1000, 7) for c in piece.push(x[i:i + 7])] + piece.flush()
    assert [c.size for c in a] == [480, 480, 40]
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))


def test_pacing_is_microphone_like() -> None:
    p = Pacing.from_arg(True)
    # The chunk holding audio [0, 20 ms) can leave at 20 ms; [20, 40 ms) at 40 ms.
    assert p.send_offset(480) == pytest.approx(0.02)
    assert p.send_offset(960) == pytest.approx(0.04)
    assert p.delay(960, started_at=100.0, now=100.01) == pytest.approx(0.03)
    assert p.delay(960, started_at=100.0, now=100.5) == 0.0  # late: go at once, schedule unchanged
    assert Pacing.from_arg(2.0).send_offset(24000) == pytest.approx(0.5)
    fast = Pacing.from_arg(False)
    assert fast.speed == math.inf and not fast.paced and fast.send_offset(10**9) == 0.0
    with pytest.raises(ValueError):
        Pacing(0.0)


def test_send_log_maps_samples_and_server_ms_to_send_times() -> None:
    log = SendLog(base=48000)  # this stream began 2 s into the session's input audio
    for k in range(1, 4):
        log.record(480 * k, 10.0 + 0.02 * k)
    assert log.samples_sent == 1440 and log.duration_s == pytest.approx(0.06)
    assert log.time_of_sample(0) == pytest.approx(10.02)
    assert log.time_of_sample(479) == pytest.approx(10.02)
    assert log.time_of_sample(480) == pytest.approx(10.04)
    assert log.time_of_sample(1440) is None
    assert log.time_of_ms(2030) == pytest.approx(10.04)  # session 2030 ms = stream sample 720
    with pytest.raises(ValueError):
        log.record(100, 11.0)


def test_voiced_detection_at_minus_40_dbfs() -> None:
    x = np.zeros(100, np.float32)
    x[[3, 10, 50]] = [0.5, -0.02, 0.0100]  # 0.01 is exactly -40 dBFS: not above it
    assert voiced_indices(x).tolist() == [3, 10]
    assert last_voiced_index(x) == 10
    assert last_voiced_index(np.zeros(5, np.float32)) is None
    assert last_voiced_at_or_before([3, 10, 40], 39) == 10
    assert last_voiced_at_or_before([3, 10, 40], 40) == 40
    assert last_voiced_at_or_before([3, 10, 40], 2) is None


def test_stream_resampler_matches_length() -> None:
    rs = StreamResampler(16000)
    x = np.sin(np.arange(16000) / 10).astype(np.float32)
    out = np.concatenate([rs.process(x[i:i + 1600]) for i in range(0, 16000, 1600)] + [rs.flush()])
    assert abs(out.size - 24000) <= 1
    same = StreamResampler(24000)
    assert same.process(x) is x and same.flush().size == 0


@pytest.mark.parametrize("shape", [(1, 48_000), (2, 48_000)])
def test_a_channels_first_array_is_refused_instead_of_sent_as_a_few_samples(shape: tuple[int, int]) -> None:
    """torchaudio.load and librosa.load(mono=False) give [channels, n]: stream_audio downmixed each of its rows to
    one sample, so 2 s of speech went out as 1 or 2 samples, and the app waited for a turn that never began."""
    with pytest.raises(ValueError, match=r"\[channels, n\]\? Pass it transposed"):
        to_mono_float32(np.zeros(shape, np.float32))
    assert to_mono_float32(np.zeros(shape, np.float32).T).shape == (48_000,)
    assert to_mono_float32(np.zeros((1, 2), np.float32)).shape == (1,)  # a stream's last stereo block: one frame


async def _received_by_server(use: Callable[[RealtimeClient], Awaitable[None]]) -> list[dict[str, object]]:
    """The client events an in-test server got while `use` ran with a client connected to it."""
    received: list[dict[str, object]] = []

    async def handler(ws: ServerConnection) -> None:
        async for raw in ws:
            received.append(json.loads(raw))

    async with serve(handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/realtime"
        async with await RealtimeClient.connect(url) as rt:
            await use(rt)
    return received  # complete: leaving serve() waited for the handler


def _appended(events: list[dict[str, object]]) -> bytes:
    return b"".join(base64.b64decode(str(e["audio"])) for e in events if e["type"] == "input_audio_buffer.append")


async def test_stream_audio_sends_whole_pcm16_bytes_as_the_audio_they_hold() -> None:
    """stream_audio(pcm16_bytes, rate), the bytes append_audio takes, failed with 'integer audio must be int16, got
    int64' after the connection was up: a bytes object was iterated as a stream of ints. The server gets its samples."""
    pcm = (np.sin(np.arange(4800) * 0.05) * 12000).astype("<i2").tobytes()
    logs: list[SendLog] = []

    async def use(rt: RealtimeClient) -> None:
        logs.append(await rt.stream_audio(pcm, 24_000, realtime=False))

    assert _appended(await _received_by_server(use)) == pcm and logs[0].samples_sent == 4800


@pytest.mark.parametrize("session", [{"audio": {"input": {"format": {"type": "audio/pcmu"}}}},
                                     {"input_audio_format": "g711_alaw"}])
async def test_pcm16_is_not_sent_to_a_session_whose_input_is_g711(session: dict[str, object]) -> None:
    """After session_update set a G.711 input format, stream_audio still sent PCM16 at 24 kHz, which the server read
    as G.711: noise, no turn, and the app waited until its timeout. It now refuses, naming the format and the way to
    send G.711; audio/pcm set again streams as before."""
    pcm = (np.sin(np.arange(4800) * 0.05) * 12000).astype("<i2").tobytes()

    async def use(rt: RealtimeClient) -> None:
        await rt.session_update(session)
        with pytest.raises(ValueError, match=r"input format is audio/pcm([ua]): .*g711\.\1"):
            await rt.stream_audio(pcm, 24_000, realtime=False)
        await rt.session_update(audio={"input": {"format": {"type": "audio/pcm", "rate": 24_000}}})
        await rt.stream_audio(pcm, 24_000, realtime=False)

    assert _appended(await _received_by_server(use)) == pcm
