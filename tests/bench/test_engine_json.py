"""bench.engine's JSON on a CPU (tiny profile): what the engine's load measured is saved before the first row."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_first_row_that_fails_still_leaves_the_loads_figures(tmp_path: Path) -> None:
    """A 100,000-token prompt is refused by the engine (past its context) in the first row: the run fails, and the
    JSON holds the device, the GEMV timings and the graph sides of the load, with no row. Before, the first write
    came with the first row, so a run that failed there (on a lent GPU: a step error) left no JSON at all."""
    out = tmp_path / "engine.json"
    run = subprocess.run([sys.executable, "-m", "bench.engine", "--profile", "tiny", "--prompt-len", "100000",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and "exceed the model's context" in run.stderr, run.stderr[-2000:]
    saved = json.loads(out.read_text())
    assert saved["rows"] == [] and saved["device"] == "cpu"
    assert {"gemv_us", "decode_graph_sides", "cuda_graphs", "commit"} <= set(saved)
