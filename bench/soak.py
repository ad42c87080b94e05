"""Soak: many sessions opened and closed in a row against a running server, and what the server holds after them.

    stepaudio-rt serve --port 8765 &
    python -m bench.soak --pid $! [--sessions 300] [--every 25]

Sessions cycle through the ways a client leaves: a clean close after a reply, a TCP drop mid-reply (no close frame),
a close at the reply's first audio delta, and a close while input audio streams in. Every --every sessions, and once
the server has settled after the last one, a row records the server process's RSS, open file descriptors and threads
(from /proc; with --pid, on this machine) and its /metrics gauges of live sessions, session tasks and, for the
Step-Audio profiles, each LM engine's free KV blocks and sequences. A leak shows as a column that keeps growing; after
the last session the gauges should be back to the first row's. Results: bench/results/soak.json + a table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from bench import HelpFormatter, commit, count, write_json
from bench.latency import moonshine_wav
from clients.audio import float_to_pcm16
from clients.connection import key_refusal
from clients.talk import load_wav_24k

RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
KINDS = ("clean", "drop_mid_reply", "close_at_first_audio", "close_during_input")
# /metrics gauge -> its column; an engine's gauges get the engine's name appended (free_kv_chat, seqs_tts)
GAUGES = {"stepaudio_sessions_live": "live", "stepaudio_session_tasks": "tasks",
          "stepaudio_lm_free_kv_blocks": "free_kv", "stepaudio_lm_sequences": "seqs"}
SETTLE_S = 30.0  # after the last session: how long the server gets to end its sessions' replies


def metrics_url(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}/metrics"


def parse_gauges(text: str) -> dict[str, float]:
    """The session and engine gauges of a /metrics page, by column name."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        metric, _, labels = name.partition("{")
        if metric in GAUGES:
            engine = labels.partition('engine="')[2].partition('"')[0]
            values[GAUGES[metric] + (f"_{engine}" if engine else "")] = float(value)
    return values


def process_row(pid: int | None) -> dict[str, float]:
    if pid is None:
        return {}
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1), "threads": int(status["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


async def _wait_for(ws: ClientConnection, *types: str, timeout: float = 300.0) -> None:
    async with asyncio.timeout(timeout):
        async for raw in ws:
            if json.loads(raw)["type"] in types:
                return


async def _ask(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello in three words."}]}}))
    await ws.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": 30}}))


class SoakError(Exception):
    """The soak cannot run at all (no server at the URL, a key it refuses): one line, not a traceback."""


async def one_session(url: str, kind: str, speech: bytes, api_key: str | None) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    async with connect(url, max_size=None, additional_headers=headers) as ws:
        await _wait_for(ws, "session.created")
        if kind == "close_during_input":
            for i in range(0, len(speech) // 2, 9600):  # the first half of the speech, 0.2 s an event
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(speech[i:i + 9600]).decode()}))
            return
        await _ask(ws)
        if kind == "clean":
            await _wait_for(ws, "response.done")
        elif kind == "drop_mid_reply":
            await _wait_for(ws, "response.output_audio_transcript.delta", "response.output_text.delta")
            ws.transport.abort()  # the peer vanishes: no close frame, no FIN handshake
        else:
            await _wait_for(ws, "response.output_audio.delta")


async def run_soak(args: argparse.Namespace) -> list[dict[str, object]]:
    speech = float_to_pcm16(load_wav_24k(moonshine_wav()))

    def row(done: int, started: float) -> dict[str, object]:
        try:
            with urllib.request.urlopen(metrics_url(args.url), timeout=30) as page:
                gauges = parse_gauges(page.read().decode())
        except OSError as exc:  # no server there (urllib's URLError is one): every row would fail as the first
            why = getattr(exc, "reason", exc)
            raise SoakError(f"cannot read {metrics_url(args.url)}: {why} (is `stepaudio-rt serve` running there? "
                            "give its address with --url)") from exc
        return {"sessions": done, "seconds": round(time.monotonic() - started), **process_row(args.pid), **gauges}

    started = time.monotonic()
    rows = [row(0, started)]
    failures = 0
    for i in range(args.sessions):
        try:
            await one_session(args.url, KINDS[i % len(KINDS)], speech, args.api_key)
        except InvalidStatus as exc:  # a key the server refuses would refuse every session
            refusal = key_refusal(args.url, args.api_key, exc)
            if refusal is None:
                raise
            raise SoakError(refusal) from exc
        except (OSError, TimeoutError) as exc:  # a refused or lost session is counted, the soak goes on
            failures += 1
            print(f"session {i + 1} ({KINDS[i % len(KINDS)]}) failed: {exc!r}", file=sys.stderr)
        if (i + 1) % args.every == 0:
            rows.append(row(i + 1, started))
            print(rows[-1], file=sys.stderr)
    deadline = time.monotonic() + SETTLE_S
    settled = row(args.sessions, started)
    while time.monotonic() < deadline and (settled.get("live") or settled.get("tasks")):
        await asyncio.sleep(1.0)
        settled = row(args.sessions, started)
    rows.append({**settled, "settled": True, "failures": failures})
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    columns = list(dict.fromkeys(key for r in rows for key in r if key not in ("settled", "failures")))
    lines = [" ".join(f"{c:>12}" for c in columns)]
    lines += [" ".join(f"{r.get(c, ''):>12}" for c in columns) for r in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0],
                                epilog="\n".join(__doc__.splitlines()[1:]), formatter_class=HelpFormatter)
    p.add_argument("--url", default="ws://127.0.0.1:8765/v1/realtime", help="the running server's Realtime URL")
    p.add_argument("--api-key", default=os.environ.get("STEPAUDIO_RT_API_KEY"),
                   help="Bearer key for a server run with --api-key (env STEPAUDIO_RT_API_KEY, as talk)")
    p.add_argument("--pid", type=int, help="the server's process id, for RSS, fds and threads from /proc")
    p.add_argument("--sessions", type=count, default=300, help="sessions to open and close, one after another")
    p.add_argument("--every", type=count, default=25, help="sessions between two rows of the table")
    p.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = asyncio.run(run_soak(args))
    except SoakError as exc:
        print(f"bench.soak: {exc}", file=sys.stderr)
        return 1
    write_json(args.out, {"commit": commit(), "url": args.url, "kinds": list(KINDS), "rows": rows})
    print(format_table(rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
