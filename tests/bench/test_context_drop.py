"""bench.context_drop runs end to end on the real embedded LM and writes what its table shows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import context_drop

pytestmark = pytest.mark.slow


def test_a_small_run_writes_both_settings_and_every_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "context_drop.json"
    assert context_drop.main(["--turns", "4", "--dropped", "2", "--runs", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["turns"], result["dropped"], result["runs"]) == (4, 2, 1)
    assert sorted(result["first_token_s"]) == ["0", "256"]
    for row in result["first_token_s"].values():
        assert sorted(row) == sorted(context_drop.CASES) and all(s > 0 for s in row.values())
    assert "after a drop, the first token waits" in capsys.readouterr().out
