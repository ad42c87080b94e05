"""bench.soak against the real server and sessions (scripted models): each way of leaving is driven, and its last
row shows the server back to no live session and no session task, as an operator reading the table expects."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from bench.soak import main, parse_gauges
from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server


def test_gauges_are_read_by_column_with_each_engine_apart() -> None:
    page = ('# HELP stepaudio_sessions_live Sessions connected now\nstepaudio_sessions_live 2.0\n'
            'stepaudio_session_tasks 5.0\nstepaudio_sessions_total 9.0\n'
            'stepaudio_lm_free_kv_blocks{engine="tts"} 100.0\nstepaudio_lm_sequences{engine="chat"} 1.0\n')
    assert parse_gauges(page) == {"live": 2.0, "tasks": 5.0, "free_kv_tts": 100.0, "seqs_chat": 1.0}


async def test_a_soak_of_every_kind_ends_with_no_live_session_and_no_task(tmp_path: Path) -> None:
    pipeline = ScriptedPipeline()
    pipeline.word_seconds = 0.02  # a reply long enough to be cut mid-way
    pipeline.reply_words = ["word"] * 20
    out = tmp_path / "soak.json"
    async with scripted_server(pipeline) as app:
        url = f"ws://127.0.0.1:{app.server.port}/v1/realtime"
        args = ["--url", url, "--pid", str(os.getpid()), "--sessions", "8", "--every", "4", "--out", str(out)]
        assert await asyncio.to_thread(main, args) == 0
        assert app.sessions == {}
    rows = json.loads(out.read_text())["rows"]
    assert [r["sessions"] for r in rows] == [0, 4, 8, 8]
    assert {k: rows[-1][k] for k in ("live", "tasks", "settled", "failures")} == {
        "live": 0.0, "tasks": 0.0, "settled": True, "failures": 0}
    assert rows[-1]["fds"] > 0 and rows[-1]["threads"] > 0
