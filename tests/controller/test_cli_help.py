"""`stepaudio-rt` as a first try: with nothing after it, or `help`, as git and pip take it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.bench.test_help import option_help

ROOT_HELP_LINE = "A real-time voice agent server (Step-Audio) speaking the OpenAI Realtime API,"


def stepaudio_rt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller.cli", *args], capture_output=True, text=True, timeout=120)


def test_no_command_lists_the_commands_with_what_each_does() -> None:
    """It said only "error: the following arguments are required: command" under a usage line."""
    proc = stepaudio_rt()
    assert proc.returncode == 2
    assert "arguments are required" not in proc.stderr, proc.stderr
    assert ROOT_HELP_LINE in proc.stderr and "send a wav to a server" in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", [[], ["serve"], ["talk"], ["sip-bridge"], ["tts"]])
def test_help_is_the_help_of_the_command_it_names(command: list[str]) -> None:
    """`stepaudio-rt help` (and `help talk`) said "invalid choice: 'help'"."""
    proc = stepaudio_rt("help", *command)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == stepaudio_rt(*command, "--help").stdout
    assert proc.stdout.startswith(f"usage: stepaudio-rt {' '.join(command)}".rstrip()), proc.stdout


@pytest.mark.parametrize("command", ["serve", "talk", "sip-bridge", "make-checkpoint", "tts", "chat"])
def test_no_option_gives_its_default_twice(command: str) -> None:
    """serve --help said of --max-input-audio-s "(default 300: about 750 words, ...) (default: 300.0)"."""
    described = option_help(stepaudio_rt(command, "--help").stdout)
    assert [name for name, text in described.items() if len(re.findall(r"\(default\b", text)) > 1] == []


@pytest.mark.parametrize(("command", "other"), [("tts", "chat"), ("chat", "tts")])
def test_each_offline_tool_names_its_own_output_files(command: str, other: str) -> None:
    """One --out help served both: `tts --help` listed chat's output_e2e_*.wav and `chat --help` tts's names."""
    names = {"tts": ("output_tts.wav", "output_clone.wav"), "chat": ("output_e2e_tqta.wav", "output_e2e_aqta.wav")}
    out_help = option_help(stepaudio_rt(command, "--help").stdout)["--out"]
    assert all(name in out_help for name in names[command]), out_help
    assert not any(name in out_help for name in names[other]) and f"{other}:" not in out_help, out_help
