"""bench.write_json, which every benchmark calls after each row: the file on disk is always a whole JSON document,
written beside it and then renamed over it (a run killed by its time limit mid-write left a truncated file)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import write_json


def test_saves_replace_the_file_whole(tmp_path: Path) -> None:
    out = tmp_path / "results" / "engine.json"  # the folder does not exist yet
    write_json(out, {"rows": [1]})
    write_json(out, {"rows": [1, 2]})
    assert json.loads(out.read_text()) == {"rows": [1, 2]}
    assert [p.name for p in out.parent.iterdir()] == ["engine.json"]
    with pytest.raises(TypeError):
        write_json(out, {"rows": [1, 2, object()]})
    assert json.loads(out.read_text()) == {"rows": [1, 2]}
