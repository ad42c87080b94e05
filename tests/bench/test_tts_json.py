"""bench.tts on a CPU (tiny profile): a section that fails records why in the JSON and prints it in the table."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_section_that_fails_records_why_and_the_table_says_so(tmp_path: Path) -> None:
    """A 5000-token TTS prompt is refused by the TTS-3B engine (past its 4096-token context): the tts3b section
    records the engine's reason, the sections measured before it keep their figures, the table prints
    "failed: <why>" in the section's place, and the run exits 1. Before, the error ended the run with a traceback:
    no table, and the JSON had no word of the TTS-3B section."""
    out = tmp_path / "tts.json"
    run = subprocess.run([sys.executable, "-m", "bench.tts", "--profile", "tiny", "--device", "cpu", "--tokens", "75",
                          "--streams", "1,2", "--concurrency-s", "1", "--tts-prompt-len", "5000", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    saved = json.loads(out.read_text())
    assert saved["tts3b"] == {"error": "EngineError: 5000 tokens exceed the model's context of 4096 (max_model_len)"}
    assert saved["decoder"]["offline_rtf"] > 0 and saved["concurrency"] and "kernels" in saved["concurrency_profile"]
    assert ("TTS-3B                                      failed: EngineError: 5000 tokens exceed the model's context"
            in run.stdout), run.stdout[-3000:]
    assert "flow + HiFT offline RTF" in run.stdout
