"""bench.engine's JSON on a CPU (tiny profile): what the engine's load measured is saved before the first row, and a
row that fails records why while the rows after it are still measured."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.report import report

ROOT = Path(__file__).resolve().parents[2]


def test_a_row_that_fails_records_why_and_the_rows_after_it_run(tmp_path: Path) -> None:
    """100,000-token prompts are refused by the engine (past its context): both decode rows fail (batch 1 first)
    and so does the decode profile, which uses the same prompts. Each row names the engine's reason, the prefill row
    after them (its own prompts) is measured, the table prints "failed: <why>" in their place, and the run exits 1.
    Before, the first failed row ended the run: no later row, and the table never printed. The JSON also holds the
    device, the GEMV timings and the graph sides of the load (saved before the first row: a run that fails there on
    a lent GPU still leaves them)."""
    out = tmp_path / "engine.json"
    run = subprocess.run([sys.executable, "-m", "bench.engine", "--profile", "tiny", "--prompt-len", "100000",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    saved = json.loads(out.read_text())
    assert saved["device"] == "cpu" and {"gemv_us", "decode_graph_sides", "cuda_graphs", "commit"} <= set(saved)
    decode, prefill = saved["rows"][:2], saved["rows"][2:]
    assert [r["metric"] for r in decode] == [f"decode tok/s batch {b} (100000-token prompts)" for b in (1, 32)]
    for r in decode:
        assert set(r) == {"metric", "error"} and "exceed the model's context" in r["error"], r
    assert [r["metric"] for r in prefill] == ["prefill tok/s (2 x 64 tokens)"]
    assert prefill[0]["engine"] > 0 and prefill[0]["baseline"] > 0 and "error" not in prefill[0]
    assert saved["decode_profile_b1"] == [] and "exceed the model's context" in saved["decode_profile_b1_error"]
    table = run.stdout[run.stdout.index("metric"):]
    assert table.count("failed: EngineError: ") == 3, table
    assert ("| 3 | decode tok/s, batch 1, TTS-3B | >= 300 | failed: EngineError: 100000 tokens exceed the model's "
            "context of 4096 (max_model_len) | - |") in report(tmp_path)  # bench.report reads the failed row
