"""The README's Usage examples run as written against a real server (only the port and the wav are swapped in)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def readme_block(after: str, lang: str = "") -> str:
    """The first fenced ```lang block after the text `after` in the README."""
    match = re.search(re.escape(after) + r".*?```" + lang + r"\n(.*?)```", README, re.S)
    assert match is not None, f"README has no ```{lang} block after {after!r}"
    return match.group(1)


def test_the_talk_example_finds_the_bundled_recording() -> None:
    """`WAV=$(ls ...)` from the README, run in the repository as a user does, names Beckett's wav."""
    if not (REPO / ".venv").is_dir():
        pytest.skip("the README's command assumes the .venv that `make` creates in the repository")
    line = readme_block("comes with the `moonshine-voice` wheel").splitlines()[0]
    assert line.startswith("WAV=")
    found = subprocess.run(["bash", "-c", f"{line}; echo \"$WAV\""], cwd=REPO, capture_output=True, text=True)
    path = Path(REPO, found.stdout.strip())
    assert path.name == "beckett.wav" and path.is_file(), found


def _run_script(script: str, server_http: str, wav: Path, tmp_path: Path) -> list[str]:
    """The script with the server's URL swapped in, run as the README says (`python example.py WAV`): its lines."""
    for url in ("http://127.0.0.1:8765/v1", "ws://127.0.0.1:8765/v1/realtime"):
        if url in script:
            assert script.count(url) == 1, url
            script = script.replace(url, server_http + "/v1" if url.startswith("http") else
                                    server_http.replace("http://", "ws://") + "/v1/realtime")
    (tmp_path / "example.py").write_text(script)
    run = subprocess.run([sys.executable, "example.py", str(wav)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("after", ["From Python, with the `openai` package's own client",
                                   "Or with our client library, `clients.RealtimeClient`"])
def test_the_python_scripts_print_the_spoken_reply(after: str, embedded_server, beckett_wav, tmp_path: Path) -> None:
    """The openai SDK script and the RealtimeClient one."""
    replies = [line for line in _run_script(readme_block(after, "python"), embedded_server.http, beckett_wav, tmp_path)
               if line.startswith("assistant: ")]
    assert replies and replies[-1].strip() != "assistant:", replies


@pytest.mark.slow
def test_the_transcription_block_in_the_script_prints_each_phrase_and_ends(embedded_server, beckett_wav,
                                                                             tmp_path: Path) -> None:
    """The README's transcription block put in place of the first script's connect block, as it says."""
    script = readme_block("From Python, with the `openai` package's own client", "python")
    block = readme_block("In the script above, replace the", "python")
    start, end = script.index("    async with client.realtime.connect("), script.index("\nasyncio.run(")
    lines = _run_script(script[:start] + block + script[end:], embedded_server.http, beckett_wav, tmp_path)
    heard = " ".join(line.removeprefix("user: ") for line in lines).lower()
    assert all(line.startswith("user: ") for line in lines) and len(lines) >= 4, lines
    for word in ("tried", "failed", "matter", "better"):
        assert word in heard, lines


def test_the_engine_example_runs_as_written(tiny_ckpt, tmp_path: Path) -> None:
    """The README's lm_engine script on a tiny Step-1 folder (the folder swapped in): greedy tokens from generate
    and from the async stream agree, and the fork example runs through."""
    script = readme_block("### The engine from Python", "python")
    assert script.count('"DIR/Step-Audio-TTS-3B"') == 1
    (tmp_path / "example.py").write_text(script.replace('"DIR/Step-Audio-TTS-3B"', repr(str(tiny_ckpt("tts")))))
    run = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    generated = [int(t) for t in lines[0].strip("[]").split(", ")]
    assert 1 <= len(generated) <= 20 and [int(t) for t in lines[1:]] == generated


@pytest.mark.slow
def test_the_step_audio_tool_commands_run_as_written(beckett_wav, tmp_path: Path) -> None:
    """The README's make-checkpoint, tts and chat lines, run one after another in a fresh folder as a newcomer
    does (the folder swapped in; `$WAV` is the recording the Usage section named): each writes its wav. The
    server line runs until stopped and the full-random line writes 7 GB, so those two are left out."""
    if not (REPO / ".venv").is_dir():
        pytest.skip("the README's commands assume the .venv that `make` creates in the repository")
    block = readme_block("(`make-checkpoint` puts `speakers/` in `Step-Audio-TTS-3B/`):")
    lines = [line.split("  #")[0].strip() for line in block.splitlines()
             if " serve " not in line and "full-random" not in line]
    assert [line.split()[1] for line in lines] == ["make-checkpoint", "tts", "chat"], lines
    script = "\n".join(lines).replace("/tmp/sa-tiny", str(tmp_path / "sa-tiny"))
    script = script.replace(".venv/bin/", f"{REPO}/.venv/bin/")
    run = subprocess.run(["bash", "-ec", script], cwd=tmp_path, env={**os.environ, "WAV": str(beckett_wav)},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    for name in ("hello.wav", "reply.wav"):
        info = sf.info(str(tmp_path / name))
        assert info.samplerate == 22050 and info.frames > 0, (name, info)
