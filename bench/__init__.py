"""Benchmarks: each writes JSON under bench/results/ (RESULTS) and prints a table; never part of the test suite.
GPU figures come from bench/gpu_suite.sh and are kept in bench/gpu_runs/ and bench/RESULTS.md."""
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
