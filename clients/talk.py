"""`stepaudio-rt talk FILE.wav`: speak a wav file to a server, print both transcripts live, save the spoken reply.

The wav (any rate, any channel count: downmixed) is streamed at real-time pace followed by 1.5 s of silence so
that server VAD ends the turn; with --no-vad the client commits and asks for a response itself. A server still
loading its models is waited for, up to the reply timeout, so talk can be started beside `make serve`. Exit status:
0 on success; 1 on a file that is not audio or holds only silence, no server at the URL, a refused handshake,
an error event, a failed reply, a lost connection, a timeout or an --out it cannot write; 2 on a missing wav, an
--out in a missing folder or named for another format (reply.mp3) or a --url that is not ws(s):// or http(s)://
(the message goes to stderr, checked before connecting where it can be).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from websockets.exceptions import WebSocketException

from clients.cli_text import command_line_text, printable_output
from clients.realtime_client import RealtimeConnectionError
from clients.talk_printer import format_turn
from clients.talk_session import DEFAULT_URL, TalkResult, run_talk, session_config
from clients.talk_wav import READABLE, TalkError, load_wav_24k

# The command line lives here; the names bench/, tests and controller/cli import from clients.talk are re-exported.
__all__ = ["DEFAULT_URL", "TalkError", "TalkResult", "format_turn", "load_wav_24k", "main", "reply_path", "run_talk",
           "session_config"]


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


def _unwritable(out: Path) -> str | None:
    """Why talk cannot write the reply to `out`, None when it can. A name without a suffix (`reply`, /dev/null)
    gets WAV; one with another (reply.mp3) would have got WAV under a name that players open as something else."""
    if not out.parent.is_dir():
        return f"no such folder: {out.parent}"
    if out.suffix and out.suffix.lower() != ".wav":
        return "talk writes a WAV file (24 kHz, 16-bit): name a .wav file or a folder"
    return None


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
                   help="seconds to wait for a turn after sending (a file in which the server heard no speech "
                   "ends 2 s after it has heard it all), for a reply's next event while it streams (a long reply is "
                   "waited for as long as it comes), and for a server still loading its models (default 60)")
    p.add_argument("--instructions", type=command_line_text,
                   help="the assistant's instructions for this session (default: the server's)")
    p.add_argument("--voice", type=command_line_text,
                   help="the reply's voice, e.g. a Step-Audio speaker such as Tingting (default: the server's; a "
                   "Step-Audio server refuses an unknown name with its list, the embedded profile's one voice takes "
                   "any name)")
    return p


def main(argv: list[str] | None = None) -> int:
    printable_output()  # here, not only in stepaudio-rt's main: `python -m clients.talk` comes straight in
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not args.wav.is_file():
        what = "a folder, not an audio file" if args.wav.is_dir() else "no such file"
        print(f"talk: {args.wav}: {what}", file=sys.stderr)
        return 2
    args.out = reply_path(args.out)
    if (why := _unwritable(args.out)) is not None:  # found out now, not after the whole conversation
        print(f"talk: cannot write {args.out}: {why}", file=sys.stderr)
        return 2
    try:
        extra = {"instructions": args.instructions} if args.instructions is not None else None
        asyncio.run(run_talk(args.wav, args.url, out=args.out, api_key=args.api_key, realtime=args.speed,
                             vad=args.vad, timeout_s=args.timeout, model=args.model, session_extra=extra,
                             voice=args.voice))
    except (TalkError, RealtimeConnectionError, WebSocketException, OSError) as exc:
        # A refused handshake's text ends with the server's reason ("server full: ...", "invalid or missing API key").
        print(f"talk: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
