"""Text in and out of the command line: text options (talk's --instructions, tts's --text) as the UTF-8 the server
and models take, and a stdout that prints what the terminal cannot show."""

from __future__ import annotations

import argparse
import codecs
import io
import os
import sys

__all__ = ["command_line_text", "printable_stdout"]


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


def printable_stdout() -> None:
    """On a terminal that is not UTF-8 (a latin-1 locale, PYTHONIOENCODING=ascii, Windows' code page in a pipe) a
    transcript's first character it cannot show ended talk in a UnicodeEncodeError traceback mid-conversation, and
    `chat` after minutes of model load, before its wav was written: such characters now print as '?'. In the C
    locale without UTF-8 mode the same happened to every non-ASCII character: there stdout writes UTF-8."""
    if not isinstance(sys.stdout, io.TextIOWrapper):
        return
    if sys.stdout.errors == "strict":
        sys.stdout.reconfigure(errors="replace")
    elif sys.stdout.errors == "surrogateescape" and codecs.lookup(sys.stdout.encoding).name == "ascii":
        # Python's ASCII for the C locale means "no locale set", not an ASCII terminal (PEP 538, 540): the text
        # options are read as UTF-8 there (command_line_text), so print so too; surrogateescape still writes a
        # file name's own bytes.
        sys.stdout.reconfigure(encoding="utf-8")
