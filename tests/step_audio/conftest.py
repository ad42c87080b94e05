"""A tiny Step-Audio model folder (written once per test session by the real CLI) and a server on it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess


def run_cli(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "controller.cli", *args], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"stepaudio-rt {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def fails_in_one_line(*args: str) -> str:
    """The stderr of `stepaudio-rt ARGS`, which must fail with exit code 2 and one line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "controller.cli", *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"stepaudio-rt {args[0]}: error: ")
    return proc.stderr


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("step-audio-tiny")
    run_cli("make-checkpoint", "--profile", "tiny", str(out))
    return out


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir: Path) -> Iterator[ServerProcess]:
    server = ServerProcess("--profile", "tiny", "--model-path", str(tiny_model_dir), "--threads", "2")
    yield server
    server.stop()


def without_chat_weights(model_dir: Path, out: Path) -> Path:
    """`model_dir` as links, minus the Chat LM's weights (what a host that runs the Chat LM elsewhere keeps)."""
    out.mkdir(parents=True, exist_ok=True)
    for sub in model_dir.iterdir():
        if sub.name != "Step-Audio-Chat":
            (out / sub.name).symlink_to(sub)
    chat = out / "Step-Audio-Chat"
    chat.mkdir(parents=True)
    for f in (model_dir / "Step-Audio-Chat").iterdir():
        if f.suffix != ".safetensors" and not f.name.endswith(".safetensors.index.json"):
            (chat / f.name).symlink_to(f)
    return out


def layout_without(model_dir: Path, out: Path, *dropped: str) -> Path:
    """`model_dir` rebuilt as links to its files, minus the `dropped` paths (files or folders, relative to it): what
    a user who downloaded part of the layout has."""
    for src in sorted(model_dir.rglob("*")):
        rel = src.relative_to(model_dir)
        if src.is_dir() or any(rel == Path(d) or Path(d) in rel.parents for d in dropped):
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).symlink_to(src)
    out.mkdir(parents=True, exist_ok=True)
    return out
