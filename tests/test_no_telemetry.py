"""onnxruntime 1.32 wrote a device id and a database of telemetry events (Python path, OS, CPU model) for upload to
Microsoft into ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ as soon as any stepaudio-rt command imported it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What the serve path does: our package first (every command's entry point), then the VAD's ONNX session.
RUN_THE_VAD_MODEL = """
import controller.cli
import onnxruntime
from vad.silero import default_model_path
onnxruntime.InferenceSession(str(default_model_path()), providers=["CPUExecutionProvider"])
"""


def run_with_home(home: Path, **env: str) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"} | {"HOME": str(home), **env}
    subprocess.run([sys.executable, "-c", RUN_THE_VAD_MODEL], cwd=ROOT, env=environ, check=True, timeout=120)


def test_our_commands_leave_no_onnxruntime_telemetry_behind(tmp_path: Path) -> None:
    run_with_home(tmp_path)
    assert not (tmp_path / ".cache" / "Microsoft").exists(), sorted(p.name for p in tmp_path.rglob("*"))


def test_a_user_who_sets_the_variable_keeps_their_choice(tmp_path: Path) -> None:
    environ = os.environ | {"ORT_DISABLE_TELEMETRY": "0"}
    seen = subprocess.run([sys.executable, "-c", "import controller, os; print(os.environ['ORT_DISABLE_TELEMETRY'])"],
                          cwd=ROOT, env=environ, capture_output=True, text=True, check=True, timeout=120).stdout
    assert seen.strip() == "0"
