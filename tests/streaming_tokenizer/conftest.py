from __future__ import annotations

import pytest

from streaming_tokenizer import WhisperAsr


@pytest.fixture(scope="session")
def tiny_en() -> WhisperAsr:
    return WhisperAsr.load(language="en", cpu_threads=2)
