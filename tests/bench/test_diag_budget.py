"""bench.diag_speech_stream keeps to --seconds, which gpu_suite's diag step sizes its time limit by: trials are
processes of tens of seconds, so the loops stop starting them in time, and the warm-up trial counts too. And a trial
process that dies is never counted 'ok'. Without a GPU: the trials and the clock are stand-ins."""
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


@pytest.mark.parametrize("prints", ["RESULT ok", ""])
def test_a_trial_that_dies_on_the_illegal_address_counts_as_a_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     prints: str) -> None:
    """A trial process that torch aborts on the sticky illegal address, after its RESULT line (the error met at
    exit) or before any, counted 'ok' or 'crashed': the JSON did not say that trial faulted. Both are 'fault' now,
    with the exit status and the error in the detail. The stand-in trial is a real process that dies so."""
    trial = tmp_path / "trial"
    trial.write_text(f"#!/bin/sh\n[ -z '{prints}' ] || echo '{prints}'\n"
                     "echo 'RuntimeError: CUDA error: an illegal memory access was encountered' >&2\nkill -ABRT $$\n")
    trial.chmod(0o755)
    monkeypatch.setattr(D.sys, "executable", str(trial))
    outcome, detail = D._run_one("base", str(tmp_path))
    assert outcome == "fault"
    assert "exit status -6" in detail and "illegal memory access" in detail, detail


def test_a_trial_that_dies_otherwise_counts_as_crashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trial = tmp_path / "trial"
    trial.write_text("#!/bin/sh\necho 'RESULT ok'\necho 'Segmentation fault' >&2\nexit 139\n")
    trial.chmod(0o755)
    monkeypatch.setattr(D.sys, "executable", str(trial))
    assert D._run_one("base", str(tmp_path)) == ("crashed", "RESULT ok then exit status 139: Segmentation fault\n")
