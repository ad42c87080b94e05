"""A turn longer than Whisper's 30 s window (push-to-talk, a long monologue, a 60 s input_audio item) keeps its words:
six times Beckett's 10 s recording, with 1.5 s pauses, was transcribed as fewer than three of them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streaming_tokenizer import WhisperAsr
from tests.conftest import missing_peer

pytestmark = pytest.mark.slow
SR = 16_000


def test_a_60_s_turn_keeps_all_its_words(tiny_en: WhisperAsr, beckett: np.ndarray) -> None:
    once = np.concatenate([beckett, np.zeros(int(1.5 * SR), np.float32)])
    turn = np.tile(once, 6)[: 60 * SR]  # 5 whole repetitions and the start of a sixth
    text = tiny_en.transcribe(turn, "en").lower()
    assert text.count("better") >= 5, text


def test_an_18_s_turn_spoken_without_pauses_is_not_transcribed_as_a_loop(tiny_en: WhisperAsr, beckett_wav: Path,
                                                                          tmp_path: Path) -> None:
    """Beckett's recording four times over, its pauses cut to 0.15 s (sox's silence effect): the user said 48 words
    and the transcript was 150, "bail again" over and over to Whisper's length cap, which the chat LM then answered."""
    if shutil.which("sox") is None:
        missing_peer("needs sox (apt-get install -y sox)")
    once = tmp_path / "once.wav"
    subprocess.run(["sox", str(beckett_wav), str(once), "silence", "-l", "1", "0.05", "1%", "-1", "0.15", "1%"],
                   check=True)
    audio, rate = sf.read(once, dtype="float32")
    assert rate == SR
    text = tiny_en.transcribe(np.tile(audio, 4), "en").lower()
    assert len(text.split()) <= 60 and text.count("better") >= 3, text
