"""`stepaudio-rt tts` given odd input (a tag TTS-3B does not know, clone prompts of every format a user may have):
what it says, and that it still speaks what it can."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from tests.step_audio.conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("text", ["(rap)Yo, check it.", "(Happy) Hello there.", "（开心）你好。"])
def test_a_tag_tts_3b_does_not_know_is_told_in_one_line_listing_the_known_ones(tiny_model_dir: Path, tmp_path: Path,
                                                                               text: str) -> None:
    """Upstream matches its tags exactly: "(rap)" takes neither RAP's prompt nor the Music decoder, and was taken
    without a word."""
    out = tmp_path / "x.wav"
    proc = run_cli("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text", text, "--out", str(out))
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    tag = text[:text.index(")" if text[0] == "(" else "）") + 1]
    assert len(warnings) == 1 and f"--text leads with {tag}, none of the tags TTS-3B" in warnings[0], proc.stderr
    assert "(RAP) (哼唱)" in warnings[0] and "(高兴1)" in warnings[0]
    assert sf.info(str(out)).duration > 0.3  # spoken all the same


def test_a_known_tag_is_taken_without_a_word(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc = run_cli("tts", "--model-path", str(tiny_model_dir), "--profile", "tiny", "--text", "（高兴1）Hello.",
                   "--out", str(tmp_path / "x.wav"))
    assert "warning" not in proc.stderr, proc.stderr
