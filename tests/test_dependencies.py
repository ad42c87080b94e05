"""Dependencies point one way (DESIGN.md, 2): the packages import each other only along these arrows."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What each package may import of ours. controller -> clients: the server shares the clients' pure wire helpers
# (g711, what a listener heard of a reply) and runs their commands (talk, sip-bridge).
ALLOWED = {
    "controller": {"vad", "streaming_tokenizer", "lm_engine", "speech_decoder", "context_manager", "clients"},
    "lm_engine": {"kernels"},
    "speech_decoder": {"kernels"},
    "streaming_tokenizer": set(),
    "vad": set(),
    "context_manager": set(),
    "kernels": set(),
    "clients": set(),  # nothing but the wire protocol: a client runs against any Realtime server
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names that the module imports absolutely, at any depth (imports inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_each_package_imports_only_what_the_design_allows() -> None:
    wrong = sorted(f"{path.relative_to(REPO)} imports {name}"
                   for package, allowed in ALLOWED.items()
                   for path in (REPO / package).rglob("*.py")
                   for name in imported_packages(path) & (ALLOWED.keys() - allowed - {package}))
    assert wrong == []


def test_a_client_importing_the_server_is_caught(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from context_manager.heard import x\n    import lm_engine.engine\n")
    assert {"context_manager", "lm_engine"} <= imported_packages(module)
