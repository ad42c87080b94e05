"""bench.soak against the real server and sessions (scripted models): each way of leaving is driven, and its last
row shows the server back to no live session and no session task, as an operator reading the table expects."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from bench.soak import main, parse_gauges
from controller.server import ServerConfig
from tests.conftest import free_port
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


async def test_a_server_run_with_a_key_is_soaked_with_it_and_refused_without_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """bench.soak had no --api-key: against a server run with one it ended in websockets' InvalidStatus traceback."""
    monkeypatch.delenv("STEPAUDIO_RT_API_KEY", raising=False)
    async with scripted_server(ScriptedPipeline(), server=ServerConfig(port=0, api_keys=("right",))) as app:
        url = f"ws://127.0.0.1:{app.server.port}/v1/realtime"
        args = ["--url", url, "--sessions", "2", "--every", "2", "--out", str(tmp_path / "soak.json")]
        assert await asyncio.to_thread(main, args) == 1
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"bench.soak: the server at {url} needs an API key (HTTP 401: invalid or missing API key): give it "
            "with --api-key KEY or in env STEPAUDIO_RT_API_KEY")
        assert await asyncio.to_thread(main, [*args, "--api-key", "right"]) == 0
    assert json.loads((tmp_path / "soak.json").read_text())["rows"][-1]["failures"] == 0


def test_no_server_at_the_url_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It ended in urllib's URLError traceback, from the first /metrics row."""
    port = free_port()
    assert main(["--url", f"ws://127.0.0.1:{port}/v1/realtime", "--out", str(tmp_path / "soak.json")]) == 1
    assert capsys.readouterr().err == (
        f"bench.soak: cannot read http://127.0.0.1:{port}/metrics: [Errno 111] Connection refused (is `stepaudio-rt "
        "serve` running there? give its address with --url)\n")
