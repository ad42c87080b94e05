"""The random TTS-3B-layout checkpoint bench.engine and bench.tts run on, written once per machine and reused.

Written into a sibling folder and renamed when complete: a write cut short (a timeout, Ctrl-C) never leaves a
folder that later runs would take for a checkpoint and fail on.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from lm_engine.checkpoint import write_step1_checkpoint
from lm_engine.utils.loader import CheckpointError, safetensors_files


def bench_checkpoint(path: Path | None, profile: str) -> Path:
    """`path` (default: the temp folder for `profile`), written now unless it already holds a checkpoint."""
    path = path or Path(tempfile.gettempdir()) / f"stepaudio-rt-bench-{profile}-tts"
    if (path / "config.json").is_file():
        try:
            safetensors_files(path)
            return path
        except CheckpointError:  # an older version's write cut short: written again below
            shutil.rmtree(path)
    part = path.with_name(path.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    print(f"writing a {profile} TTS-3B checkpoint to {path} (once)", flush=True)
    write_step1_checkpoint(part, profile, "tts")
    part.rename(path)
    return path
