"""The README's Usage examples run as written against a real server (only the port and the wav are swapped in)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_the_openai_sdk_script_prints_the_spoken_reply(embedded_server, beckett_wav, tmp_path: Path) -> None:
    script = readme_block("From Python, with the `openai` package's own client", "python")
    swaps = (("http://127.0.0.1:8765/v1", f"{embedded_server.http}/v1"), ('"speech.wav"', repr(str(beckett_wav))))
    for old, new in swaps:
        assert script.count(old) == 1, old
        script = script.replace(old, new)
    (tmp_path / "example.py").write_text(script)
    run = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    replies = [line for line in run.stdout.splitlines() if line.startswith("assistant: ")]
    assert replies and replies[-1].strip() != "assistant:", run.stdout
