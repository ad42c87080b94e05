"""GET /metrics as Prometheus (and an operator reading it) sees it: the README's metrics, each of its type."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow


def families(server) -> dict[str, object]:
    with urllib.request.urlopen(f"{server.http}/metrics", timeout=30) as r:
        return {f.name: f for f in text_string_to_metric_families(r.read().decode())}


def test_the_metrics_are_counts_and_levels_with_no_timestamp_series_that_read_as_counts(embedded_server) -> None:
    """prometheus_client's `_created` series (a Unix time, 1.79e+09) sat beside every counter:
    `stepaudio_sessions_created` and `stepaudio_responses_created{status="completed"}` read as counts of sessions and
    responses created, next to the real counts in `stepaudio_sessions_total` and `stepaudio_responses_total`."""
    found = families(embedded_server)
    samples = [s.name for f in found.values() for s in f.samples]
    assert not [name for name in samples if name.endswith("_created")], samples
    expected = {"stepaudio_sessions_live": "gauge", "stepaudio_sessions": "counter",
                "stepaudio_sessions_refused": "counter", "stepaudio_turns": "counter",
                "stepaudio_speculations_started": "counter", "stepaudio_speculations_committed": "counter",
                "stepaudio_speculations_rolled_back": "counter", "stepaudio_session_tasks": "gauge",
                "stepaudio_buffered_audio_seconds": "gauge", "stepaudio_first_audio_latency_seconds": "histogram",
                "stepaudio_transcript_latency_seconds": "histogram"}
    assert {name: found[name].type for name in expected if name in found} == expected
