"""`stepaudio-rt talk FILE.wav`: speak a wav file to a server, print both transcripts live, save the spoken reply.

The wav (any rate, any channel count: downmixed) is streamed at real-time pace followed by 1.5 s of silence so
that server VAD ends the turn; with --no-vad the client commits and asks for a response itself. A server still
loading its models is waited for, up to the reply timeout, so talk can be started beside `make serve`. Exit status:
0 on success; 1 on a file that is not audio or holds only silence, no server at the URL, a refused handshake,
an error event, a failed reply, a lost connection, a timeout or an --out it cannot write; 2 on a missing wav, an
--out in a missing folder or a --url that is not ws(s):// or http(s):// (the message goes to stderr, checked before
connecting where it can be).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import numpy as np
import soundfile as sf
import soxr
from websockets.exceptions import InvalidMessage, InvalidStatus, WebSocketException

from clients.audio import WIRE_RATE, Pacing, SendLog, last_voiced_index, to_mono_float32, voiced_indices
from clients.events import ServerEvent
from clients.realtime_client import RealtimeClient, RealtimeConnectionError, ReconnectPolicy
from clients.turns import Turn, TurnTracker

__all__ = ["DEFAULT_URL", "TalkError", "TalkResult", "load_wav_24k", "main", "run_talk", "session_config"]

DEFAULT_URL = "ws://127.0.0.1:8765/v1/realtime"
TRANSCRIPT_GRACE_S = 2.0  # after the last response.done, how long to wait for a late input transcript
READABLE = "wav, flac, ogg and mp3"  # what soundfile's bundled libsndfile (1.1 and later) decodes
LOADING_POLL_S = 1.0  # below the server's Retry-After (5 s): a local user waits for the load, not for the hint
# Errors that tell of a turn the server heard only the end of and answers all the same: talk says them and waits for
# the reply; any other error ends talk.
NOTICE_CODES = frozenset({"input_audio_truncated", "turn_truncated"})


class TalkError(RuntimeError):
    """The server sent an error event, the connection was lost, or the reply did not come in time."""


@dataclass(slots=True)
class TalkResult:
    turns: list[Turn]
    reply_pcm16: bytes = b""          # every reply's audio, 24 kHz PCM16, in arrival order
    send_log: SendLog = field(default_factory=SendLog)


def load_wav_24k(path: str | Path) -> np.ndarray:
    """Read any audio file soundfile understands, downmix to mono and resample to 24 kHz float32.

    Raises TalkError for a file soundfile cannot read (not audio, truncated).
    """
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except sf.LibsndfileError as exc:
        raise TalkError(f"cannot read {path} as audio: {_unreadable(path, exc)} (talk reads {READABLE})") from exc
    x = to_mono_float32(data)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:  # a float wav from a broken export: its NaN went out as full-scale clicks, and all-NaN read as silent
        raise TalkError(f"cannot read {path} as audio: {bad} of its {x.size} samples are not numbers (NaN or infinity)")
    return x if rate == WIRE_RATE else soxr.resample(x, rate, WIRE_RATE, quality="HQ").astype(np.float32)


def _unreadable(path: str | Path, exc: sf.LibsndfileError) -> str:
    # libsndfile's mp3 decoder answers a file that holds no MPEG audio (a web page saved as .mp3) with "File does not
    # exist or is not a regular file": untrue of the file the user is looking at, so say what is wrong with it.
    if exc.error_string.startswith("File does not exist") and Path(path).is_file():
        return "not a valid audio stream"
    return exc.error_string


def session_config(vad: bool, voice: str | None = None) -> dict[str, object]:
    """The session.update body talk and the benchmark use: PCM16 24 kHz both ways, input transcription on; the
    reply's voice when named (a Step-Audio speaker, say: the server lists its voices if the name is not one)."""
    output: dict[str, object] = {"format": {"type": "audio/pcm", "rate": WIRE_RATE}}
    if voice is not None:
        output["voice"] = voice
    return {
        "type": "realtime",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": WIRE_RATE},
                "transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "server_vad"} if vad else None,
            },
            "output": output,
        },
    }


class _Printer:
    """Live transcript lines: user deltas, user final text, assistant deltas, per-turn timings.

    User turns print in the order they were spoken: their transcripts may finish out of order (a file sent at once
    holds several turns, transcribed concurrently), so a turn's text waits for the turns committed before it, and
    only the oldest pending turn's deltas print live."""

    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.turns_done = 0
        self._line: str | None = None  # what the current unfinished line is ("user"/"assistant")
        self._pending: list[str] = []  # committed user items whose text is not printed yet, in spoken order
        self._texts: dict[str, str] = {}  # finished transcripts waiting for the turns before them
        self._live: str | None = None  # the item whose deltas are on the current user line
        self._turn_lines: list[tuple[Turn, int]] = []  # finished turns (and their numbers) waiting for their user text

    def _write(self, s: str) -> None:
        if self.out is not None:
            self.out.write(s)
            self.out.flush()

    def _open(self, who: str) -> None:
        if self._line != who:
            self._end()
            self._write(f"{who}> ")
            self._line = who

    def _end(self) -> None:
        if self._line is not None:
            self._write("\n")
            self._line = None

    def _user_text(self, item: str | None, text: str) -> None:
        """A user item's transcript is final: print it, and the finished ones after it, once the items before it
        are printed (an item never committed prints at once)."""
        if item is None or item not in self._pending:
            self._open("user")
            self._write(text)
            self._end()
            return
        self._texts[item] = text
        while self._pending and self._pending[0] in self._texts:
            first = self._pending.pop(0)
            text = self._texts.pop(first)
            if first != self._live or self._line != "user":  # its deltas are not on the current line
                self._open("user")
                self._write(text)
            self._end()
            self._live = None
        self._print_turns()

    def _print_turns(self, *, all_left: bool = False) -> None:
        """Turn lines in order, each once its user text is printed: a reply cut by the next turn ends before the
        turn's transcript, whose latency then read n/a and whose text came under a later turn's line."""
        while self._turn_lines and (all_left or self._turn_lines[0][0].user_item_id not in self._pending):
            turn, number = self._turn_lines.pop(0)
            self._end()
            self._write(format_turn(turn, number) + "\n")

    def finish(self) -> None:
        """Prints the turn lines still waiting for a transcript that never came."""
        self._print_turns(all_left=True)

    def event(self, e: ServerEvent, turn: Turn | None) -> None:
        t = e.type
        if t == "input_audio_buffer.committed" and e.item_id:
            self._pending.append(e.item_id)
        elif t == "conversation.item.input_audio_transcription.delta" and e.delta:
            if not self._pending or e.item_id == self._pending[0]:  # later turns' deltas would interleave
                self._open("user")
                self._write(e.delta)
                self._live = e.item_id
        elif t == "conversation.item.input_audio_transcription.completed":
            self._user_text(e.item_id, e.transcript or "")
        elif t == "conversation.item.input_audio_transcription.failed":
            self._user_text(e.item_id, "[transcription failed]")
        elif t == "conversation.item.deleted" and e.item_id in self._pending:
            self._user_text(e.item_id, "[deleted]")
        elif t in ("response.output_audio_transcript.delta", "response.output_text.delta") and e.delta:
            self._open("assistant")
            self._write(e.delta)
        elif t == "response.done" and turn is not None:
            self._end()
            self.turns_done += 1
            self._turn_lines.append((turn, self.turns_done))
            self._print_turns()
        elif t == "client.truncated":
            self._end()
            self._write(f"[barge-in: truncated {e.get('item_id')} at {e.get('audio_end_ms')} ms]\n")
        elif t == "client.reconnected":
            self._end()
            self._write("[reconnected: the server started a new session]\n")


def _fmt(v: float | None) -> str:
    return "   n/a" if v is None else f"{v:6.3f}"


def format_turn(turn: Turn, number: int) -> str:
    status = f"{turn.status or '?'}" + (f" ({turn.reason})" if turn.reason else "")
    return (f"  [turn {number}: {status}] from end of user speech: first audio "
            f"{_fmt(turn.first_audio_latency)} s | input transcript {_fmt(turn.transcript_latency)} s"
            f" | response.done {_fmt(turn.done_latency)} s | reply audio {turn.audio_s:.2f} s")


async def run_talk(wav: str | Path, url: str = DEFAULT_URL, *, out: str | Path | None = None,
                   api_key: str | None = None, realtime: bool | float = True, vad: bool = True,
                   timeout_s: float = 60.0, silence_ms: int = 1500, model: str | None = "stepaudio-rt",
                   reconnect: ReconnectPolicy = ReconnectPolicy(enabled=False),
                   printer: TextIO | None = sys.stdout,
                   session_extra: dict[str, object] | None = None, voice: str | None = None) -> TalkResult:
    """Stream `wav` to the server at `url` and collect the reply (see module docstring).

    `timeout_s` bounds the wait after the audio has been sent, and the wait for a server still loading its models.
    Reconnect is off by default: a new server session would lose the turn. Raises TalkError.
    """
    x24 = load_wav_24k(wav)
    if last_voiced_index(x24) is None:  # the server's VAD would never start a turn: fail now, not at the timeout
        raise TalkError(f"{wav} is silent (no sample above -40 dBFS): there is no speech to send")
    try:
        client = await _connect_when_loaded(url, api_key, model, reconnect, timeout_s)
    except OSError as exc:  # refused, unreachable, timed out: InvalidStatus (a refused handshake) passes through
        raise TalkError(f"cannot connect to {url}: {_connect_failure(url, exc)}") from exc
    except InvalidMessage as exc:  # something else listens there (another service, a mistyped port)
        raise TalkError(f"{url} is not a Realtime server: {exc} (is that `stepaudio-rt serve`'s port?)") from exc
    try:
        return await _talk(client, x24, out, realtime, vad, timeout_s, silence_ms, _Printer(printer),
                           {**session_config(vad, voice), **(session_extra or {})})
    finally:
        await client.close()


def _connect_failure(url: str, exc: OSError) -> str:
    """Why a connection failed, and what to check."""
    if urlsplit(url).scheme in ("wss", "https") and isinstance(exc, (ssl.SSLEOFError, ConnectionResetError)):
        # The server has no TLS: it answers the TLS hello as a bad HTTP request and hangs up, which read as a bare
        # "ConnectionResetError (is `stepaudio-rt serve` running there?)" while it was.
        return "the TLS handshake failed (`stepaudio-rt serve` speaks plain ws:// and http://, with no TLS)"
    if isinstance(exc, ssl.SSLCertVerificationError):  # its errno is OpenSSL's: it read "Operation not permitted"
        return (f"the server's TLS certificate is not trusted here: {exc.verify_message} (for a private CA, point "
                "SSL_CERT_FILE at its certificate)")
    # asyncio's strerror is "Connect call failed (...)": name the errno. An unknown host's errno is a getaddrinfo
    # code (negative), which os.strerror reads as "Unknown error -2": its strerror says it.
    errno_text = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror
    return f"{errno_text or str(exc) or type(exc).__name__} (is `stepaudio-rt serve` running there?)"


def _is_loading(exc: InvalidStatus) -> bool:
    """The server's answer while its models load: 503 `loading` (a full server's 503 says "server full")."""
    return exc.response.status_code == 503 and exc.response.body.startswith(b"loading")


async def _connect_when_loaded(url: str, api_key: str | None, model: str | None, reconnect: ReconnectPolicy,
                               wait_s: float) -> RealtimeClient:
    """Connects, waiting up to `wait_s` for a server that is still loading its models: its first start (model
    assembly included) takes tens of seconds, and a user starts talk as soon as `make serve` is running."""
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            return await RealtimeClient.connect(url, api_key=api_key, model=model, reconnect=reconnect)
        except InvalidStatus as exc:
            if not _is_loading(exc) or time.monotonic() >= deadline:
                raise
        except TimeoutError:
            # Once it said `loading`, a server that does not answer is still loading: the chat LM's loader holds the
            # interpreter for seconds (20 s seen on two busy cores), past the handshake's own timeout.
            if not told or time.monotonic() >= deadline:
                raise
        if not told:
            print(f"talk: the server is loading its models; waiting up to {wait_s:g} s", file=sys.stderr)
            told = True
        await asyncio.sleep(LOADING_POLL_S)


async def _talk(client: RealtimeClient, x24: np.ndarray, out: str | Path | None, realtime: bool | float,
                vad: bool, timeout_s: float, silence_ms: int, printer: _Printer,
                session: dict[str, object]) -> TalkResult:
    loop = asyncio.get_running_loop()
    first = await _recv(client, timeout_s)
    if first is None or first.type != "session.created":
        raise TalkError(f"expected session.created, got {first.type if first else 'nothing'}")
    await client.session_update(session)
    log = SendLog()
    tracker = TurnTracker(log, voiced_indices(x24))
    result = TalkResult(turns=tracker.turns, send_log=log)
    reply = bytearray()

    async def send() -> None:
        await client.stream_audio(x24, WIRE_RATE, realtime, silence_ms=silence_ms if vad else 0, log=log)
        if not vad:
            await client.commit()
            await client.create_response()

    sender = asyncio.create_task(send(), name="talk-sender")
    # A hang-up fails the send too, and the receiver may see it first (it then reports the close): the send's own
    # error is read here, else asyncio printed "Task exception was never retrieved" with a traceback on the way out.
    sender.add_done_callback(lambda t: t.cancelled() or t.exception())
    finished = False
    try:
        audio_s = x24.size / WIRE_RATE + silence_ms / 1000
        deadline = loop.time() + audio_s / Pacing.from_arg(realtime).speed + timeout_s
        done_at: float | None = None  # when every turn's response was done (then wait briefly for transcripts)
        while True:
            now = loop.time()
            if sender.done():
                sender.result()  # re-raise a failed send
                if tracker.all_done():
                    done_at = now if done_at is None else done_at
                    if tracker.transcripts_done() or now - done_at >= TRANSCRIPT_GRACE_S:
                        break
                else:
                    done_at = None  # a new turn began
            limit = deadline if done_at is None else min(deadline, done_at + TRANSCRIPT_GRACE_S)
            if now >= limit:
                if done_at is not None:
                    break  # replies complete; a transcript never came
                if not tracker.turns:  # noise, music, or speech too quiet for the server's VAD
                    raise TalkError(f"the server heard no speech: no turn began within {timeout_s:g} s after "
                                    "the audio was sent")
                raise TalkError(f"no complete reply within {timeout_s:g} s after the audio was sent")
            try:
                event = await _recv(client, limit - now, until=sender)
            except TimeoutError:
                continue
            if event is None:
                continue
            if event.is_error and event.error is not None and event.error.code in NOTICE_CODES:
                print(f"talk: server notice: {event.error}", file=sys.stderr)
                continue
            if event.is_error:
                raise TalkError(f"server error: {event.error}")
            if event.type == "response.done" and event.response_status == "failed":  # no error event comes
                raise TalkError(f"the reply failed: {event.response_error or 'no reason given'}")
            turn = tracker.feed(event, loop.time())
            if event.type == "response.output_audio.delta":
                reply += event.audio
            printer.event(event, turn)
        finished = True
    finally:
        printer.finish()
        if not sender.done():
            sender.cancel()
        result.reply_pcm16 = bytes(reply)
        # Also when talk ends early (Ctrl-C, a timeout, a lost connection): what was said so far is kept.
        if out is not None and (finished or reply):
            _write_reply(out, result.reply_pcm16)
    return result


def _write_reply(out: str | Path, pcm16: bytes) -> None:
    # WAV whatever the name: soundfile guesses the format from the extension, and has none to go by in
    # `--out reply` or `--out /dev/null`.
    try:
        sf.write(str(out), np.frombuffer(pcm16, "<i2"), WIRE_RATE, format="WAV", subtype="PCM_16")
    except (sf.LibsndfileError, OSError) as exc:  # a read-only folder, a full disk: one line, not a traceback
        reason = exc.error_string if isinstance(exc, sf.LibsndfileError) else exc.strerror or str(exc)
        raise TalkError(f"cannot write the reply to {out}: {reason}") from exc


async def _recv(client: RealtimeClient, timeout: float,
                until: asyncio.Task[None] | None = None) -> ServerEvent | None:
    """Next event within `timeout`; with `until`, returns None early when that task finishes first."""
    try:
        if until is None or until.done():
            return await client.recv(timeout=timeout)
        getter = asyncio.ensure_future(client.recv())
        try:
            done, _ = await asyncio.wait({getter, until}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also when this wait is cancelled (Ctrl-C): a getter left behind fails once the client closes, and
            # asyncio prints "Task exception was never retrieved" with a traceback on the way out.
            if not getter.done():
                getter.cancel()
        if getter in done:
            return getter.result()
        if not done:
            raise TimeoutError
        return None
    except RealtimeConnectionError as exc:
        raise TalkError(f"connection lost: {exc}") from exc


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:  # argparse's own words name this function: "invalid _positive_float value: 'abc'"
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _server_url(text: str) -> str:
    # Checked with the command line: websockets refused `127.0.0.1:8765` (no scheme) only once talk had read the wav,
    # as a failed connection (exit 1), in a message that showed the URL with ?model= added to it.
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ws:// or http:// URL, e.g. {DEFAULT_URL}")
    return text


def reply_path(out: Path) -> Path:
    """--out as the wav to write: a folder gets reply.wav in it (as the offline tools' folders get their files)."""
    return out / "reply.wav" if out.is_dir() else out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stepaudio-rt talk", description=__doc__.splitlines()[0])
    p.add_argument("wav", type=Path, help=f"speech to send: {READABLE}, any rate or channel count")
    p.add_argument("--url", type=_server_url, default=DEFAULT_URL,
                   help=f"the server: its Realtime WebSocket URL, or its http://HOST:PORT (default {DEFAULT_URL})")
    p.add_argument("--out", type=Path, default=Path("reply.wav"),
                   help="where to write the assistant's audio: every reply as far as it was sent, cut ones "
                   "included (24 kHz wav; a folder gets reply.wav; default ./reply.wav)")
    p.add_argument("--api-key", default=os.environ.get("STEPAUDIO_RT_API_KEY"),
                   help="sent as Authorization: Bearer KEY (env STEPAUDIO_RT_API_KEY)")
    p.add_argument("--model", default="stepaudio-rt",
                   help="the ?model= of the connect URL, as the Realtime API asks (default stepaudio-rt)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="speed", action="store_const", const=1.0, default=1.0,
                      help="send at real-time pace (default)")
    pace.add_argument("--fast", dest="speed", action="store_const", const=float("inf"),
                      help="send as fast as possible")
    pace.add_argument("--speed", dest="speed", type=_positive_float, help="send at this multiple of real time")
    p.add_argument("--no-vad", dest="vad", action="store_false",
                   help="turn server VAD off; commit and request the response explicitly")
    p.add_argument("--timeout", type=_positive_float, default=60.0,
                   help="seconds to wait for the reply after sending, and for a server still loading its models "
                   "(default 60)")
    p.add_argument("--instructions", help="the assistant's instructions for this session (default: the server's)")
    p.add_argument("--voice", help="the reply's voice, e.g. a Step-Audio speaker such as Tingting (default: the "
                   "server's; a Step-Audio server refuses an unknown name with its list, the embedded profile's "
                   "one voice takes any name)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not args.wav.is_file():
        what = "a folder, not an audio file" if args.wav.is_dir() else "no such file"
        print(f"talk: {args.wav}: {what}", file=sys.stderr)
        return 2
    args.out = reply_path(args.out)
    if not args.out.parent.is_dir():  # found out now, not after the whole conversation
        print(f"talk: cannot write {args.out}: no such folder: {args.out.parent}", file=sys.stderr)
        return 2
    try:
        extra = {"instructions": args.instructions} if args.instructions is not None else None
        result = asyncio.run(run_talk(args.wav, args.url, out=args.out, api_key=args.api_key, realtime=args.speed,
                                      vad=args.vad, timeout_s=args.timeout, model=args.model, session_extra=extra,
                                      voice=args.voice))
    except (TalkError, RealtimeConnectionError, WebSocketException, OSError) as exc:
        # A refused handshake's text ends with the server's reason ("server full: ...", "invalid or missing API key").
        print(f"talk: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"wrote {len(result.reply_pcm16) / 2 / WIRE_RATE:.2f} s of reply audio to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
