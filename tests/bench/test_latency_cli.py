"""bench.latency's options: a bad value is one line naming the option, before any server is started or any run is
made (it was a traceback, or a run of nothing, after minutes of server start-up)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from controller.server import ServerConfig
from tests.conftest import free_port
from tests.controller.scripted_pipeline import ScriptedPipeline, scripted_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args", [["--sessions", "a"], ["--sessions", "0"], ["--sessions", "1,,2"],
                                  ["--runs", "0"], ["--modes", "on,fast"]])
def test_a_bad_value_is_one_line_naming_the_option(args: list[str], tmp_path: Path) -> None:
    # A URL with nothing behind it: were the value taken, no server would start and the run would fail fast.
    url = f"ws://127.0.0.1:{free_port()}/v1/realtime"
    out = tmp_path / "latency.json"
    proc = subprocess.run([sys.executable, "-m", "bench.latency", "--url", url, "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"argument {args[0]}: {args[1]!r}" in proc.stderr.splitlines()[-1]
    assert not out.exists()


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_killed_with_sigterm_it_stops_the_servers_it_started(tmp_path: Path) -> None:
    port = free_port()
    bench = subprocess.Popen([sys.executable, "-m", "bench.latency", "--modes", "on", "--runs", "1", "--port",
                              str(port), "--out", str(tmp_path / "latency.json")], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and bench.poll() is None:  # the server up: the runs are under way
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        servers = _children(bench.pid)
        assert servers, "bench.latency started no server"
        bench.send_signal(signal.SIGTERM)  # as `kill` or `timeout` end it
        assert bench.wait(60) != 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_running(pid) for pid in servers):
            time.sleep(0.5)
        assert not any(_running(pid) for pid in servers), "the server outlived bench.latency"
    finally:
        if bench.poll() is None:
            bench.kill()
        for pid in servers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_json_names_the_tree_and_the_settings(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}/v1/realtime"  # nothing there: the run fails at once, the JSON is written
    out = tmp_path / "latency.json"
    subprocess.run([sys.executable, "-m", "bench.latency", "--url", url, "--runs", "1", "--timeout", "7.5", "--out",
                    str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    result = json.loads(out.read_text())
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    # a source tree without .git (a downloaded archive) names no commit, as bench.commit documents
    assert result["commit"] == head.strip() and bool(result["commit"]) == (ROOT / ".git").exists()
    assert result["timeout_s"] == 7.5 and result["serve_args"] == [] and result["date"].endswith("Z")
    assert result["warmup_runs"] == 1 and len(result["modes"]["server"]["runs"]) == 1  # the warm-up is not counted
    assert result["modes"]["server"]["summary"]["errors"] == 1
    # The clips it cut go beside the report (they went to bench/results/ whatever --out said)
    assert [Path(c["wav"]).parent for c in result["clips"]] == [tmp_path] * 4


def test_the_table_counts_the_sessions_that_failed(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}/v1/realtime"  # nothing there: both runs fail
    proc = subprocess.run([sys.executable, "-m", "bench.latency", "--url", url, "--runs", "2", "--out",
                           str(tmp_path / "latency.json")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    head, _, row = proc.stdout.splitlines()[:3]
    assert head.split()[:3] == ["mode", "runs", "failed"]
    assert row.split()[:3] == ["server", "0", "2"]


async def test_a_server_run_with_a_key_takes_the_key_from_the_environment_as_talk_does(tmp_path: Path) -> None:
    """Its runs failed 'needs an API key ...: give it with --api-key KEY or in env STEPAUDIO_RT_API_KEY' (talk's
    words) with that variable set: only talk read it."""
    out = tmp_path / "latency.json"
    async with scripted_server(ScriptedPipeline(), server=ServerConfig(port=0, api_keys=("right",))) as app:
        url = f"ws://127.0.0.1:{app.server.port}/v1/realtime"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.latency", "--url", url, "--runs", "1", "--warmup", "0", "--out", str(out),
            cwd=ROOT, env={**os.environ, "STEPAUDIO_RT_API_KEY": "right"}, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        assert await asyncio.wait_for(proc.wait(), 120) == 0
    runs = json.loads(out.read_text())["modes"]["server"]["runs"]
    assert [r["error"] for r in runs] == [None], runs
