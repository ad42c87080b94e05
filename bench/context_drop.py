"""The embedded LM when a long session's oldest turns are dropped: how long the reply waits for its first token.

    python -m bench.context_drop [--turns 40] [--dropped 6] [--runs 3]

The context manager keeps each prompt within its budget by dropping the oldest turns, so the turns kept move forward
in the prompt. llama.cpp reuses a cached prompt's common prefix; with `cache_reuse` it also moves the cache of runs
of at least that many tokens found further on (LlamaCppConfig.cache_reuse). For each setting, side by side in one
run: the first token's wait for the whole conversation (nothing cached), for the next turn appended to it (prefix
cached), and for the next turn after the oldest `--dropped` turns were dropped. Medians of --runs, the settings
measured in turns; each run's conversation is new to the cache. Results: bench/results/context_drop.json + a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import threading
import time
from pathlib import Path

from bench import RESULTS, HelpFormatter, commit, count, write_json
from lm_engine import ChatRequest, embedded_gguf_path
from lm_engine.backends.llamacpp import LlamaCppBackend, LlamaCppConfig

SYSTEM = {"role": "system", "content": "You are a helpful voice assistant. Answer briefly."}
CASES = ("whole", "appended", "after_drop")
DEFAULT_REUSE = next(f.default for f in dataclasses.fields(LlamaCppConfig) if f.name == "cache_reuse")


def conversation(turns: int, run: int) -> list[dict[str, str]]:
    """`turns` user/assistant pairs of ~60 tokens; `run` makes their words new to each backend's cache."""
    messages = []
    for i in range(turns):
        messages += [{"role": "user", "content": f"Question {run}.{i}: what is a good name for pet {i}, and why?"},
                     {"role": "assistant",
                      "content": f"For pet {i}, I would pick Biscuit {run}{i}: short, friendly and "
                                 "easy to call out in a park, which matters for a small dog."}]
    return messages


def first_token_s(backend: LlamaCppBackend, messages: list[dict[str, str]]) -> float:
    start = time.perf_counter()
    for _ in backend.stream(ChatRequest(messages=messages, temperature=0, max_tokens=1), threading.Event()):
        break
    return time.perf_counter() - start


def run_once(backend: LlamaCppBackend, turns: list[dict[str, str]], dropped: int) -> dict[str, float]:
    ask = [{"role": "user", "content": "Which name did you like best?"}]
    whole = first_token_s(backend, [SYSTEM, *turns, *ask])
    turns = [*turns, *ask, {"role": "assistant", "content": "Biscuit."}]
    ask = [{"role": "user", "content": "And the second best?"}]
    return {"whole": whole, "appended": first_token_s(backend, [SYSTEM, *turns, *ask]),
            "after_drop": first_token_s(backend, [SYSTEM, *turns[2 * dropped:], *ask])}


def measure(settings: tuple[int, ...], args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """Both settings loaded at once and measured in turns, so that a machine's changing load falls on both."""
    backends = {reuse: LlamaCppBackend.from_config(LlamaCppConfig(gguf_path=embedded_gguf_path(), cache_reuse=reuse))
                for reuse in settings}
    times: dict[int, dict[str, list[float]]] = {reuse: {case: [] for case in CASES} for reuse in settings}
    try:
        for run in range(args.runs):
            for reuse, backend in backends.items():
                for case, value in run_once(backend, conversation(args.turns, run), args.dropped).items():
                    times[reuse][case].append(value)
    finally:
        for backend in backends.values():
            backend.close()
    return {reuse: {case: statistics.median(v) for case, v in row.items()} for reuse, row in times.items()}


def format_table(rows: dict[int, dict[str, float]]) -> str:
    lines = [f"{'cache_reuse':>11}  " + "  ".join(f"{case + ' (s)':>15}" for case in CASES)]
    for reuse, row in rows.items():
        lines.append(f"{reuse:>11}  " + "  ".join(f"{row[case]:>15.2f}" for case in CASES))
    off, on = rows[0]["after_drop"], rows[max(rows)]["after_drop"]
    lines.append(f"after a drop, the first token waits {off / on:.0f}x less with cache_reuse {max(rows)}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.context_drop", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--turns", type=count, default=40, help="user/assistant pairs in the conversation")
    parser.add_argument("--dropped", type=count, default=6, help="oldest pairs dropped before the last turn")
    parser.add_argument("--runs", type=count, default=3, help="conversations measured per setting (medians)")
    parser.add_argument("--cache-reuse", type=count, default=DEFAULT_REUSE,
                        help="the setting compared with 0 (off)")
    parser.add_argument("--out", type=Path, default=RESULTS / "context_drop.json", help="the JSON written")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = measure((0, args.cache_reuse), args)
    write_json(args.out, {"commit": commit(), "turns": args.turns, "dropped": args.dropped, "runs": args.runs,
                          "first_token_s": {str(reuse): row for reuse, row in rows.items()}})
    print(format_table(rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
