"""A turn longer than Whisper's 30 s window (push-to-talk, a long monologue, a 60 s input_audio item) keeps its words:
six times Beckett's 10 s recording, with 1.5 s pauses, was transcribed as fewer than three of them."""

from __future__ import annotations

import numpy as np
import pytest

from streaming_tokenizer import WhisperAsr

pytestmark = pytest.mark.slow
SR = 16_000


def test_a_60_s_turn_keeps_all_its_words(tiny_en: WhisperAsr, beckett: np.ndarray) -> None:
    once = np.concatenate([beckett, np.zeros(int(1.5 * SR), np.float32)])
    turn = np.tile(once, 6)[: 60 * SR]  # 5 whole repetitions and the start of a sixth
    text = tiny_en.transcribe(turn, "en").lower()
    assert text.count("better") >= 5, text
