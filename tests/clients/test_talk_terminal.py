"""`stepaudio-rt talk` printing transcripts on a terminal that is not UTF-8 (a latin-1 locale, Windows' code page when
piped, PYTHONIOENCODING=ascii)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server, speech
from tests.e2e.helpers import silence


@pytest.mark.parametrize("entry", [("controller.cli", "talk"), ("clients.talk",)], ids=["stepaudio-rt", "module"])
async def test_a_transcript_the_terminal_cannot_show_prints_as_question_marks(tmp_path: Path,
                                                                              entry: tuple[str, ...]) -> None:
    """The first character an ASCII stdout could not encode ended talk in a UnicodeEncodeError traceback, mid-turn,
    with no reply written; the conversation now runs to its end, each such character shown as '?'. The same from
    `python -m clients.talk`, which skips stepaudio-rt's main (it kept the traceback)."""
    wav, out = tmp_path / "turn.wav", tmp_path / "reply.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)
    pipeline = ScriptedPipeline()
    pipeline.transcript = "¿qué hora es?"
    pipeline.reply_words = ["现在是", "中午。"]
    async with scripted_server(pipeline) as server:
        talk = await asyncio.create_subprocess_exec(
            sys.executable, "-m", *entry, str(wav), "--url",
            f"ws://127.0.0.1:{server.server.port}/v1/realtime", "--out", str(out), "--fast",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONIOENCODING": "ascii"})
        stdout, stderr = await asyncio.wait_for(talk.communicate(), 60)
    assert talk.returncode == 0, stderr.decode()
    lines = stdout.decode("ascii").splitlines()
    assert lines[:2] == ["user> ?qu? hora es?", "assistant> ??? ???"], lines
    assert sf.info(str(out)).duration > 0


async def test_in_the_c_locale_a_transcript_prints_as_utf8(tmp_path: Path) -> None:
    """PYTHONUTF8=0 LC_ALL=C (Docker, ssh, systemd): stdout is ASCII with surrogateescape (so that file names print
    as their bytes), which no CJK or accented character passes: talk ended in a UnicodeEncodeError traceback at the
    first one, and `chat` after the models' load, before its wav was written. The text goes out as the UTF-8 its
    options are read in (clients.cli_text.command_line_text), and a file name's bytes as they were."""
    wav, out = tmp_path / "turn.wav", tmp_path / "réponse.wav"
    sf.write(str(wav), np.concatenate([silence(0.3), speech(0.8), silence(1.2)]), 24000)
    pipeline = ScriptedPipeline()
    pipeline.transcript = "¿qué hora es?"
    pipeline.reply_words = ["现在是", "中午。"]
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C"}
    env.pop("PYTHONIOENCODING", None)
    async with scripted_server(pipeline) as server:
        talk = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controller.cli", "talk", str(wav), "--url",
            f"ws://127.0.0.1:{server.server.port}/v1/realtime", "--out", str(out), "--fast",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        stdout, stderr = await asyncio.wait_for(talk.communicate(), 60)
    assert talk.returncode == 0, stderr.decode()
    assert stdout.decode("utf-8").splitlines()[:2] == ["user> ¿qué hora es?", "assistant> 现在是 中午。"]
    assert sf.info(str(out)).duration > 0
