"""model_files.cache.assembling: the lock that starts assembling one model file take in turn."""
from __future__ import annotations

import fcntl
import logging
import threading
import time
from pathlib import Path

import pytest

from model_files.cache import assembling


def test_a_start_that_waits_for_another_ones_assembly_says_so(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A second `make serve` on a fresh cache sat under 'loading the chat LM' without a word while the first one
    assembled the model (its progress bar shows only in the first one's terminal)."""
    target = tmp_path / "model.gguf"
    entered = threading.Event()

    def second_start() -> None:
        with assembling(target):
            entered.set()

    caplog.set_level(logging.INFO, logger="model_files.cache")
    with open(tmp_path / "model.gguf.lock", "a") as first_start:  # the first start holds the lock
        fcntl.flock(first_start, fcntl.LOCK_EX)
        waiter = threading.Thread(target=second_start)
        waiter.start()
        deadline = time.monotonic() + 60
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r.getMessage() for r in caplog.records] == [
            f"waiting for another start to finish assembling {target}"]
        assert not entered.is_set()
    waiter.join(60)  # closing the file released the lock
    assert entered.is_set()


def test_a_start_alone_assembles_without_a_word(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="model_files.cache")
    with assembling(tmp_path / "model.gguf"):
        pass
    assert caplog.records == []
