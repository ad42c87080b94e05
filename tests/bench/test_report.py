"""bench.report on the committed JSON of a real GPU run (session 2's H200 run2): every figure lands in its row with
the verdict the arithmetic gives, and a missing bench shows as missing, not as met."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.report import report

RUN2 = Path(__file__).resolve().parents[2] / "bench" / "gpu_runs" / "2026-11-26-h200-run2"


def test_run2_figures_and_verdicts(tmp_path: Path) -> None:
    for name in ("engine", "kernels", "tts"):
        shutil.copy(RUN2 / f"{name}.json", tmp_path)
    text = report(tmp_path)
    assert "card: NVIDIA H200" in text
    for row in ("| 3 | decode tok/s, batch 1, TTS-3B | >= 300 | 323.9 | yes (not an H100) |",
                "| 3 | decode speed-up over the upstream-style baseline, batch 1 | >= 30x | 5.5 | no (not an H100) |",
                "| 4 | prefill chat-tp8 d128, S=16384: TFLOP/s | >= 450 | 291 | no (not an H100) |",
                "| 4 | prefill chat-tp8 d128, S=16384: speed vs cuDNN SDPA without bias | >= 0.8x | 0.47 | no",
                "| 4 | paged decode chat d128, batch 32 x 16k: TB/s | >= 2.7 | 4.27 | yes",
                "| 4 | paged decode tts3b d64, batch 1 x 16k: TB/s | >= 1.5 | 1.27 | no",
                "| 4 | HiFT 1 s, batch 1: eager / fused_cuda_graph | >= 2x | 4.35 | yes",
                "| 5 | first reply text -> first audio chunk, ms (cold TTS prompt) | <= 150 | 333 | no",
                "| 5 | concurrent streams that stay real-time | >= 64 | 4 | no"):
        assert row in text, row


def test_a_missing_bench_is_missing_not_met(tmp_path: Path) -> None:
    shutil.copy(RUN2 / "engine.json", tmp_path)
    text = report(tmp_path)
    assert "| 5 | first reply text -> first audio chunk, ms (cold TTS prompt) | <= 150 | missing | - |" in text
    assert "| 4 | paged decode chat d128, batch 32 x 16k: TB/s | >= 2.7 | missing | - |" in text


def test_the_prefix_cached_first_audio_gets_its_own_row(tmp_path: Path) -> None:
    (tmp_path / "tts.json").write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "commit": "abc1234", "tts3b": {
        "first_text_to_first_audio_ms": 180.0, "first_text_to_first_audio_prefix_cached_ms": 140.0,
        "first_audio_served_ms": 151.0, "first_audio_served_one_stream_ms": 210.0}}))
    text = report(tmp_path)
    assert "| 5 | first reply text -> first audio chunk, ms (cold TTS prompt) | <= 150 | 180 | no |" in text
    assert "| 5 | the same, speaker prompt in the prefix cache | <= 150 | 140 | yes |" in text
    assert "| 5 | the same, as served (the LM decoding on meanwhile) | <= 150 | 151 | no |" in text
    assert "- first audio as served: 151 ms with the speech path on a high-priority stream of its own, 210 ms" in text
    (tmp_path / "tts.json").write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "commit": "abc1234", "tts3b": {
        "first_text_to_first_audio_ms": 180.0, "first_audio_served_ms": 148.0,
        "first_audio_served_no_hold_ms": 177.0}}))
    text = report(tmp_path)
    assert "| 5 | the same, as served (the LM held for the first window) | <= 150 | 148 | yes |" in text
    assert ("- first audio as served: 148 ms with the TTS LM held for the first window, 177 ms with it decoding "
            "on") in text


def test_tuned_tiles_pdl_and_the_decode_profile_follow_the_table(tmp_path: Path) -> None:
    (tmp_path / "kernels.json").write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "prefill": [
        {"case": "tts3b d64", "S": 16384, "flops": 1.0, "ms": {"ours_sqrt_alibi": 6.7, "ours_sqrt_alibi_tma": 6.2},
         "ours_tuned_config": {"ours_sqrt_alibi": "BLOCK_M: 128, BLOCK_N: 64"}}], "flow": [
        {"case": "flow_estimator_T516", "ms": {"eager": 30.0, "fused": 12.0, "eager_cuda_graph": 6.5,
                                               "fused_cuda_graph": 4.25},
         "op_ms_cuda_graph": {"linear_gelu": 0.0042, "cublas_then_gelu": 0.0061}}]}))
    (tmp_path / "engine.json").write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "rows": [
        {"metric": "decode tok/s batch 1 (512-token prompts)", "engine": 301.25, "baseline": 55.0},
        {"metric": "decode tok/s batch 1, PDL off", "engine": 280.5, "baseline": 55.0}],
                                                      "decode_profile_b1": [
        {"kernel": "nvjet_gemv", "us_per_step": 2100.5, "calls_per_step": 128.0, "share": 0.61}], "gemv_us": [
        {"rows": 1, "N": 3072, "K": 8192, "bias": False, "swiglu": True, "triton": 19.04, "cublas": 22.5},
        {"rows": 1, "N": 16384, "K": 3072, "bias": False, "fused": "add_rms_norm+swiglu", "triton": 9.5,
         "cublas": 11.25},
        {"rows": 8, "N": 3072, "K": 8192, "bias": False, "swiglu": True, "triton": 30.0, "cublas": 25.0}],
        "decode_graph_sides": [{"batch": 1, "kept": "triton",
                                "ms": {"as timed": 3.66, "triton": 3.5, "library": 3.7}}]}))
    text = report(tmp_path)
    assert ("- decode graph, batch 1: kept GEMVs triton; ms a replay: as timed 3.660, triton 3.500, "
            "library 3.700") in text
    assert "- batch-1 GEMV 3072 x 8192 swiglu: Triton 19.0 us, cuBLAS 22.5 us" in text
    assert "- batch-1 GEMV 16384 x 3072 add_rms_norm+swiglu: Triton 9.5 us, cuBLAS 11.2 us" in text
    assert "30.0 us" not in text  # batch 1 only
    assert "- prefill tts3b d64 S=16384, ours_sqrt_alibi: tuned tile BLOCK_M: 128, BLOCK_N: 64" in text
    assert "- prefill tts3b d64 S=16384: K/V tiles by TMA 6.200 ms, by pointers 6.700 ms (1.08x;" in text
    assert "- batch-1 decode step: 2100.5 us (61%, 128 calls) nvjet_gemv" in text
    assert ("- flow estimator call, first window, CUDA graph: fused 4.25 ms, torch references 6.50 ms; "
            "linear_gelu 4.2 us, cublas_then_gelu 6.1 us") in text
    assert "- batch-1 decode: 301.2 tok/s with programmatic dependent launch, 280.5 without" in text
    assert "| 3 | decode tok/s, batch 1, TTS-3B | >= 300 | 301.2 | yes |" in text  # the PDL-off row is no verdict


def test_cpu_plumbing_runs_meet_no_target(tmp_path: Path) -> None:
    """bench.engine/bench.tts --profile tiny and bench.kernels --smoke, as the README runs them on a CPU: tiny random
    models and shapes, whose figures say nothing of TTS-3B on an H100 (a tiny model's 488 tok/s read "yes")."""
    (tmp_path / "engine.json").write_text(json.dumps({"profile": "tiny", "device": "cpu", "commit": "abc1234", "rows": [
        {"metric": "decode tok/s batch 1 (32-token prompts)", "engine": 488.3, "baseline": 848.7}]}))
    (tmp_path / "tts.json").write_text(json.dumps({"profile": "tiny", "device": "cpu", "commit": "abc1234", "tts3b": {
        "first_text_to_first_audio_ms": 124.0}, "max_realtime_streams_alone": 8, "max_realtime_streams_batched": 8}))
    (tmp_path / "kernels.json").write_text(json.dumps({"device": "cpu", "smoke": True, "copy_tb_per_s": 0.001,
                                                       "decode": [{"case": "chat d128", "batch": 1, "ctx": 512,
                                                                   "tb_per_s": 0.0001}]}))
    text = report(tmp_path)
    assert "| 3 | decode tok/s, batch 1, TTS-3B | >= 300 | 488.3 | - (--profile tiny: not the target's size) |" in text
    assert ("| 5 | first reply text -> first audio chunk, ms (cold TTS prompt) | <= 150 | 124 | - (--profile tiny: "
            "not the target's size) |") in text
    assert ("| 4 | paged decode chat d128, batch 1 x 512: TB/s | >= 1.5 | 0.00 | - (bench.kernels --smoke: not the "
            "target's size) |") in text
    assert not [line for line in text.splitlines() if line.endswith(("| yes |", "| no |", "H100) |"))]


def test_one_commit_is_named_once(tmp_path: Path) -> None:
    run5 = RUN2.parent / "2026-11-27-h100-run5"  # kernels.json has the full hash, the others the short one
    for name in ("engine", "kernels", "tts"):
        shutil.copy(run5 / f"{name}.json", tmp_path)
    assert report(tmp_path).splitlines()[0].endswith("card: NVIDIA H100 80GB HBM3; commit(s): 7e70634")


def test_a_json_cut_off_while_written_reads_as_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """gpu_suite's time limit can kill a benchmark while it rewrites its JSON: the other benchmarks still report."""
    run5 = RUN2.parent / "2026-11-27-h100-run5"
    (tmp_path / "engine.json").write_text((run5 / "engine.json").read_text()[:3000])
    shutil.copy(run5 / "tts.json", tmp_path)
    text = report(tmp_path)
    assert "| 3 | decode tok/s, batch 1, TTS-3B | >= 300 | missing | - |" in text
    assert "| 5 | first reply text -> first audio chunk, ms (cold TTS prompt) | <= 150 | 146 | yes |" in text
    assert "engine.json is not complete JSON" in capsys.readouterr().err


def test_gpu_suite_run_from_elsewhere_says_where_to_run_it(tmp_path: Path) -> None:
    """Started outside the repository it found no .venv and no packages, and blamed a missing CUDA device."""
    script = Path(__file__).resolve().parents[2] / "bench" / "gpu_suite.sh"
    run = subprocess.run(["bash", str(script), "report"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "run it from the repository's root" in run.stderr, run.stderr
    assert not (tmp_path / "bench").exists()  # nothing written where it was started


def test_failed_rows_and_sections_say_why(tmp_path: Path) -> None:
    """Rows and sections that a bench recorded as failed (bench.failure's "error"; a bench.kernels case failed whole
    as bench.kernels.guarded names it; a cell that holds "oom") print "failed: <why>" in the measured column, with
    no verdict. Before, a failed engine row raised KeyError 'engine' and no table was written at all."""
    card = {"device": "NVIDIA H100 80GB HBM3", "commit": "abc1234"}
    (tmp_path / "engine.json").write_text(json.dumps({**card, "rows": [
        {"metric": "decode tok/s batch 1 (512-token prompts)", "error": "StepError: CUDA out of memory"},
        {"metric": "prefill tok/s (4 x 2048 tokens)", "engine": 9000.0, "baseline": 900.0}],
        "decode_profile_b1": [], "decode_profile_b1_error": "StepError: CUDA out of memory"}))
    (tmp_path / "kernels.json").write_text(json.dumps({**card, "copy_tb_per_s": 3.0, "prefill": [
        {"case": "prefill_case('chat-tp8 d128', 16384)", "error": "OutOfResources: shared memory | 232448"},
        {"case": "tts3b d64", "S": 16384, "flops": 1e12, "ms": {"ours_sqrt_alibi": "oom"}}], "decode": [
        {"case": "decode_case('chat d128', 32)", "error": "RuntimeError: CUDA error: an illegal memory access"}],
        "vocoder": [{"case": "vocoder_case(1.0, 'cuda')", "error": "RuntimeError: capture refused"}]}))
    (tmp_path / "tts.json").write_text(json.dumps({**card, "tts3b": {"error": "EngineError: 5000 tokens exceed"},
                                                   "concurrency": [{"streams": 64, "budget_ms": 120.0,
                                                                    "error": "OutOfMemoryError: 64 streams"}],
                                                   "max_realtime_streams_alone": 0,
                                                   "max_realtime_streams_batched": 0}))
    text = report(tmp_path)
    for row in ("| 3 | decode tok/s, batch 1, TTS-3B | >= 300 | failed: StepError: CUDA out of memory | - |",
                "| 3 | decode speed-up over the upstream-style baseline, batch 1 | >= 30x | failed: StepError: CUDA",
                "| 4 | prefill chat-tp8 d128, S=?: TFLOP/s | >= 450 | failed: OutOfResources: shared memory / 232448 "
                "| - |",
                "| 4 | prefill tts3b d64, S=16384: TFLOP/s | >= 300 | failed: out of memory | - |",
                "| 4 | paged decode chat d128, batch 32 x 16k: TB/s | >= 2.7 | failed: RuntimeError: CUDA error: an "
                "illegal memory access | - |",
                "| 4 | paged decode tts3b d64, batch 1 x 16k: TB/s | >= 1.5 | missing | - |",
                "| 4 | HiFT 1 s, batch 1: eager / fused | >= 2x | failed: RuntimeError: capture refused | - |",
                "| 5 | first reply text -> first audio chunk, ms (cold TTS prompt) | <= 150 | failed: EngineError: "
                "5000 tokens exceed | - |",
                "| 5 | the same, as served (the LM held for the first window) | <= 150 | failed: EngineError: 5000",
                "| 5 | concurrent streams that stay real-time | >= 64 | failed: OutOfMemoryError: 64 streams | - |"):
        assert row in text, row


def test_a_step_that_left_no_json_says_why_from_the_suites_summary(tmp_path: Path) -> None:
    """No engine.json or tts.json because gpu_suite skipped or stopped those steps: their rows give the summary's
    line for the step (a step that passed and wrote nothing still reads as missing)."""
    shutil.copy(RUN2 / "kernels.json", tmp_path)
    (tmp_path / "summary.txt").write_text("# 2026-11-29T05:00:00Z: info kernels engine tts report\n"
                                          "kernels rc=0 80s\ncheckpoint failed after 170s: the writer was still "
                                          "writing\nengine skipped: no checkpoint\ntts rc=124 170s\n")
    text = report(tmp_path)
    assert "| 3 | decode tok/s, batch 1, TTS-3B | >= 300 | failed: engine skipped: no checkpoint | - |" in text
    assert "| 5 | concurrent streams that stay real-time | >= 64 | failed: tts rc=124 170s | - |" in text
