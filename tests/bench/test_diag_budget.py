"""bench.diag_speech_stream keeps to --seconds, which gpu_suite's diag step sizes its time limit by: trials are
processes of tens of seconds, so the loops stop starting them in time, and the warm-up trial counts too. Without a
GPU: the trials and the clock are stand-ins."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import bench.diag_speech_stream as D
import speech_decoder.checkpoint


def test_the_whole_run_warm_up_included_ends_within_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trials of 30 s against --seconds 100: the warm-up trial, then as many as end by 100 s (two), not a last one
    started at 120 s that ran to 150 s (past a step limit sized for --seconds)."""
    now = [0.0]
    started: list[float] = []

    def trial(variant: str, folder: str) -> tuple[str, str]:
        started.append(now[0])
        now[0] += 30.0
        return "ok", ""

    monkeypatch.setattr(D, "time", SimpleNamespace(monotonic=lambda: now[0]))
    monkeypatch.setattr(D, "_run_one", trial)
    monkeypatch.setattr(D.tempfile, "mkdtemp", lambda: str(tmp_path))
    monkeypatch.setattr(speech_decoder.checkpoint, "write_cosyvoice_folder", lambda path, profile: path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    out = tmp_path / "diag.json"
    monkeypatch.setattr(sys, "argv", ["diag", "--seconds", "100", "--workers", "1", "--variants", "base",
                                      "--out", str(out)])
    D.main()
    assert now[0] <= 100.0, started
    assert started == [0.0, 30.0, 60.0]  # the warm-up, then two measured trials
    assert json.loads(out.read_text())["counts"] == {"base": {"ok": 2}}
