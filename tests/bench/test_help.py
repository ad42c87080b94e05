"""`python -m bench.X --help` as a user reads it: every option says what it is and its default (bench.latency
listed `--runs RUNS`, `--profile PROFILE`, `--out OUT` with no word of what they do or that --runs is 5)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.bench.cli import ROOT

# One option of each benchmark whose default a user needs before starting a run of minutes.
DEFAULTS = {"bench.latency": ("--runs", "(default: 5)"), "bench.engine": ("--steps", "(default: 32 tiny, 128 else)"),
            "bench.tts": ("--tokens", "(default: 500)"), "bench.kernels": ("--iters", "(default: 20)"),
            "bench.soak": ("--sessions", "(default: 300)"), "bench.context_drop": ("--turns", "(default: 40)")}


def option_help(help_text: str) -> dict[str, str]:
    """The options section of an argparse --help: each option's first name -> its description, lines joined."""
    described: dict[str, str] = {}
    name = ""
    for line in help_text.split("\noptions:\n", 1)[1].splitlines():
        if line.startswith("  -"):
            head, _, text = line.strip().partition("  ")
            name = head.split()[0].rstrip(",")
            described[name] = text.strip()
        elif name:
            described[name] = f"{described[name]} {line.strip()}".strip()
    return described


@pytest.mark.parametrize("module", sorted(DEFAULTS))
def test_every_option_of_a_benchmark_says_what_it_is_and_its_default(module: str) -> None:
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    described = option_help(proc.stdout)
    assert [name for name, text in described.items() if not text] == []
    option, default = DEFAULTS[module]
    assert default in described[option], described[option]
