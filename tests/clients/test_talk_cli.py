"""`stepaudio-rt talk` as a user runs it, against the real server with a scripted pipeline (no models)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection

from clients.events import ServerEvent
from clients.realtime_client import build_url
from clients.talk import load_wav_24k, main, reply_path
from clients.talk_printer import TranscriptPrinter
from clients.talk_session import run_talk
from controller.server import ServerConfig
from tests.conftest import ServerProcess, free_port
from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server, speech
from tests.e2e.helpers import silence
from tests.ws_thread import ws_server_thread


async def test_talk_sends_its_instructions_and_writes_the_reply(tmp_path: Path) -> None:
    """`stepaudio-rt talk FILE --instructions TEXT`: the reply is asked with those instructions and written out."""
    wav, out = tmp_path / "turn.wav", tmp_path / "reply.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)
    pipeline = ScriptedPipeline()
    async with scripted_server(pipeline) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        argv = [str(wav), "--url", url, "--out", str(out), "--fast", "--instructions", "Speak like a pirate."]
        code = await asyncio.get_running_loop().run_in_executor(None, main, argv)
    assert code == 0
    assert pipeline.requests[-1].messages[0] == {"role": "system", "content": "Speak like a pirate."}
    assert sf.info(str(out)).duration > 0.1


async def test_talk_voice_picks_the_reply_voice_and_an_unknown_one_is_the_servers_error(tmp_path: Path,
                                                                                         capsys) -> None:
    """`--voice NAME` asks the session for that voice (a Step-Audio speaker, say); a name the server does not
    have ends talk with the server's error, which lists the voices it has."""
    wav, out = tmp_path / "turn.wav", tmp_path / "reply.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)
    pipeline = ScriptedPipeline()
    pipeline.voices = frozenset({"joe", "Tingting"})
    async with scripted_server(pipeline) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        run = asyncio.get_running_loop().run_in_executor
        code = await run(None, main, [str(wav), "--url", url, "--out", str(out), "--fast", "--voice", "Tingting"])
        assert code == 0 and set(pipeline.voices_used) == {"Tingting"}
        capsys.readouterr()
        code = await run(None, main, [str(wav), "--url", url, "--out", str(out), "--fast", "--voice", "Nobody"])
    err = capsys.readouterr().err
    assert code == 1 and "server error" in err and "Nobody" in err and "Tingting" in err, err


async def test_talk_says_a_notice_about_the_turn_and_still_writes_its_reply(tmp_path: Path, capsys) -> None:
    """A turn longer than the server's chat LM reads is answered with an `error` notice first (turn_truncated; a
    turn longer than the audio it keeps, input_audio_truncated). talk ended there with 'server error' and exit 1,
    and wrote no reply, though the reply came."""
    wav, out = tmp_path / "turn.wav", tmp_path / "reply.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)
    pipeline = ScriptedPipeline()
    pipeline.heard_as = "<audio_7>" * 400  # 900 tokens as the scripted pipeline counts them: 300 are read
    pipeline.prompt_limit = 300
    async with scripted_server(pipeline) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        argv = [str(wav), "--url", url, "--out", str(out), "--fast"]
        code = await asyncio.get_running_loop().run_in_executor(None, main, argv)
    err = capsys.readouterr().err
    assert code == 0 and "server notice" in err and "[turn_truncated]" in err, err
    assert sf.info(str(out)).duration > 0.1


def talk(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Runs `stepaudio-rt talk ARGV`; returns its exit status and what it wrote to stderr."""
    code = main(list(argv))
    return code, capsys.readouterr().err


def no_server() -> str:
    return f"ws://127.0.0.1:{free_port()}/v1/realtime"


def test_a_file_that_is_not_audio_is_named_before_connecting(tmp_path: Path, capsys) -> None:
    notes = tmp_path / "notes.wav"
    notes.write_text("not a recording\n")
    assert talk(capsys, str(notes), "--url", no_server()) == (
        1, f"talk: cannot read {notes} as audio: Format not recognised. (talk reads wav, flac, ogg and mp3)\n")


def test_an_mp3_that_holds_no_audio_is_not_said_to_be_missing(tmp_path: Path, capfd) -> None:
    """A web page saved as .mp3: libsndfile's mp3 decoder calls it a file that does not exist, which it plainly does.
    capfd: libmpg123's three "Note: Illegal Audio-MPEG-Header ..." lines went to fd 2 before ours."""
    page = tmp_path / "song.mp3"
    page.write_text("<html><body>404 Not Found</body></html>\n")
    assert talk(capfd, str(page), "--url", no_server()) == (
        1, f"talk: cannot read {page} as audio: not a valid audio stream (talk reads wav, flac, ogg and mp3)\n")


@pytest.mark.parametrize("suffix", ["flac", "ogg", "mp3"])
def test_flac_ogg_and_mp3_files_are_read_and_said_to_be(tmp_path: Path, capsys, suffix: str) -> None:
    """talk read them (soundfile's libsndfile decodes them), but its help and the README spoke of wav files only, and a
    file it could not read (an m4a, say) was refused without naming what it reads."""
    recording = tmp_path / f"turn.{suffix}"
    sf.write(str(recording), speech(1.0), 24000)
    assert abs(load_wav_24k(recording).size - 24000) < 2400  # an mp3 is padded by its encoder
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "speech to send: wav, flac, ogg and mp3" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("nan_from", [0, 12000])
def test_a_float_wav_holding_nan_is_refused_before_connecting(tmp_path: Path, capsys, nan_from: int) -> None:
    """A float wav a broken export left NaN in: all NaN, talk called it silent; half NaN, it sent the NaN as full-scale
    clicks with numpy's RuntimeWarning on stderr, and the server answered them."""
    wav = tmp_path / "broken.wav"
    samples = speech(1.0)  # 24 kHz, the wire's rate: counted as sent
    samples[nan_from:] = np.nan
    sf.write(str(wav), samples, 24000, subtype="FLOAT")
    assert talk(capsys, str(wav), "--url", no_server()) == (
        1, f"talk: cannot read {wav} as audio: {24000 - nan_from} of its 24000 samples are not numbers "
           "(NaN or infinity)\n")


def test_a_silent_file_fails_at_once_instead_of_after_the_reply_timeout(tmp_path: Path, capsys) -> None:
    """A server's VAD never starts a turn on silence: talk used to wait --timeout (60 s) for a reply."""
    quiet = tmp_path / "quiet.wav"
    sf.write(str(quiet), silence(3.0), 16000)
    assert talk(capsys, str(quiet), "--url", no_server()) == (
        1, f"talk: {quiet} is silent (no sample above -40 dBFS): there is no speech to send\n")


def test_an_empty_file_is_said_to_hold_no_audio(tmp_path: Path, capsys) -> None:
    """A wav of 0 samples (a recording that never started) was called silent, as if it held quiet audio."""
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), silence(0.0), 16000)
    assert talk(capsys, str(empty), "--url", no_server()) == (
        1, f"talk: {empty} holds no audio (0 samples): there is no speech to send\n")


def test_no_server_at_the_url_says_so_and_what_to_check(tmp_path: Path, capsys) -> None:
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), speech(0.5), 24000)
    url = no_server()
    assert talk(capsys, str(wav), "--url", url) == (
        1, f"talk: cannot connect to {url}: Connection refused (is `stepaudio-rt serve` running there?)\n")


@pytest.mark.parametrize("scheme", ["wss", "https"])
def test_a_tls_url_to_the_plain_server_says_the_server_has_no_tls(tmp_path: Path, capsys, scheme: str) -> None:
    """talk printed 'cannot connect to wss://...: ConnectionResetError (is `stepaudio-rt serve` running there?)'
    about a server that was running, with no word of TLS."""
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), speech(0.5), 24000)
    with ws_server_thread(lambda ws: None) as port:  # a plain WebSocket server, as `serve` is
        url = f"{scheme}://127.0.0.1:{port}"
        code, err = talk(capsys, str(wav), "--url", url)
    assert (code, err) == (1, f"talk: cannot connect to {url}: the TLS handshake failed (`stepaudio-rt serve` speaks "
                              "plain ws:// and http://, with no TLS)\n")


def test_a_tls_server_whose_certificate_is_not_trusted_says_so(tmp_path: Path, capsys) -> None:
    """A TLS proxy in front of the server with a private CA's certificate: talk printed 'cannot connect to wss://...:
    Operation not permitted (is `stepaudio-rt serve` running there?)', OpenSSL's error code read as an OS errno."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=120)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), speech(0.5), 24000)
    with ws_server_thread(lambda ws: None, ssl=tls) as port:
        url = f"wss://127.0.0.1:{port}"
        code, err = talk(capsys, str(wav), "--url", url)
    assert code == 1
    assert err.startswith(f"talk: cannot connect to {url}: the server's TLS certificate is not trusted here: self"), err
    assert err.endswith(" (for a private CA, point SSL_CERT_FILE at its certificate)\n"), err


def test_an_out_file_in_a_missing_folder_is_refused_before_talking(tmp_path: Path, capsys) -> None:
    """The reply is written at the end: a bad --out must not cost the user the whole conversation."""
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), speech(0.5), 24000)
    out = tmp_path / "no-such-folder" / "reply.wav"
    assert talk(capsys, str(wav), "--url", no_server(), "--out", str(out)) == (
        2, f"talk: cannot write {out}: no such folder: {out.parent}\n")


@pytest.mark.parametrize("name", ["reply.mp3", "reply.FLAC", "reply.ogg"])
def test_an_out_named_for_another_audio_format_is_refused_before_talking(tmp_path: Path, capsys, name: str) -> None:
    """`--out reply.mp3` got a WAV file under that name after the whole conversation (the tools refuse it): a player
    that goes by the name read it as a broken mp3."""
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), speech(0.5), 24000)
    out = tmp_path / name
    assert talk(capsys, str(wav), "--url", no_server(), "--out", str(out)) == (
        2, f"talk: cannot write {out}: talk writes a WAV file (24 kHz, 16-bit): name a .wav file or a folder\n")
    assert not out.exists()


def test_a_folder_given_as_the_wav_is_named_as_a_folder_and_as_out_gets_reply_wav(tmp_path: Path, capsys) -> None:
    assert talk(capsys, str(tmp_path), "--url", no_server()) == (
        2, f"talk: {tmp_path}: a folder, not an audio file\n")
    assert talk(capsys, str(tmp_path / "gone.wav"), "--url", no_server()) == (
        2, f"talk: {tmp_path / 'gone.wav'}: no such file\n")
    assert reply_path(tmp_path) == tmp_path / "reply.wav"  # written at the end: never a folder's name
    assert reply_path(tmp_path / "mine.wav") == tmp_path / "mine.wav"


@pytest.mark.slow
def test_noise_the_server_hears_no_speech_in_is_reported_as_such(embedded_server, tmp_path: Path, capsys) -> None:
    """Audible but not speech (white noise): silero hears no turn, and talk says that rather than 'no reply', once
    the server has heard it all rather than at the end of --timeout."""
    hiss = tmp_path / "hiss.wav"
    sf.write(str(hiss), np.random.default_rng(0).normal(0, 0.05, 3 * 16000).astype(np.float32), 16000)
    started = time.monotonic()
    code, err = talk(capsys, str(hiss), "--url", embedded_server.ws, "--fast", "--timeout", "60")
    assert (code, err) == (
        1, "talk: the server heard no speech: no turn began in the 2 s after it had heard all the audio\n")
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("option", ["--speed", "--timeout"])
@pytest.mark.parametrize(("value", "why"), [("0", "must be above 0, got 0"),
                                            # was 'invalid _positive_float value: ...', talk's private parser's name
                                            ("1O", "must be a number, got '1O'")])
def test_a_speed_or_timeout_that_is_not_a_positive_number_is_a_usage_error(tmp_path: Path, capsys, option: str,
                                                                          value: str, why: str) -> None:
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), speech(0.5), 24000)
    with pytest.raises(SystemExit) as exit_:
        main([str(wav), "--url", no_server(), option, value])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith(f"stepaudio-rt talk: error: argument {option}: {why}\n")


@pytest.mark.parametrize("typed", ["127.0.0.1:8765", "localhost:8765", "ws://", "ftp://127.0.0.1:8765"])
def test_a_url_talk_cannot_reach_is_a_usage_error(tmp_path: Path, capsys, typed: str) -> None:
    """The server's address typed without its scheme failed after the wav was read, with exit 1, as
    "talk: 127.0.0.1:8765?model=stepaudio-rt isn't a valid URI": the README calls a bad command line exit 2."""
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), speech(0.5), 24000)
    with pytest.raises(SystemExit) as exit_:
        main([str(wav), "--url", typed])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"stepaudio-rt talk: error: argument --url: {typed!r} is not a ws:// or http:// URL, "
        "e.g. ws://127.0.0.1:8765/v1/realtime\n")


@pytest.mark.parametrize("typed", ["ws://127.0.0.1:8765", "ws://127.0.0.1:8765/", "http://127.0.0.1:8765/v1",
                                   "ws://127.0.0.1:8765/v1/realtime?model=stepaudio-rt"])
def test_the_server_address_alone_reaches_the_realtime_api(typed: str) -> None:
    """What `make serve` prints (the page's address) or the openai SDK's base_url, given to --url, connects."""
    assert build_url(typed, "stepaudio-rt") == "ws://127.0.0.1:8765/v1/realtime?model=stepaudio-rt"


@pytest.mark.slow
def test_a_url_without_the_realtime_path_is_told_where_the_api_is(embedded_server, beckett_wav, capsys) -> None:
    """A path that is not the API's (here the openai SDK's /realtime without /v1): the 404 says where the API is, to
    the client and in the server's log (the openai SDK shows only the status)."""
    url = f"ws://127.0.0.1:{embedded_server.port}/realtime"
    assert talk(capsys, str(beckett_wav), "--url", url) == (
        1, "talk: server rejected WebSocket connection: HTTP 404: not found: the Realtime API is at /v1/realtime\n")
    assert "refused a WebSocket to /realtime (404): the Realtime API is at /v1/realtime" in embedded_server.log()


@pytest.mark.slow
def test_ctrl_c_mid_conversation_exits_130_without_a_traceback(embedded_server, two_cities_wav) -> None:
    # SIGINT as a terminal delivers it: a runner that started the tests in the background (bash `cmd &`) passes
    # SIGINT ignored to its children, and Python then never turns it into KeyboardInterrupt.
    talk_ = subprocess.Popen([sys.executable, "-m", "controller.cli", "talk", str(two_cities_wav), "--url",
                              embedded_server.ws, "--out", os.devnull], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Mid-conversation once talk prints the server's first transcript (the recording is 44 s long); a fixed wait
    # could end while a slow machine still imported talk, outside its KeyboardInterrupt handler.
    assert talk_.stdout is not None
    assert talk_.stdout.read(len("user> ")) == "user> "
    talk_.send_signal(signal.SIGINT)
    _, err = talk_.communicate(timeout=30)
    assert talk_.returncode == 130 and err == "", err


@pytest.mark.slow
def test_the_reply_is_a_wav_whatever_the_out_name(embedded_server, beckett_wav, tmp_path: Path, capsys) -> None:
    """`--out reply` (or /dev/null) used to end the conversation with soundfile's 'No format specified' TypeError."""
    out = tmp_path / "reply"
    assert talk(capsys, str(beckett_wav), "--url", embedded_server.ws, "--fast", "--out", str(out))[0] == 0
    info = sf.info(str(out))
    assert (info.format, info.samplerate) == ("WAV", 24000) and info.duration > 0.3


@pytest.mark.slow
def test_a_reply_that_fails_on_the_server_is_an_error_with_its_reason(beckett_wav, capsys) -> None:
    """The chat server behind --chat-url is down: talk printed '[turn 1: failed]', no reason, and exited 0."""
    chat_url = f"http://127.0.0.1:{free_port()}/v1"
    server = ServerProcess("--profile", "embedded", "--chat-url", chat_url)
    try:
        code, err = talk(capsys, str(beckett_wav), "--url", server.ws, "--fast", "--out", os.devnull)
    finally:
        server.stop()
    assert code == 1
    assert err.startswith(f"talk: the reply failed: cannot connect to chat server {chat_url}/models: "), err


def test_user_turns_print_in_the_order_spoken_when_their_transcripts_finish_out_of_order() -> None:
    """A file sent at once holds several turns, transcribed at the same time: the second may finish first. Each
    turn's line still comes in the order spoken, whole, and a later turn's deltas never break into an earlier's."""
    out = io.StringIO()
    printer = TranscriptPrinter(out)
    for data in ({"type": "input_audio_buffer.committed", "item_id": "a"},
                 {"type": "input_audio_buffer.committed", "item_id": "b"},
                 {"type": "input_audio_buffer.committed", "item_id": "c"},
                 {"type": "conversation.item.input_audio_transcription.delta", "item_id": "a", "delta": "Ever "},
                 {"type": "conversation.item.input_audio_transcription.delta", "item_id": "b", "delta": "Ever "},
                 {"type": "conversation.item.input_audio_transcription.completed", "item_id": "b",
                  "transcript": "Ever failed."},
                 {"type": "conversation.item.input_audio_transcription.failed", "item_id": "c"},
                 {"type": "conversation.item.input_audio_transcription.delta", "item_id": "a", "delta": "tried."},
                 {"type": "conversation.item.input_audio_transcription.completed", "item_id": "a",
                  "transcript": "Ever tried."}):
        printer.event(ServerEvent(data["type"], data), None)
    assert out.getvalue().splitlines() == ["user> Ever tried.", "user> Ever failed.", "user> [transcription failed]"]


def test_a_turn_whose_reply_was_cut_before_its_transcript_came_prints_after_its_text_with_the_latency() -> None:
    """Beckett's third phrase: its reply is cut by the fourth phrase 0.4 s after the pause, and its transcript comes
    0.7 s after: talk printed '[turn 3: cancelled] ... input transcript n/a' and 'user> No matter.' under a later
    turn's line. The turn's line now waits for its text and has the transcript's latency."""
    from clients.turns import Turn

    out = io.StringIO()
    printer = TranscriptPrinter(out)
    cut = Turn(user_item_id="a", end_of_speech=10.0, status="cancelled", reason="turn_detected", response_done=10.4)
    nothing_heard = Turn(user_item_id="b", end_of_speech=12.0, status="cancelled", reason="turn_detected",
                         response_done=12.4)

    def event(data: dict, turn: Turn | None = None) -> None:
        printer.event(ServerEvent(data["type"], data), turn)

    event({"type": "input_audio_buffer.committed", "item_id": "a"})
    event({"type": "response.done", "response": {"id": "r1", "status": "cancelled"}}, cut)
    assert out.getvalue() == ""
    event({"type": "input_audio_buffer.committed", "item_id": "b"})
    cut.transcript_done = 10.7  # as TurnTracker records it before the printer sees the event
    event({"type": "conversation.item.input_audio_transcription.completed", "item_id": "a", "transcript": "No matter."},
          cut)
    event({"type": "response.done", "response": {"id": "r2", "status": "cancelled"}}, nothing_heard)
    printer.finish()  # b's transcript never came: its line is printed all the same when talk ends
    lines = out.getvalue().splitlines()
    assert [line.split(" from ")[0] for line in lines] == [
        "user> No matter.", "  [turn 1: cancelled (turn_detected)]", "  [turn 2: cancelled (turn_detected)]"]
    assert "| input transcript  0.700 s |" in lines[1] and "| input transcript    n/a s |" in lines[2]


def test_a_turn_line_says_why_its_reply_was_cut() -> None:
    """A reply cut at max_output_tokens showed "[turn 1: incomplete]" and no reason."""
    from clients.talk import format_turn
    from clients.turns import Turn

    assert format_turn(Turn(status="incomplete", reason="max_output_tokens"), 1).startswith(
        "  [turn 1: incomplete (max_output_tokens)] from end of user speech")
    done = ServerEvent("response.done", {"type": "response.done", "response": {
        "id": "r", "status": "cancelled", "status_details": {"type": "cancelled", "reason": "turn_detected"}}})
    assert (done.response_status, done.response_reason) == ("cancelled", "turn_detected")


def test_help_says_the_url_may_be_the_servers_http_address(capsys) -> None:
    """talk takes `--url http://HOST:PORT` (the address `make serve` prints), but its help named a WebSocket URL
    alone."""
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--url URL the server: its Realtime WebSocket URL, or its http://HOST:PORT (default " in " ".join(
        capsys.readouterr().out.split())


def test_help_says_how_long_talk_waits_for_the_reply(capsys) -> None:
    """`talk --help` names --timeout's default, as it does every other option's: a user on a slow machine must know
    when to raise it."""
    with pytest.raises(SystemExit):
        main(["--help"])
    line = " ".join(capsys.readouterr().out.split("--timeout TIMEOUT", 2)[2].split("\n  --")[0].split())
    assert "default 60" in line, line


def test_an_unknown_host_is_named_as_such(tmp_path: Path, capsys) -> None:
    """A mistyped host name used to read 'Unknown error -2' (a getaddrinfo code taken for an errno)."""
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), speech(0.5), 24000)
    url = "ws://no-such-host.invalid:8765/v1/realtime"
    code, err = talk(capsys, str(wav), "--url", url)
    assert code == 1 and err.startswith(f"talk: cannot connect to {url}: "), err
    assert "Unknown error" not in err and "not known" in err, err


async def test_a_reply_cut_short_by_the_timeout_is_still_written(tmp_path: Path, capsys) -> None:
    """--out keeps 'every reply as far as it was sent': a reply that stalls mid-way until --timeout (or one cut
    by Ctrl-C, the same path) used to leave no file at all."""
    wav, out = tmp_path / "turn.wav", tmp_path / "reply.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)
    pipeline = ScriptedPipeline()
    pipeline.reply_words = ["It", "is", "noon.", "And", "it", "will", "be", "noon", "for", "a", "while."]
    pipeline.word_pauses = {4: 60.0}  # the LM stalls in the second sentence
    async with scripted_server(pipeline) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        argv = [str(wav), "--url", url, "--out", str(out), "--fast", "--timeout", "3"]
        code = await asyncio.get_running_loop().run_in_executor(None, main, argv)
    assert (code, capsys.readouterr().err) == (1, "talk: no complete reply: nothing came from the server for 3 s\n")
    assert sf.info(str(out)).frames > 0  # the words spoken before the timeout


async def test_a_reply_longer_than_the_timeout_is_waited_for_while_it_streams(tmp_path: Path, capsys) -> None:
    """--timeout (60 s) bounded the whole reply after the audio was sent: a long story that streamed fine failed
    with exit 1 after 60 s of its paced speech. It bounds a reply's silence: this one streams for longer than
    the timeout, a sentence at a time, and completes."""
    wav, out = tmp_path / "turn.wav", tmp_path / "reply.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)
    pipeline = ScriptedPipeline()
    pipeline.reply_words = ["It", "is", "noon."] * 6
    pipeline.word_pauses = {i: 1.5 for i in range(0, 18, 3)}  # a sentence every ~1.5 s: 9 s in all
    async with scripted_server(pipeline) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        argv = [str(wav), "--url", url, "--out", str(out), "--fast", "--timeout", "5"]
        code = await asyncio.get_running_loop().run_in_executor(None, main, argv)
    assert (code, capsys.readouterr().err) == (0, "")
    assert sf.info(str(out)).frames > 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a file every write to fails)")
async def test_an_out_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path: Path, capsys) -> None:
    """An --out the folder check lets through (a full disk, a read-only file system) failed with soundfile's
    traceback after the whole conversation."""
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)
    async with scripted_server(ScriptedPipeline()) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        argv = [str(wav), "--url", url, "--out", "/dev/full", "--fast"]
        code = await asyncio.get_running_loop().run_in_executor(None, main, argv)
    assert (code, capsys.readouterr().err) == (1, "talk: cannot write the reply to /dev/full: System error.\n")


async def test_talk_waits_for_a_server_still_loading_its_models(tmp_path: Path, capsys) -> None:
    """`make serve` in one terminal and talk in another: the server's handshake answers 503 `loading` for its first
    tens of seconds, which talk reported as a failure (exit 1); it now says it waits and gets its reply."""
    wav, out = tmp_path / "turn.wav", tmp_path / "reply.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)
    async with scripted_server(ScriptedPipeline()) as server:
        server.server.ready = False  # as while load_pipeline runs
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        talking = asyncio.get_running_loop().run_in_executor(None, main, [str(wav), "--url", url, "--out", str(out),
                                                                          "--fast", "--timeout", "60"])
        await asyncio.sleep(2.5)
        server.server.ready = True
        code = await talking
    err = capsys.readouterr().err
    assert code == 0, err
    assert "talk: the server is loading its models; waiting up to 60 s" in err
    assert sf.info(str(out)).duration > 0.1



async def test_a_port_where_another_service_listens_is_named_as_not_a_realtime_server(tmp_path: Path,
                                                                                        capsys) -> None:
    """A mistyped --url port that reaches another service (an MQTT broker, a database) said only 'talk: did not
    receive a valid HTTP response', naming neither the URL nor what to check."""
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x20\x02\x00\x00")  # an MQTT CONNACK, say
        await writer.drain()
        writer.close()

    other = await asyncio.start_server(not_http, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{other.sockets[0].getsockname()[1]}/v1/realtime"
    async with other:
        code = await asyncio.get_running_loop().run_in_executor(None, main, [str(wav), "--url", url, "--fast",
                                                                                 "--out", str(tmp_path / "reply.wav")])
    assert (code, capsys.readouterr().err) == (1, f"talk: {url} is not a Realtime server: did not receive a valid "
                                                  "HTTP response (is that `stepaudio-rt serve`'s port?)\n")


async def _talking_in_a_session(server, tmp_path: Path) -> asyncio.Future[int]:  # type: ignore[no-untyped-def]
    """talk (its main(), in a thread) sending a 21 s file to `server`, once its session is open."""
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(20.0)]), 24000)
    url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
    talking = asyncio.get_running_loop().run_in_executor(None, main, [str(wav), "--url", url,
                                                                      "--out", str(tmp_path / "reply.wav")])
    for _ in range(300):  # real-time pace: the file lasts 21 s
        if server.sessions:
            break
        await asyncio.sleep(0.1)
    return talking


async def test_a_session_the_operator_hangs_up_says_so(tmp_path: Path, capsys) -> None:
    """An operator's `cmd/hangup` (MQTT) closes the session with 1000 "hangup": talk said only 'connection lost:
    server closed the connection (code 1000)', which reads as a fault; the server's reason now comes with it."""
    async with scripted_server(ScriptedPipeline()) as server:
        talking = await _talking_in_a_session(server, tmp_path)
        await server.command(next(iter(server.sessions)), "hangup", {})
        code = await talking
    err = capsys.readouterr().err
    assert (code, err.splitlines()[-1]) == (1, "talk: connection lost: server closed the connection (code 1000: "
                                               "hangup)"), err


async def test_an_operators_say_spoken_while_the_user_talks_gets_its_own_turn_line(tmp_path: Path) -> None:
    """An MQTT `cmd/say` while the user spoke, its reply still playing when the user's turn was committed: talk gave
    the say's reply the user's turn line (first audio -0.952 s) and the user's own reply a line of n/a."""

    wav, printed = tmp_path / "turn.wav", io.StringIO()
    sf.write(str(wav), np.concatenate([silence(0.3), speech(2.0), silence(3.0)]), 24000)
    async with scripted_server(ScriptedPipeline()) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        talking = asyncio.ensure_future(run_talk(wav, url, out=tmp_path / "reply.wav", printer=printed))
        for _ in range(600):  # until the user is heard speaking (real-time pace)
            if server.sessions and next(iter(server.sessions.values())).detector.in_speech:
                break
            await asyncio.sleep(0.05)
        long_say = " ".join(["Hello from the control room."] * 12)  # still spoken when the user's turn ends
        await server.command(next(iter(server.sessions)), "say", {"text": long_say})
        await talking
    turn_lines = [line for line in printed.getvalue().splitlines() if line.startswith("  [")]
    assert len(turn_lines) == 2, turn_lines
    assert re.fullmatch(r"  \[operator's say: completed\] reply audio \d+\.\d\d s", turn_lines[0])
    assert re.search(r"\[turn 1: completed\] from end of user speech: first audio +\d+\.\d{3} s", turn_lines[1])


async def test_an_operators_say_cut_by_the_users_next_phrase_is_no_turn_of_the_users(tmp_path: Path) -> None:
    """An MQTT `cmd/say` after the user's first turn, cut by their second phrase: talk printed the say as
    "[turn 2: cancelled (turn_detected)]" with every timing n/a, as if the user had spoken it, and the user's three
    turns as 1, 3 and 4. The say now has the operator's line, and the user's turns are 1, 2 and 3."""
    wav, printed = tmp_path / "turn.wav", io.StringIO()
    phrase = np.concatenate([speech(0.8), silence(2.0)])
    sf.write(str(wav), np.concatenate([silence(0.3), phrase, phrase, phrase]), 24000)
    async with scripted_server(ScriptedPipeline()) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        talking = asyncio.ensure_future(run_talk(wav, url, out=tmp_path / "reply.wav", printer=printed))
        for _ in range(600):  # until the first reply is done (real-time pace), in the pause before the next phrase
            if "[turn 1: completed]" in printed.getvalue():
                break
            await asyncio.sleep(0.05)
        long_say = " ".join(["Hello from the control room."] * 12)  # still spoken when the user speaks again
        await server.command(next(iter(server.sessions)), "say", {"text": long_say})
        await talking
    lines = [line.split("]")[0] + "]" for line in printed.getvalue().splitlines() if line.startswith("  [")]
    assert lines == ["  [turn 1: completed]", "  [operator's say: cancelled (turn_detected)]", "  [turn 2: completed]",
                     "  [turn 3: completed]"], printed.getvalue()


@pytest.mark.parametrize("synth_seconds", [2.5, 1.0])
async def test_a_reply_cut_off_prints_only_what_was_heard_of_it(tmp_path: Path, synth_seconds: float) -> None:
    """A TTS slow to start (Step-Audio's: each sentence's transcript comes seconds before its audio), and the user
    speaks again before the reply is heard: talk printed 'assistant> ' with sentences never heard, for a reply cut
    with 0.00 s of audio (2.5 s) or cut in its first sentence (1.0 s), where the embedded profile's quick TTS printed
    nothing. It now prints the reply as far as the cut, as the server keeps it."""
    wav, printed = tmp_path / "turn.wav", io.StringIO()
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2), speech(0.8), silence(2.5)]), 24000)
    pipeline = ScriptedPipeline()
    pipeline.synth_seconds = synth_seconds
    pipeline.reply_words = "It is noon. The sun is high up in the sky now. Lunch is soon.".split()
    async with scripted_server(pipeline) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        await run_talk(wav, url, out=tmp_path / "reply.wav", printer=printed)
    lines = [line for line in printed.getvalue().splitlines() if line.startswith(("assistant> ", "  [turn "))]
    assert [line.split("]")[0] for line in lines if line.startswith("  [")] == [
        "  [turn 1: cancelled (turn_detected)", "  [turn 2: completed"], printed.getvalue()
    replies = printed.getvalue().split("  [turn 1")[0].split("assistant> ")[1:]
    if synth_seconds > 2:  # nothing of it was heard
        assert replies == [] and "reply audio 0.00 s" in printed.getvalue(), printed.getvalue()
    else:
        assert len(replies) == 1 and "It is noon.".startswith(replies[0].strip()), printed.getvalue()
    assert lines[-2] == "assistant> It is noon. The sun is high up in the sky now. Lunch is soon."


async def test_talk_ended_by_a_hangup_says_where_the_replies_so_far_went(tmp_path: Path) -> None:
    """An operator hung up after a reply: talk wrote that reply to reply.wav, as it keeps what was said when it ends
    early, but said only 'talk: connection lost: ...', so the user never learnt the file was there."""
    from clients.talk_wav import TalkError

    wav, out, printed = tmp_path / "turn.wav", tmp_path / "reply.wav", io.StringIO()
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(20.0)]), 24000)
    async with scripted_server(ScriptedPipeline()) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        talking = asyncio.ensure_future(run_talk(wav, url, out=out, printer=printed))
        for _ in range(600):  # until the first reply is done (real-time pace)
            if "[turn 1: completed]" in printed.getvalue():
                break
            await asyncio.sleep(0.05)
        await server.command(next(iter(server.sessions)), "hangup", {})
        with pytest.raises(TalkError, match="hangup"):
            await talking
    seconds = sf.info(str(out)).duration
    assert seconds > 0.1
    assert printed.getvalue().splitlines()[-1] == f"wrote {seconds:.2f} s of reply audio to {out}"


async def test_a_server_stopped_mid_conversation_says_it_is_shutting_down(tmp_path: Path, capsys) -> None:
    """The server stopped (Ctrl-C) while talk talked: talk said 'connection lost: server closed the connection (code
    1001)', which reads as a fault; the server's close now says why."""
    async with scripted_server(ScriptedPipeline()) as server:
        talking = await _talking_in_a_session(server, tmp_path)
    code = await talking
    err = capsys.readouterr().err
    assert (code, err.splitlines()[-1]) == (1, "talk: connection lost: server closed the connection (code 1001: "
                                               "server shutting down)"), err


def test_a_websocket_server_that_never_starts_a_session_is_named_as_such(tmp_path: Path, capsys) -> None:
    """Another WebSocket service on the port, which answers the handshake and then nothing: talk said only 'talk: '
    (an empty TimeoutError) after its --timeout."""
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)
    with ws_server_thread(lambda ws: ws.recv()) as port:
        code, err = talk(capsys, str(wav), "--url", f"ws://127.0.0.1:{port}", "--timeout", "1",
                         "--out", str(tmp_path / "reply.wav"))
    assert (code, err.splitlines()[-1]) == (1, "talk: no session.created within 1 s of connecting: the WebSocket "
                                               "server there does not speak the Realtime API"), err


def test_a_server_that_dies_mid_conversation_is_not_said_to_have_closed_the_connection(tmp_path: Path,
                                                                                        capsys) -> None:
    """A server killed (kill -9, a crash) while talk talked: talk said 'server closed the connection (code 1006)',
    as if the server had ended the session; no close came, and talk now says so."""
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)

    def dies(ws: ServerConnection) -> None:
        ws.send(json.dumps({"type": "session.created", "event_id": "event_1", "session": {"type": "realtime"}}))
        ws.recv()  # talk's session.update
        ws.socket.shutdown(socket.SHUT_RDWR)  # the TCP connection ends with no close frame, as when a process dies

    with ws_server_thread(dies) as port:
        code, err = talk(capsys, str(wav), "--url", f"ws://127.0.0.1:{port}", "--out", str(tmp_path / "reply.wav"))
    assert (code, err.splitlines()[-1]) == (1, "talk: connection lost: the server sent no close (code 1006: it "
                                               "stopped, or the network failed)"), err


@pytest.mark.slow
async def test_talk_keeps_waiting_while_a_loading_server_does_not_answer_at_all(tmp_path: Path, capsys) -> None:
    """While the chat LM's loader holds the interpreter a loading server answers nothing (README: /healthz), for
    longer than the client's 10 s handshake timeout on busy cores: talk, waiting for the load, gave up there with
    'cannot connect ... timed out'. Here the server's loop is blocked 14 s, as the loader blocks it."""
    wav, out = tmp_path / "turn.wav", tmp_path / "reply.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)
    async with scripted_server(ScriptedPipeline()) as server:
        server.server.ready = False
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        talking = asyncio.get_running_loop().run_in_executor(None, main, [str(wav), "--url", url, "--out", str(out),
                                                                          "--fast", "--timeout", "120"])
        await asyncio.sleep(3.0)  # talk has met the 503 `loading` by now
        time.sleep(14.0)  # the loop answers nothing: talk's handshake attempt times out (10 s) meanwhile
        server.server.ready = True
        code = await talking
    err = capsys.readouterr().err
    assert code == 0, err
    assert sf.info(str(out)).duration > 0.1


def test_a_full_server_s_reason_is_said_once(tmp_path: Path, capsys) -> None:
    """The handshake refusal now carries the server's reason in its text; talk added the body again after it."""
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), speech(0.5), 24000)
    def full(ws: ServerConnection, request: Request) -> Response:
        return ws.respond(503, "server full: 4 of 4 sessions\n")

    with ws_server_thread(lambda ws: None, process_request=full) as port:
        code, err = talk(capsys, str(wav), "--url", f"ws://127.0.0.1:{port}")
    assert code == 1
    assert err.count("server full: 4 of 4 sessions") == 1, err


@pytest.mark.parametrize("key", [None, "wrong"])
async def test_a_server_that_wants_a_key_says_how_talk_gives_it(tmp_path: Path, capsys, monkeypatch,
                                                                 key: str | None) -> None:
    """A server run with --api-key, and talk without the key or with another: talk said only "server rejected
    WebSocket connection: HTTP 401: invalid or missing API key", naming neither --api-key nor its variable."""
    monkeypatch.delenv("STEPAUDIO_RT_API_KEY", raising=False)
    wav = tmp_path / "turn.wav"
    sf.write(str(wav), speech(0.5), 24000)
    async with scripted_server(ScriptedPipeline(), server=ServerConfig(port=0, api_keys=("right",))) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        argv = [str(wav), "--url", url, *(["--api-key", key] if key else [])]
        code = await asyncio.get_running_loop().run_in_executor(None, main, argv)
    said = "needs an API key" if key is None else "refused the API key"
    assert (code, capsys.readouterr().err) == (1, (
        f"talk: the server at {url} {said} (HTTP 401: invalid or missing API key): "
        + ("give it with --api-key KEY or in env STEPAUDIO_RT_API_KEY\n" if key is None else
           "check the key given with --api-key or in env STEPAUDIO_RT_API_KEY against the server's --api-key (or its "
           "env STEPAUDIO_RT_API_KEYS)\n")))


def _pacing_server(operator_update: bool) -> Callable[[ServerConnection], None]:
    """A server that hears the second of two turns only when talk's update after the audio comes, as a pacing server
    does once it has read that far; with operator_update, it also sends the session.updated of an operator's
    instructions command (event bus) right after the first turn."""
    def turn(n: int) -> list[dict]:
        item, resp = f"item_{n}", {"id": f"resp_{n}", "status": "completed", "output": []}
        return [{"type": "input_audio_buffer.speech_stopped", "item_id": item, "audio_end_ms": 1000 * n},
                {"type": "input_audio_buffer.committed", "item_id": item},
                {"type": "conversation.item.input_audio_transcription.completed", "item_id": item,
                 "content_index": 0, "transcript": f"turn {n}"},
                {"type": "response.created", "response": {**resp, "status": "in_progress"}},
                {"type": "response.done", "response": resp}]

    def serve(ws: ServerConnection) -> None:
        ws.send(json.dumps({"type": "session.created", "session": {"type": "realtime", "tool_choice": "auto"}}))
        updates, heard = 0, 0
        for message in ws:
            event = json.loads(message)
            later = []
            if event["type"] == "input_audio_buffer.append" and not heard:
                heard, later = 1, turn(1)
                if operator_update:
                    later.append({"type": "session.updated", "session": {"instructions": "Be brief.",
                                                                         "tool_choice": "auto"}})
            elif event["type"] == "session.update":
                updates += 1
                echo = {"tool_choice": event["session"].get("tool_choice", "auto")}
                later = (turn(2) if updates == 2 else []) + [{"type": "session.updated", "session": echo}]
            for out in later:
                ws.send(json.dumps(out))

    return serve


@pytest.mark.parametrize("operator_update", [False, True], ids=["alone", "with-an-operators-instructions"])
def test_talk_fast_waits_for_the_turns_a_pacing_server_has_not_heard_yet(tmp_path: Path, operator_update) -> None:
    """`talk --fast` against a server that reads input only as fast as it transcribes it (`serve` holds such a
    client back): talk had sent everything long before the server heard it, saw every turn so far answered, and
    ended with the later turns unheard (2 of Beckett's 4 turns, 'wrote 0.00 s'). It now ends once the server has
    heard all of it: the session.update it sends after the audio is answered only then. It took any session.updated
    for that one, and an operator's instructions command (the event bus) meanwhile ended it as early: it now waits
    for its own update's (tool_choice "none", which talk alone sets)."""
    wav = tmp_path / "turns.wav"
    sf.write(str(wav), np.tile(np.concatenate([speech(0.4), silence(0.8)]), 2), 24000)
    with ws_server_thread(_pacing_server(operator_update)) as port:
        result = asyncio.run(run_talk(wav, f"ws://127.0.0.1:{port}/v1/realtime", realtime=False,
                                      printer=io.StringIO(), timeout_s=30))
    assert [t.user_transcript for t in result.turns] == ["turn 1", "turn 2"]


def test_a_reply_that_streams_before_its_turns_transcript_prints_under_that_turns_user_line() -> None:
    """The server speaks as soon as the turn ends; its transcript may come later (Whisper slower than the reply's
    first sentence): talk printed 'assistant> It is' before 'user> What time is it?' of the same turn. The reply's
    text now waits for its turn's user line, then streams on; a reply nobody's turn asked for prints at once."""
    from clients.turns import Turn

    out = io.StringIO()
    printer = TranscriptPrinter(out)
    turn = Turn(user_item_id="a", response_id="r1", status="completed")
    say = Turn(response_id="r0", status="completed")

    def event(data: dict, of: Turn | None = None) -> None:
        printer.event(ServerEvent(data["type"], data), of)

    event({"type": "response.output_audio_transcript.delta", "response_id": "r0", "delta": "Hello."}, say)
    event({"type": "response.done", "response": {"id": "r0", "status": "completed"}}, say)
    event({"type": "input_audio_buffer.committed", "item_id": "a"})
    event({"type": "response.output_audio_transcript.delta", "response_id": "r1", "delta": "It is"}, turn)
    event({"type": "conversation.item.input_audio_transcription.delta", "item_id": "a", "delta": "What time "})
    assert out.getvalue().splitlines()[-1] == "user> What time "
    event({"type": "conversation.item.input_audio_transcription.delta", "item_id": "a", "delta": "is it?"})
    event({"type": "conversation.item.input_audio_transcription.completed", "item_id": "a",
           "transcript": "What time is it?"}, turn)
    event({"type": "response.output_audio_transcript.delta", "response_id": "r1", "delta": " noon."}, turn)
    event({"type": "response.done", "response": {"id": "r1", "status": "completed"}}, turn)
    lines = out.getvalue().splitlines()
    assert [line.split(" from ")[0] for line in lines] == [
        "assistant> Hello.", "  [operator's say: completed] reply audio 0.00 s", "user> What time is it?",
        "assistant> It is noon.", "  [turn 1: completed]"]


def test_a_reply_whose_turn_never_got_a_transcript_is_printed_when_talk_ends() -> None:
    from clients.turns import Turn

    out = io.StringIO()
    printer = TranscriptPrinter(out)
    turn = Turn(user_item_id="a", response_id="r1", status="completed")
    printer.event(ServerEvent("input_audio_buffer.committed", {"item_id": "a"}), None)
    printer.event(ServerEvent("response.output_audio_transcript.delta", {"response_id": "r1", "delta": "Noon."}), turn)
    printer.event(ServerEvent("response.done", {"response": {"id": "r1", "status": "completed"}}), turn)
    assert out.getvalue() == ""
    printer.finish()
    assert [line.split(" from ")[0] for line in out.getvalue().splitlines()] == [
        "assistant> Noon.", "  [turn 1: completed]"]



@pytest.mark.parametrize(("deltas", "final", "lines"), [
    (["What tim ", "is it"], "What time is it?", ["user> What tim is it", "user (corrected)> What time is it?"]),
    (["What time "], "What time is it?", ["user> What time is it?"]),
    (["What time "], None, ["user> What time ", "user (corrected)> [transcription failed]"]),
], ids=["revised", "deltas-cut-short", "failed"])
def test_a_live_user_line_the_final_transcript_does_not_match_is_corrected(deltas: list[str], final: str | None,
                                                                          lines: list[str]) -> None:
    """The user line streams the transcript's deltas; the final transcript only ended it. Where recognition revised
    the words, the deltas stopped short, or it failed, the screen kept the live words (a failure said nothing): the
    final text now completes the line, or follows it as the correction."""
    out = io.StringIO()
    printer = TranscriptPrinter(out)
    item = {"item_id": "a", "content_index": 0}
    printer.event(ServerEvent("input_audio_buffer.committed", {"item_id": "a"}), None)
    for delta in deltas:
        printer.event(ServerEvent("conversation.item.input_audio_transcription.delta", {**item, "delta": delta}), None)
    if final is None:
        printer.event(ServerEvent("conversation.item.input_audio_transcription.failed", item), None)
    else:
        printer.event(ServerEvent("conversation.item.input_audio_transcription.completed",
                                  {**item, "transcript": final}), None)
    printer.reply_written("reply.wav", 0.0)
    assert out.getvalue().splitlines() == [*lines, "wrote 0.00 s of reply audio to reply.wav"]


def test_a_barge_in_note_prints_under_the_turn_line_of_the_reply_it_cut() -> None:
    """The user spoke over a reply whose turn's transcript had not come yet: talk printed '[barge-in: truncated ...]'
    at once, above the user line, the reply and the turn line it is about. It now prints under that turn line, as it
    does for a reply that had already ended."""
    from clients.turns import Turn

    out = io.StringIO()
    printer = TranscriptPrinter(out)
    turn = Turn(user_item_id="a", response_id="r1")

    def event(data: dict, of: Turn | None = None) -> None:
        printer.event(ServerEvent(data["type"], data), of)

    event({"type": "input_audio_buffer.committed", "item_id": "a"})
    event({"type": "response.output_audio.delta", "response_id": "r1", "item_id": "out1", "delta": ""}, turn)
    event({"type": "response.output_audio_transcript.delta", "response_id": "r1", "item_id": "out1",
           "delta": "It is"}, turn)
    event({"type": "input_audio_buffer.speech_started", "item_id": "b", "audio_start_ms": 900})
    event({"type": "client.truncated", "item_id": "out1", "content_index": 0, "audio_end_ms": 800})
    turn.status, turn.reason, turn.response_done = "cancelled", "turn_detected", 1.0
    event({"type": "response.done", "response": {"id": "r1", "status": "cancelled"}}, turn)
    event({"type": "conversation.item.input_audio_transcription.completed", "item_id": "a",
           "transcript": "What time is it?"}, turn)
    assert [line.split(" from ")[0] for line in out.getvalue().splitlines()] == [
        "user> What time is it?", "assistant> It is", "  [turn 1: cancelled (turn_detected)]",
        "[barge-in: truncated out1 at 800 ms]"]


async def test_a_file_the_server_hears_no_turn_in_ends_talk_once_it_has_heard_it_all(tmp_path: Path, capsys) -> None:
    """Clicks (10 ms each, 0.4 s apart): audible, so talk sends them, but never long enough for the VAD to hear
    speech. talk waited the whole --timeout (60 s by default) before saying so; it now says it 2 s after the server
    has heard all the audio (the session.updated of its update after the audio)."""
    clicks = np.zeros(3 * 24000, np.float32)
    for start in range(2400, clicks.size, 9600):
        clicks[start:start + 240] = 0.3
    wav = tmp_path / "clicks.wav"
    sf.write(str(wav), clicks, 24000)
    async with scripted_server(ScriptedPipeline()) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        started = time.monotonic()
        code = await asyncio.get_running_loop().run_in_executor(None, main, [str(wav), "--url", url, "--fast",
                                                                              "--out", os.devnull, "--timeout", "30"])
        took = time.monotonic() - started
    assert (code, capsys.readouterr().err) == (
        1, "talk: the server heard no speech: no turn began in the 2 s after it had heard all the audio\n")
    assert 2.0 <= took < 6.0, took


async def test_instructions_typed_in_the_c_locale_reach_the_server_as_text(tmp_path: Path, capsys) -> None:
    """PYTHONUTF8=0 LANG=C: Python holds argv's 'î' (UTF-8 bytes c3 ae) as two lone surrogates, which went to the
    server as broken text: its invalid_json error and exit 1. They are read as UTF-8 now; bytes that are not UTF-8
    (latin-1's 'î', ee) are one usage line before connecting."""
    wav, out = tmp_path / "turn.wav", tmp_path / "reply.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)
    pipeline = ScriptedPipeline()
    async with scripted_server(pipeline) as server:
        url = f"ws://127.0.0.1:{server.server.port}/v1/realtime"
        argv = [str(wav), "--url", url, "--out", str(out), "--fast", "--instructions",
                "Parle comme un pirate, s'il te pla\udcc3\udcaet."]  # what sys.argv holds in the C locale
        code = await asyncio.get_running_loop().run_in_executor(None, main, argv)
    assert code == 0
    assert pipeline.requests[-1].messages[0] == {"role": "system", "content": "Parle comme un pirate, s'il te plaît."}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([str(wav), "--url", no_server(), "--instructions", "pla\udceet"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "stepaudio-rt talk: error: argument --instructions: not UTF-8 text: set a UTF-8 locale (e.g. LANG=C.UTF-8) "
        "or type it in UTF-8")
