"""After `make serve` alone (no torch: the embedded profile's install), the commands of the Step-Audio profiles say in
one line what to install, instead of a ModuleNotFoundError traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.without_torch import run_without_torch


@pytest.mark.parametrize("args", [
    ["serve", "--profile", "tiny", "--port", "0"],
    ["serve", "--profile", "step-audio", "--model-path", "."],
    ["make-checkpoint", "--profile", "tiny", "sa-tiny"],
    ["tts", "--profile", "tiny", "--model-path", "sa-tiny", "--text", "Hello there.", "--out", "hello.wav"],
    ["chat", "--model-path", "sa-tiny", "--text", "Hello.", "--out", "reply.wav"],
])
def test_step_audio_commands_without_torch_name_the_extra_in_one_line(tmp_path: Path, args: list[str]) -> None:
    """`chat` (and tts, make-checkpoint) without --profile said '--profile step-audio needs torch', naming a profile
    the user never typed: the tools need torch whatever the profile, and say so by their own name."""
    proc = run_without_torch(tmp_path, "controller.cli", *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "listening on" not in proc.stderr, proc.stderr
    command = args[0]
    profile = args[args.index("--profile") + 1] if "--profile" in args else None
    needs = f"--profile {profile}" if command == "serve" else f"{command} (Step-Audio's models)"
    assert proc.stderr.splitlines() == [
        f"stepaudio-rt {args[0]}: error: {needs} needs torch (the `engine` extra), which `make serve` "
        "does not install: run `make venv` to add it to .venv (or pip install -c constraints.txt '.[engine]')"]


def test_the_embedded_profile_needs_no_torch(tmp_path: Path) -> None:
    """The check is for the engine's profiles only: serve's default goes on to its own checks (here: a bad port)."""
    proc = run_without_torch(tmp_path, "controller.cli", "serve", "--port", "70000")
    assert proc.stderr.splitlines()[-1] == "stepaudio-rt serve: error: --port must be between 0 and 65535, got 70000"
