"""StreamingTranscriber caching and turn logic, with a small recording ASR (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from streaming_tokenizer import StreamingTranscriber


class RecordingAsr:
    """Returns the number of samples it was given, and keeps every call's audio and language."""

    def __init__(self) -> None:
        self.seen: list[tuple[np.ndarray, str | None]] = []

    def transcribe(self, pcm16k: np.ndarray, language: str | None) -> str:
        self.seen.append((pcm16k.copy(), language))
        return f"{pcm16k.size} samples"


def test_partial_transcribes_everything_so_far_and_caches() -> None:
    asr = RecordingAsr()
    st = StreamingTranscriber(asr, "en")
    assert st.partial() == "" and asr.seen == []  # nothing fed: nothing to run
    a, b = np.full(100, 0.1, np.float32), np.full(50, -0.2, np.float32)
    st.feed(a)
    assert st.partial() == "100 samples"
    st.feed(b)
    assert st.partial() == "150 samples"
    np.testing.assert_array_equal(asr.seen[-1][0], np.concatenate([a, b]))
    assert asr.seen[-1][1] == "en"
    assert st.finalize() == "150 samples"
    assert len(asr.seen) == 2  # finalize after an unchanged partial did no work
    assert st.partial() == "150 samples" and len(asr.seen) == 2


def test_finalize_runs_when_audio_arrived_after_the_partial() -> None:
    asr = RecordingAsr()
    st = StreamingTranscriber(asr, None)
    st.feed(np.zeros(10, np.float32))
    st.partial()
    st.feed(np.zeros(5, np.float32))
    st.feed(np.zeros(0, np.float32))
    assert st.text == "10 samples"  # text does not run anything
    assert st.finalize() == "15 samples"
    assert len(asr.seen) == 2 and st.samples == 15


def test_feed_copies_the_callers_buffer() -> None:
    asr = RecordingAsr()
    st = StreamingTranscriber(asr, "en")
    buf = np.ones(8, np.float32)
    st.feed(buf)
    buf[:] = 0.0
    st.finalize()
    np.testing.assert_array_equal(asr.seen[0][0], np.ones(8, np.float32))


def test_reset_starts_a_new_turn() -> None:
    asr = RecordingAsr()
    st = StreamingTranscriber(asr, "en")
    st.feed(np.zeros(30, np.float32))
    assert st.finalize() == "30 samples"
    st.reset()
    assert st.samples == 0 and st.text == "" and st.finalize() == ""
    st.feed(np.zeros(7, np.float32))
    assert st.finalize() == "7 samples"
    assert [x.size for x, _ in asr.seen] == [30, 7]


def test_rejects_stereo() -> None:
    with pytest.raises(ValueError):
        StreamingTranscriber(RecordingAsr(), "en").feed(np.zeros((2, 4), np.float32))


@pytest.mark.parametrize("text, loops", [
    ("What is the capital of France? What is the capital of France? What is", True),  # tiny.en, a 1.7 s question
    ("I would like to hear about the weather in Berlin tomorrow. I would like to hear about the weather", True),
    ("Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.", False),
    ("Hello, hello, can you hear me?", False),
    ("I want to go to the store and then I want to go to the park.", False),
    ("Tell me about the weather and tell me about the news.", False),  # a phrase said twice, not the opening
    ("", False),
])
def test_a_decode_that_starts_the_clip_over_is_recognised(text: str, loops: bool) -> None:
    from streaming_tokenizer.whisper_asr import _starts_over

    assert _starts_over(text) is loops
