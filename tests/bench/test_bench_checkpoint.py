"""The benchmarks' checkpoint: a write cut short leaves nothing a later run would take for a checkpoint."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench import checkpoint as B
from lm_engine.utils.loader import safetensors_files


def test_a_write_cut_short_leaves_no_folder_and_a_broken_one_is_written_again(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt"
    real = B.write_step1_checkpoint

    def cut_short(out: Path, *args: object) -> None:
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(B, "write_step1_checkpoint", cut_short)
    with pytest.raises(KeyboardInterrupt):
        B.bench_checkpoint(path, "tiny")
    assert not path.exists()
    monkeypatch.setattr(B, "write_step1_checkpoint", real)
    path.mkdir()
    (path / "config.json").write_text("{}")  # what the old benchmarks left after a cut-short write
    assert B.bench_checkpoint(path, "tiny") == path and safetensors_files(path)
    mtime = (path / "config.json").stat().st_mtime_ns
    assert B.bench_checkpoint(path, "tiny") == path and (path / "config.json").stat().st_mtime_ns == mtime  # reused
