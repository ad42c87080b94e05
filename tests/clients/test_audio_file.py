"""clients.audio_file: a whole audio file read without libmpg123's notes on stderr, under any file name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from clients.audio_file import mpg123_notes_hidden, read_audio_file


def test_a_web_page_saved_as_mp3_raises_without_a_word_on_fd_2(tmp_path: Path, capfd) -> None:
    """libmpg123 wrote "Note: Illegal Audio-MPEG-Header ..." three times to fd 2 before the caller's own error."""
    page = tmp_path / "page.mp3"
    page.write_text("<html><body>404 Not Found</body></html>\n" * 20)
    with pytest.raises(sf.LibsndfileError):
        read_audio_file(page)
    assert capfd.readouterr().err == ""


def test_only_libmpg123_lines_are_dropped_and_fd_2_comes_back_after_an_error(capfd) -> None:
    """What anything else writes to fd 2 inside the block comes out after it, in order; an exception out of the
    block leaves fd 2 where it was."""
    with pytest.raises(RuntimeError), mpg123_notes_hidden():
        os.write(2, b"Note: Illegal Audio-MPEG-Header 0x00000000 at offset 716.\nour line\n")
        os.write(2, b"Note: Trying to resync...\n[src/libmpg123/parse.c:1234] error: x\nanother\n")
        raise RuntimeError("decoder failed")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "our line\nanother\nafter\n"


def test_a_non_ascii_file_name_is_read_and_written_in_the_c_locale(tmp_path: Path) -> None:
    """PYTHONUTF8=0 LC_ALL=C (some distros' default): Python's file system encoding is ASCII and 'é' in a name is
    held as surrogate escapes, which soundfile could not encode: talk's wav ended in a UnicodeEncodeError traceback."""
    sf.write(tmp_path / "é.wav", np.full(2400, 0.25, np.float32), 24000)
    script = ("import os, sys; from clients.talk_wav import load_wav_24k, write_reply; "
              "d = sys.argv[1]; name = os.path.join(d, os.listdir(d)[0]); "
              "print(len(load_wav_24k(name))); write_reply(name + '.reply.wav', b'\\x01\\x00' * 10)")
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C"}
    env.pop("PYTHONIOENCODING", None)
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).parents[2])
    assert (run.returncode, run.stdout, run.stderr) == (0, "2400\n", "")
    assert sf.info(tmp_path / "é.wav.reply.wav").frames == 10
