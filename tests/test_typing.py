"""STYLE.md §8: the pure cores type-check under `mypy --strict` (mypy comes with the test extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
PURE_CORES = ["context_manager", "vad", "controller/realtime", "controller/turn_taking.py",
              "controller/turn_events.py", "controller/throttle.py", "controller/playback_pacing.py",
              "controller/response_wire.py"]


def test_the_pure_cores_pass_mypy_strict() -> None:
    """turn_taking's handler table was untyped ("Cannot call function of unknown type": a handler with the wrong
    signature would go unnoticed) and the resampler returned soxr's untyped result as an ndarray."""
    _assert_mypy_strict_passes(*PURE_CORES)


def test_the_controller_passes_mypy_strict() -> None:
    """lm_engine's lazy __getattr__ typed every name imported from the package as Any, so step_audio_chat's engine
    and tokenizer went unchecked: the `tts` tool's tokenizer of None was encoded from as if always there, the
    engine's token stream (typed AsyncIterator) was handed to aclosing(), which needs aclose(), and the messages
    were bare dicts. speech_decoder's lazy exports were Any the same way: step_audio_synthesis returned a
    StreamingDecoder's audio unchecked. The session's events, a reply's content part and the chat messages were bare
    dicts (a Response.message_item status reached assistant_message_item's ItemStatus under a type: ignore). All of
    controller/ is checked, so a module added there is too."""
    _assert_mypy_strict_passes("controller")


TYPED_PACKAGES = ["controller", "clients", "streaming_tokenizer", "kernels", "lm_engine", "speech_decoder", "bench"]


def test_the_packages_pass_mypy() -> None:
    """The session's mixins took Session itself for their base under TYPE_CHECKING, a class inheriting from itself:
    mypy typed their `self` as Any, so a misspelt `self.field` in session_items.py or session_replies.py passed
    unnoticed. The rest of the controller had 9 errors no test ran mypy to see (a callback's parameter types
    against websockets', a thread call's arguments against run_in_executor's); streaming_tokenizer and kernels
    had 12 more (nn.Module buffers read as untyped attributes, Optionals narrowed where mypy could not see it);
    lm_engine 9 (the model and its attention modules passed around as bare nn.Modules, so the runner's calls to
    them were unchecked); speech_decoder 30 (the flow estimator's U-Net levels, transformer blocks and
    feed-forwards were nn.ModuleLists read as bare nn.Modules, so every call into them and weight read from them
    was unchecked; ShapeGraphs returned tensor-or-tuple to callers that each get one of the two, and its keys
    as Hashables that streaming_decoder indexed); bench 16 (lambdas binding a loop variable as a default
    argument, which mypy cannot type, so their calls went unchecked; the upstream-style baseline reading the
    engine's model through attributes its CausalLM interface does not have). One run: torch's stubs, most of its
    time, are read once."""
    _assert_mypy_passes(*TYPED_PACKAGES)


def _assert_mypy_strict_passes(*paths: str) -> None:
    _assert_mypy_passes("--strict", *paths)


def _assert_mypy_passes(*args: str) -> None:
    # pyproject.toml's [tool.mypy]: imports are checked as far as the files named use them, and the third-party
    # packages without type information are named there (an import of anything else that mypy cannot find fails).
    run = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", *args],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


APP = '''
import asyncio
from clients import RealtimeClient, ServerEvent

async def reply_end(url: str) -> ServerEvent:
    async with await RealtimeClient.connect(url) as rt:
        await rt.create_response()
        async for event in rt.events():
            if event.type in ("response.done", "client.response_lost"):
                return event
    raise RuntimeError(rt.connected)
'''


def test_the_client_transport_passes_mypy_strict() -> None:
    """Its keepalive settings went to websockets' connect() as **dict[str, float | None], which mypy could not check
    against connect's parameters (4 arg-type errors): a wrong keyword or type there passed unnoticed."""
    _assert_mypy_strict_passes("clients/realtime_client.py", "clients/connection.py", "clients/session_tracker.py")


def test_an_app_importing_the_client_from_clients_type_checks(tmp_path: Path) -> None:
    """`from clients import RealtimeClient` (as the README does) was typed as object by mypy, through the package's
    lazy __getattr__: an app under mypy --strict got "Variable clients.RealtimeClient is not valid as a type"."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    _assert_mypy_strict_passes(str(app))
