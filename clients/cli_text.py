"""Text options from the command line (talk's --instructions, tts's --text) as the UTF-8 the server and models take."""

from __future__ import annotations

import argparse
import os

__all__ = ["command_line_text"]


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
