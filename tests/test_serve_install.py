"""What `make serve` installs for the embedded profile (`pip install stepaudio-rt[embedded,mqtt,remote]`) pulls in
no torch: on Linux PyPI's torch is the CUDA build, 4.7 GB with its nvidia-* packages, which that profile never runs.

Read from pyproject.toml and, below it, the installed distributions' own metadata (this venv holds them all)."""
from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SERVE_EXTRAS = ("embedded", "mqtt", "remote")


def _applies(req: Requirement, extras: set[str]) -> bool:
    return req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""})


def _serve_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for e in SERVE_EXTRAS for r in project["optional-dependencies"][e]]
    return [r for r in map(Requirement, reqs) if _applies(r, set())]


def _dependency_paths() -> dict[str, list[str]]:
    """Every distribution the serve install pulls in, with the chain of requirements that brings it."""
    paths: dict[str, list[str]] = {}
    seen: set[tuple[str, frozenset[str]]] = set()  # a package asked for with extras again brings more
    todo: list[tuple[Requirement, list[str]]] = [(req, []) for req in _serve_requirements()]
    while todo:
        req, via = todo.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        path = paths.setdefault(name, via + [name])
        for dep in map(Requirement, importlib.metadata.requires(name) or []):
            if _applies(dep, set(req.extras)):
                todo.append((dep, path))
    return paths


def test_the_serve_install_pulls_in_no_torch() -> None:
    paths = _dependency_paths()
    assert "xllamacpp" in paths and "faster-whisper" in paths  # the walk saw the embedded extra
    heavy = {name: " -> ".join(path) for name, path in paths.items()
             if name in ("torch", "transformers") or name.startswith("nvidia-")}
    assert heavy == {}
