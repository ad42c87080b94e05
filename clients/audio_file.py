"""Reading a whole audio file with soundfile (talk's wav to send, the offline tools' --wav and --prompt-wav)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["READABLE", "mpg123_notes_hidden", "read_audio_file", "soundfile_name", "unreadable_reason"]

READABLE = "wav, flac, ogg and mp3"  # what soundfile's bundled libsndfile (1.1 and later) decodes

# libmpg123's own diagnostics: "Note: Illegal Audio-MPEG-Header 0x00000000 at offset 716.", "Note: Trying to
# resync...", "Warning: ...", and its debug macros' "[src/libmpg123/parse.c:...] error: ...".
_MPG123_LINE = re.compile(rb"Note: |Warning: |\[[^\]\n]*libmpg123")
_FD2 = threading.Lock()  # fd 2 belongs to the whole process: one redirect at a time


def read_audio_file(path: str | Path) -> tuple[np.ndarray, int]:
    """The whole file as [frames, channels] float32 and its rate; raises soundfile's errors (SoundFileError)."""
    with mpg123_notes_hidden():
        data, rate = sf.read(soundfile_name(path), dtype="float32", always_2d=True)
    return data, int(rate)


def soundfile_name(path: str | Path) -> str | bytes:
    """The file's name as soundfile should get it: its bytes on POSIX."""
    # soundfile encodes a str name with the file system encoding and no surrogateescape, so in the C locale without
    # UTF-8 mode (PYTHONUTF8=0 LANG=C) any non-ASCII name ended talk, tts and chat in a UnicodeEncodeError traceback.
    # os.fsencode gives back the very bytes the name came from. Windows opens a str name as wide characters.
    return str(path) if os.name == "nt" else os.fsencode(path)


def unreadable_reason(path: str | Path, exc: sf.LibsndfileError) -> str:
    """Why read_audio_file could not read the file, in libsndfile's words where they are true of it."""
    # libsndfile's mp3 decoder answers a file that holds no MPEG audio (a web page saved as .mp3) with "File does not
    # exist or is not a regular file": untrue of the file the user is looking at, so say what is wrong with it.
    if exc.error_string.startswith("File does not exist") and Path(path).is_file():
        return "not a valid audio stream"
    return str(exc.error_string)


@contextlib.contextmanager
def mpg123_notes_hidden() -> Iterator[None]:
    """Drops libmpg123's lines from what the process writes to fd 2 inside the block; keeps everything else."""
    # libsndfile hands any file named .mp3 to libmpg123, which says of a web page saved as .mp3 three "Note: ..."
    # lines with fprintf(stderr): C's stderr, out of reach of sys.stderr, and soundfile has no switch for it. The
    # caller says what is wrong in one line of its own. So fd 2 points at a temporary file for the block and is put
    # back on every path; whatever else reached it meanwhile (another thread's log line) is written out after it.
    with _FD2, tempfile.TemporaryFile() as caught:
        sys.stderr.flush()  # text written before the block goes out before it, not into the file
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = b"".join(line for line in caught.read().splitlines(keepends=True) if not _MPG123_LINE.match(line))
            if kept:
                os.write(2, kept)
