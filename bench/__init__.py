"""Benchmarks: each writes JSON under bench/results/ (RESULTS) and prints a table; never part of the test suite.
GPU figures come from bench/gpu_suite.sh and are kept in bench/gpu_runs/ and bench/RESULTS.md."""
import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from controller.cli import DefaultsHelpFormatter, torch_missing

RESULTS = Path(__file__).resolve().parent / "results"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultsHelpFormatter):
    """A benchmark's --help: its docstring as written (the example command lines keep their columns), then each
    option with its default, as `stepaudio-rt`'s subcommands show them."""


def exit_without_torch(module: str) -> None:
    """For a torch benchmark run as `python -m module`, before it imports torch: after `make serve` alone (no torch)
    its import was a ModuleNotFoundError traceback; it is now one line saying what to install, and exit status 2."""
    missing = torch_missing(module)
    if missing:
        print(f"python -m {module}: error: {missing}", file=sys.stderr)
        raise SystemExit(2)


def commit() -> str:
    """The tree measured, for the JSON ('' outside a git checkout)."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent).stdout.strip()


def write_json(path: Path, result: dict) -> None:
    """Writes a benchmark's JSON whole or not at all: the suites save after every row, and a run killed by its time
    limit in the middle of a write left a truncated file that bench.report could not read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(part, path)


def count_list(what: str, example: str) -> Callable[[str], list[int]]:
    """An argparse type for a comma-separated list of `what` (whole numbers of 1 or more): a bad one is one line
    naming the option, before anything is loaded or started (found after minutes of start-up, it was a traceback)."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(n) for n in text.split(",")]
        except ValueError:
            values = []
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: comma-separated {what} of 1 or more, e.g. {example}")
        return values
    return parse


def count(text: str) -> int:
    """An argparse type for one whole number of 1 or more (0 had quietly meant "the default")."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of 1 or more")
    return value
