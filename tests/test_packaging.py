"""The pins a fresh machine installs with (constraints.txt) agree with what PyPI's own torch asks for.

This box's pip finds a CPU torch in a local folder, which needs no Triton; PyPI's Linux torch is the CUDA build and
pins its Triton. A constraint that disagreed made `make serve` fail on every ordinary Linux machine at its first pip
step (ResolutionImpossible: torch 2.13.0 depends on triton==3.7.1, the constraints said 3.9.0), while CI stayed green.
"""
from __future__ import annotations

import json
import re
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import missing_peer

REPO = Path(__file__).resolve().parents[1]
# A Linux x86_64 machine with each Python the README allows (3.11 or newer).
LINUX_PYTHONS = ("3.11", "3.12", "3.13")


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip())
        if m:
            pins[canonicalize_name(m[1])] = Version(m[2])
    return pins


def _torch_pin() -> Version:
    """The torch the engine extra pins (constraints.txt, a CPU machine's freeze, leaves torch out)."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    torch = next(Requirement(r) for r in extras["engine"] if canonicalize_name(Requirement(r).name) == "torch")
    [spec] = torch.specifier
    assert spec.operator == "==", torch
    return Version(spec.version)


def _get(url: str, accept: str = "*/*") -> bytes:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": accept}), timeout=60) as resp:
            return resp.read()
    except (urllib.error.URLError, TimeoutError) as exc:
        missing_peer(f"PyPI is not reachable ({exc}): it is where a fresh machine gets torch")
        raise


def _pypi_linux_torch_requirements(version: Version) -> list[Requirement]:
    """Requires-Dist of PyPI's torch `version` wheel for CPython 3.11 on manylinux x86_64 (PEP 658 metadata)."""
    index = json.loads(_get("https://pypi.org/simple/torch/", "application/vnd.pypi.simple.v1+json"))
    wheel = next(f for f in index["files"]
                 if re.fullmatch(rf"torch-{re.escape(str(version))}-cp311-cp311-manylinux[\w.]*_x86_64\.whl",
                                 f["filename"]))
    metadata = _get(wheel["url"] + ".metadata").decode()
    return [Requirement(line.split(":", 1)[1].strip())
            for line in metadata.splitlines() if line.startswith("Requires-Dist:")]


def test_every_pin_that_pypis_linux_torch_also_pins_agrees_with_it() -> None:
    pins, torch = _pins(), _torch_pin()
    wrong = []
    for req in _pypi_linux_torch_requirements(torch):
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            continue
        for python in LINUX_PYTHONS:
            env = {"platform_system": "Linux", "sys_platform": "linux", "platform_machine": "x86_64",
                   "python_version": python, "python_full_version": python + ".0", "extra": ""}
            if (req.marker is None or req.marker.evaluate(env)) and not req.specifier.contains(pinned, True):
                wrong.append(f"constraints.txt pins {req.name}=={pinned}, torch=={torch} needs {req} "
                             f"(Python {python})")
    assert wrong == [], "\n".join(wrong)
