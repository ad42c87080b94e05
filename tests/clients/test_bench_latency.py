"""Pure parts of bench/latency.py: metrics scraping, percentiles, speculation rate, the wav it uses."""

from __future__ import annotations

import pytest

from bench import latency

METRICS = """\
# HELP stepaudio_speculations_started_total Speculative replies started
# TYPE stepaudio_speculations_started_total counter
stepaudio_speculations_started_total 7.0
stepaudio_speculations_committed_total 5.0
stepaudio_speculations_rolled_back_total{reason="transcript"} 1.0
stepaudio_speculations_rolled_back_total{reason="context",x="a}b"} 1.0
stepaudio_speculations_started_created 1.7e9
stepaudio_first_audio_latency_seconds_bucket{le="+Inf"} 3 1700000000000
garbage line
"""


def test_parse_metrics_sums_label_sets() -> None:
    m = latency.parse_metrics(METRICS)
    assert m["stepaudio_speculations_started_total"] == 7.0
    assert m["stepaudio_speculations_rolled_back_total"] == 2.0
    assert m["stepaudio_first_audio_latency_seconds_bucket"] == 3.0
    assert "garbage" not in m and "#" not in m


def test_speculation_rate_over_a_window() -> None:
    before = {"stepaudio_speculations_started_total": 2.0, "stepaudio_speculations_committed_total": 1.0}
    after = latency.parse_metrics(METRICS)
    sp = latency.speculation(before, after)
    assert (sp["started"], sp["committed"], sp["rolled_back"]) == (5.0, 4.0, 2.0)
    assert sp["commit_rate"] == pytest.approx(0.8) and sp["available"] == 1.0
    assert latency.speculation({}, {})["commit_rate"] is None


def test_stats_percentiles_skip_missing() -> None:
    s = latency.stats([1.0, None, 2.0, 3.0, 4.0, float("nan")])
    assert s["n"] == 4 and s["p50"] == pytest.approx(2.5) and s["p95"] == pytest.approx(3.85)
    assert latency.stats([None])["p50"] is None


def test_table_renders_missing_values() -> None:
    empty = latency.stats([])
    mode = {"summary": {"first_audio_s": latency.stats([0.5]), "transcript_s": empty, "tts_rtf": empty,
                        "speculation": {"commit_rate": None}, "errors": 2}}
    table = latency.format_table({"on": mode})
    assert "0.500" in table and "n/a" in table
    assert table.splitlines()[-1].split()[:3] == ["on", "1", "2"]  # mode, runs measured, failed


def test_beckett_wav_is_found_without_importing_the_package() -> None:
    import sys
    try:
        path = latency.moonshine_wav()
    except FileNotFoundError:
        pytest.skip("moonshine-voice not installed")
    assert path.name == "beckett.wav" and path.is_file()
    assert "moonshine_voice" not in sys.modules


def test_reply_stages_takes_the_p50_of_each_milestone_of_completed_replies() -> None:
    log = "\n".join([
        "2026-11-26 01:36:03,087 INFO controller.session: response resp_a completed (speculative): start=+0ms "
        "input_ready=+20ms first_token=+100ms first_audio_sent=+400ms",
        "2026-11-26 01:36:04,087 INFO controller.session: response resp_b completed (direct): start=+0ms "
        "input_ready=+40ms first_token=+140ms first_audio_sent=+500ms",
        "2026-11-26 01:36:05,087 INFO controller.session: response resp_c completed (speculative): start=+0ms "
        "input_ready=+30ms first_token=+120ms first_audio_sent=+450ms",
        "2026-11-26 01:36:06,087 INFO controller.session: llama.cpp loaded x.gguf (threads=2)",
    ])
    stages = latency.reply_stages(log)
    assert stages == {"start": 0.0, "input_ready": 30.0, "first_token": 120.0, "first_audio_sent": 450.0}
    assert list(stages) == ["start", "input_ready", "first_token", "first_audio_sent"]  # in time order
    table = latency.format_stages({"on": stages})
    assert "first_token" in table and "450" in table.splitlines()[-1]
