"""Text in and out of the command line: text options (talk's --instructions, tts's --text) as the UTF-8 the server
and models take, the address serve and sip-bridge listen on, and a stdout and stderr that print what the terminal
cannot show."""

from __future__ import annotations

import argparse
import codecs
import io
import os
import sys

__all__ = ["command_line_text", "listen_host", "printable_output"]


def command_line_text(value: str) -> str:
    """argparse type: the option's bytes read as UTF-8; text that is not UTF-8 is a usage error."""
    # In the C locale without UTF-8 mode (PYTHONUTF8=0 LANG=C) Python decodes argv as ASCII and keeps each other
    # byte as a lone surrogate, which no UTF-8 encoder takes: talk's --instructions reached the server as broken
    # JSON (invalid_json, exit 1). The terminal's bytes are UTF-8 almost always, so read them as that; os.fsencode
    # gives back the very bytes (in a UTF-8 locale it leaves proper text as it was).
    try:
        return os.fsencode(value).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        hint = "set a UTF-8 locale (e.g. LANG=C.UTF-8) or type it in UTF-8"
        raise argparse.ArgumentTypeError(f"not UTF-8 text: {hint}") from None


def listen_host(text: str) -> str:
    """argparse type of --host: an address or host name. A URL or HOST:PORT (as a browser shows the server) was looked
    up whole, with the port added: "cannot listen on localhost:8800:8765: Name or service not known". IPv6 has two
    colons or more."""
    if "/" in text or text.count(":") == 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address to listen on: an IP address or host name such "
                                         "as 127.0.0.1 or 0.0.0.0, without a scheme or a port (the port goes in "
                                         "--port)")
    return text


def printable_output() -> None:
    """On a terminal that is not UTF-8 (a latin-1 locale, PYTHONIOENCODING=ascii, Windows' code page in a pipe) a
    transcript's first character it cannot show ended talk in a UnicodeEncodeError traceback mid-conversation, and
    `chat` after minutes of model load, before its wav was written: such characters now print as '?'. In the C
    locale without UTF-8 mode the same happened to every non-ASCII character: there stdout and stderr write UTF-8,
    and a file name's bytes as they are."""
    codecs.register_error(_NAME_BYTES, _name_bytes)
    if isinstance(sys.stdout, io.TextIOWrapper) and sys.stdout.errors == "strict":
        sys.stdout.reconfigure(errors="replace")
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and codecs.lookup(stream.encoding).name == "ascii" \
                and stream.errors in ("surrogateescape", "backslashreplace"):
            # Python's ASCII for the C locale means "no locale set", not an ASCII terminal (PEP 538, 540): the text
            # options are read as UTF-8 there (command_line_text), so print so too. A path's non-ASCII bytes,
            # held as surrogate escapes, came out of stderr's backslashreplace as "mod\udcc3\udca8les" beside an
            # error line's "\u5531" (and stdout's strict UTF-8 refused them with a traceback).
            stream.reconfigure(encoding="utf-8", errors=_NAME_BYTES)
        elif isinstance(stream, io.TextIOWrapper) and stream.errors == "surrogateescape":
            stream.reconfigure(errors=_NAME_BYTES)  # the same for a file name's bytes; no traceback for the rest


_NAME_BYTES = "stepaudio-name-bytes"


def _name_bytes(exc: UnicodeError) -> tuple[bytes, int]:
    """Codec error handler: a surrogate escape (U+DC80..U+DCFF, a byte of a file name that the ASCII file system
    encoding could not decode) is written as that byte, which surrogateescape alone does; any other lone surrogate
    (from a client's JSON, say) as its backslash escape, where surrogateescape would raise."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = bytearray()
    for ch in exc.object[exc.start:exc.end]:
        code = ord(ch)
        out += bytes([code - 0xDC00]) if 0xDC80 <= code <= 0xDCFF else ch.encode("ascii", "backslashreplace")
    return bytes(out), exc.end
