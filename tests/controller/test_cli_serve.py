"""`stepaudio-rt serve` as a new user runs it: bad options and an unusable address get one line, not a traceback."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lm_engine.assets import EMBEDDED_GGUF_NAME, embedded_gguf_ready
from model_files.cache import default_cache_dir
from tests.conftest import ServerProcess


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller.cli", "serve", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def assert_one_line_error(proc: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit status 2 and the message, before any model was loaded for nothing (or the server said it listens)."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "loading" not in proc.stderr, proc.stderr
    assert "listening on" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"stepaudio-rt serve: error: {message}"), proc.stderr


def test_a_port_in_use_is_named_before_any_model_loads() -> None:
    """The first thing a second `make serve` hits: the port is taken."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = serve("--port", str(port))
    assert_one_line_error(proc, f"cannot listen on 127.0.0.1:{port}: address already in use "
                                "(another server? choose a free one with --port, or make serve PORT=N)")


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "70000"], "--port must be between 0 and 65535, got 70000"),
    (["--host", "no-such-host.invalid", "--port", "0"],
     "cannot listen on no-such-host.invalid:0: "),  # then the resolver's words
    # was the system's words alone: "Cannot assign requested address"
    (["--host", "192.0.2.1", "--port", "0"], "cannot listen on 192.0.2.1:0: Cannot assign requested address (not "
                                             "an address of this machine: give one of its own, or 0.0.0.0 to listen "
                                             "on all of them)"),
    # Whisper refused it at every turn, after the server had loaded its models and said it was ready.
    (["--language", "xx"], "--language 'xx' is not one of Whisper's language codes (en, de, fr, es, zh, ja, ...)"),
    # `--language "$LANG_CODE"` with the variable unset: served as English, the log said 'loading Whisper (None)'
    (["--language", ""], "--language '' is not one of Whisper's language codes"),
    # ... in the Step-Audio profiles too, which transcribe the user with Whisper as well
    (["--profile", "tiny", "--language", "xx"], "--language 'xx' is not one of Whisper's language codes"),
    (["--chat-url", "127.0.0.1:8000/v1"], "--chat-url '127.0.0.1:8000/v1': an http:// or https:// URL ending in "
                                          "/v1, e.g. http://127.0.0.1:8000/v1"),
    (["--chat-url", "http://127.0.0.1:99999/v1"], "--chat-url 'http://127.0.0.1:99999/v1': Port out of range"),
    (["--mqtt-url", "127.0.0.1:1883", "--port", "0"], "--mqtt-url '127.0.0.1:1883': the scheme must be mqtt:// or "
                                                      "mqtts://"),
    # A '#' in the password ended the host part: "bad port", with the password on the terminal (and in logs)
    (["--mqtt-url", "mqtts://op:s3cr#t@broker", "--port", "0"],
     "--mqtt-url 'mqtts://op:***@broker': bad port (in a user name or password, write '#' '?' '/' '@' ':' as %23 "),
    # `--api-key "$KEY"` with KEY unset: the server started, refusing every client without a key.
    (["--api-key", ""], "--api-key is empty"),
    (["--threads", "0"], "argument --threads: must be at least 1, got 0"),
    # argparse named the converter: "invalid _positive_int value: 'four'"
    (["--threads", "four"], "argument --threads: must be a whole number, got 'four'"),
    (["--max-sessions", "2.5"], "argument --max-sessions: must be a whole number, got '2.5'"),
    (["--log-level", "loud"], "argument --log-level: invalid choice: 'LOUD' (choose from 'DEBUG', 'INFO', "
                              "'WARNING', 'ERROR')"),
    # serve's default profile is embedded: the folder went unused, without a word (tts and chat take it alone)
    (["--model-path", "/tmp"], "--model-path is a Step-Audio model folder, which the embedded profile does not use: "
                               "add --profile step-audio"),
    (["--profile", "step-audio", "--model-path", "/etc/hostname"], "/etc/hostname is a file, not a folder"),
])
def test_bad_options_say_what_is_wrong_in_one_line(args: list[str], message: str) -> None:
    assert_one_line_error(serve(*args), message)


@pytest.mark.parametrize("host", ["localhost:8800", "127.0.0.1:8800", "http://127.0.0.1", "http://127.0.0.1:8800/"])
def test_a_host_given_with_a_port_or_a_scheme_is_a_usage_error(host: str) -> None:
    """`--host localhost:8800`, as a browser shows the server, was "cannot listen on localhost:8800:8765: Name or
    service not known": the port added to it, and no word that the port goes elsewhere."""
    proc = serve("--host", host, "--port", "0")
    assert proc.returncode == 2 and proc.stderr.startswith("usage: stepaudio-rt serve"), proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"stepaudio-rt serve: error: argument --host: {host!r} is not an address to listen on: an IP address or host "
        "name such as 127.0.0.1 or 0.0.0.0, without a scheme or a port (the port goes in --port)"), proc.stderr


def test_a_mistyped_option_is_named_under_the_usage_of_serve() -> None:
    """`serve --prot 8800` got `stepaudio-rt: error: unrecognized arguments` under the usage of the bare command,
    which lists the commands only: the user was not shown serve's options to find the right spelling in."""
    proc = serve("--prot", "8800")
    assert_one_line_error(proc, "unrecognized arguments: --prot 8800")
    assert "[--port PORT]" in proc.stderr, proc.stderr


@pytest.mark.parametrize(("cache", "error"), [("a-file/cache", "[Errno 20] Not a directory"),
                                              ("a-file", "[Errno 17] File exists")])
def test_a_model_cache_that_cannot_be_written_is_named_with_the_variable_that_moves_it(tmp_path: Path, cache: str,
                                                                                       error: str) -> None:
    """The chat LM is assembled into the cache on first use; a cache that cannot be created (a read-only home in a
    container, a typo) was a FileNotFoundError/PermissionError traceback, and then one line, but after 'listening
    on' and the other models' loads: it is now found before either. As root (tests), only a path through a file
    cannot be created."""
    (tmp_path / "a-file").write_text("")
    path = tmp_path / cache
    proc = serve("--port", "0", env={"STEPAUDIO_RT_CACHE": str(path)})
    assert_one_line_error(proc, f"cannot prepare the embedded models: {error}: '{path}' (the model cache, {path}: "
                                "set STEPAUDIO_RT_CACHE to a writable folder with 1 GB free)")


def test_a_model_cache_the_tiny_folder_cannot_be_written_to_is_named_with_the_variable_that_moves_it(
        tmp_path: Path) -> None:
    """`serve --profile tiny` without --model-path writes its folder into the cache: one that cannot be created
    ended the server in a NotADirectoryError/PermissionError traceback, after it had said it was listening; it is
    now one line, before it listens."""
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "cache"
    proc = serve("--profile", "tiny", "--port", "0", env={"STEPAUDIO_RT_CACHE": str(cache)})
    assert_one_line_error(proc, f"cannot write the tiny model folder: [Errno 20] Not a directory: '{cache}' (the "
                                f"model cache, {cache}: set STEPAUDIO_RT_CACHE to a writable folder with 100 MB "
                                "free); or give --model-path DIR")


def test_help_shows_real_defaults_only() -> None:
    """`serve --help`: no "(default: None)" or "(default: [])" next to options that simply have none."""
    proc = serve("--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # argparse wraps lines at the terminal's width
    assert "(default: None)" not in text and "(default: [])" not in text
    assert "(default: 8765)" in text and "(default: no limit)" in text


@pytest.mark.parametrize("command", ["make-checkpoint", "tts", "chat", "serve"])
def test_help_shows_no_default_for_a_flag(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`make-checkpoint --help` showed "--overwrite ... (default: False)" and "--with-chat-weights ... (default:
    False)": a switch is off unless given, and "False" read as a value to pass."""
    from controller.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0 and "--" in text
    assert "(default: False)" not in text and "(default: True)" not in text, text
    assert "(default: all)" in text or command != "make-checkpoint"  # a value's default is still shown


def test_help_gives_the_pause_ms_range_the_server_enforces() -> None:
    """`serve --help` says which --pause-ms values are taken, so a user learns it before the error does."""
    text = " ".join(serve("--help").stdout.split())
    assert "--pause-ms PAUSE_MS silence that starts a speculative reply, 50-2000 ms" in text
    assert_one_line_error(serve("--pause-ms", "2001"), "--pause-ms must be between 50 and 2000")


def test_help_says_the_tiny_profile_needs_no_model_path() -> None:
    """`serve --help` listed tiny among the profiles --model-path is for, beside step-audio and full-random, which
    refuse to start without one: it read as if tiny needed one too, though `serve --profile tiny` writes its own."""
    text = " ".join(serve("--help").stdout.split())
    assert ("--model-path MODEL_PATH model folder (step-audio, full-random; tiny: optional, by default one written on "
            "first use to $STEPAUDIO_RT_CACHE/tiny)") in text


def test_help_says_which_language_codes_are_taken_and_what_they_load() -> None:
    """`serve --help` said only "default language of user speech": not that it is a Whisper code, that en-US reads
    as en, nor that a language other than English loads another Whisper model."""
    text = " ".join(serve("--help").stdout.split())
    assert ("--language LANGUAGE default language of user speech, a code Whisper knows (en, de, fr, zh, ...; en-US "
            "reads as en); English is transcribed by Whisper tiny.en, any other language by the multilingual Whisper "
            "base (default: en)") in text


def test_help_says_what_a_chat_url_looks_like() -> None:
    """`serve --help` said only "OpenAI-compatible server for the Chat LM": that the URL is the server's API root,
    ending in /v1, was said only by a refusal ('foo') or a log warning (`--chat-url http://host:8000`)."""
    text = " ".join(serve("--help").stdout.split())
    assert ("--chat-url CHAT_URL OpenAI-compatible server (vLLM, llama.cpp, ...) for the Chat LM, its URL ending in "
            "/v1, e.g. http://127.0.0.1:8000/v1") in text


def test_log_level_debug_shows_websockets_handshakes() -> None:
    """`serve --log-level DEBUG` showed none of websockets' DEBUG lines (the requests and answers of each handshake):
    the level that quiets them at INFO held them at WARNING whatever --log-level said."""
    proc = subprocess.Popen([sys.executable, "-m", "controller.cli", "serve", "--port", "0", "--log-level", "DEBUG"],
                            stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, proc.kill)  # a line that never comes ends the reads below, not the test run
    watchdog.start()
    try:
        port = None
        for line in proc.stderr:  # the port is known before the models load; the handshake is refused meanwhile
            if match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
                break
        assert port is not None
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/realtime", timeout=30)
        for line in proc.stderr:
            if "DEBUG websockets.server" in line and "> HTTP/1.1 426" in line:
                break
        else:
            raise AssertionError("no websockets DEBUG line")
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(timeout=30)


def test_the_readme_configuration_table_lists_every_serve_option() -> None:
    """Each option `serve --help` has is in the README's table, and the table names no option serve lacks."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    documented = {opt for row in section.splitlines() if row.startswith("| `--")
                  for opt in re.findall(r"--[a-z-]+", row.split("|")[1])}
    options = set(re.findall(r"(?m)^  (?:-\w, )?(--[a-z-]+)", serve("--help").stdout)) - {"--help"}
    assert documented == options


@pytest.mark.slow
def test_the_log_at_info_has_a_line_per_reply_and_none_per_transcription(embedded_server, beckett_wav,
                                                                          tmp_path: Path) -> None:
    """faster-whisper logged "Processing audio with duration ..." at INFO for every pass, about one a second."""
    from clients.talk import main as talk

    assert talk([str(beckett_wav), "--url", embedded_server.ws, "--fast", "--out", str(tmp_path / "r.wav")]) == 0
    log = embedded_server.log()
    assert re.search(r"INFO controller\.session sess_\w+: response \S+ completed", log), log
    assert "faster_whisper" not in log, log


@pytest.mark.slow
def test_clients_that_hang_up_before_the_handshake_leave_no_error_in_the_log(embedded_server) -> None:
    """A TCP health check (connect, close), a request cut short and a port scanner's junk are the client's doing:
    websockets logged each as 'ERROR opening handshake failed' with a 15-line traceback."""
    for data in (b"", b"GET /healthz HTTP/1.1\r\n", b"junk\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", embedded_server.port)) as probe:
            probe.sendall(data)
    with urllib.request.urlopen(f"{embedded_server.http}/healthz", timeout=10) as answer:
        assert answer.status == 200  # the server is fine, and has handled the probes before this request
    log = embedded_server.log()
    assert "ERROR" not in log and "Traceback" not in log, log


@pytest.mark.slow
def test_listening_on_all_interfaces_prints_urls_a_browser_here_can_open() -> None:
    """With --host 0.0.0.0 the ready line said page: http://0.0.0.0:PORT/, which Chrome refuses to open."""
    server = ServerProcess("--host", "0.0.0.0")
    try:
        ready = f"ready: ws://127.0.0.1:{server.port}/v1/realtime  page: http://127.0.0.1:{server.port}/"
        assert ready in server.log()
    finally:
        server.stop()


# `serve` whose chat LM, once loaded, holds its load forever: a chat LM that loads for minutes, as the big ones do.
# The embedded one loads in about a second, which a loaded box's test could let pass before its next press.
_SERVE_WITH_A_CHAT_LM_THAT_NEVER_LOADS = """
import sys
import threading

from controller.cli import main
from lm_engine import LlamaCppBackend

real_load = LlamaCppBackend.load.__func__


def load(cls, *args, **kwargs):
    real_load(cls, *args, **kwargs)
    threading.Event().wait()


LlamaCppBackend.load = classmethod(load)
raise SystemExit(main(sys.argv[1:]))
"""


# `serve` whose models, once asked to close, never finish closing: a stop that a user will not wait for.
_SERVE_WITH_MODELS_THAT_NEVER_CLOSE = """
import sys
import threading

from controller.cli import main
from controller.pipeline import EmbeddedPipeline


def close(self):
    print("closing the models", file=sys.stderr, flush=True)
    threading.Event().wait()


EmbeddedPipeline.close = close
raise SystemExit(main(sys.argv[1:]))
"""


def _interrupt_the_load(tmp_path: Path, first_at: str, presses: int, *, script: str | None = None,
                        then_at: str = "Ctrl-C again to stop now") -> str:
    """`serve` Ctrl-C'd once its log has `first_at`, each further press once its log has `then_at` after that;
    it must exit with status 0. Returns its log. `script` runs serve in place of the CLI (its argv[1:] the
    command), for a load or a stop that never ends, so that every press comes during it however slowly this
    test runs."""
    import signal
    import time

    log = tmp_path / "serve.log"
    launch = ["-c", script] if script else ["-m", "controller.cli"]
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, *launch, "serve", "--port", "0"], stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            for awaited in [first_at] + [then_at] * (presses - 1):
                while awaited not in log.read_text() and time.monotonic() < deadline:
                    time.sleep(0.005)
                proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=120) == 0
        finally:  # a server that ignored the presses (with endless_chat_lm, it would wait forever) goes too
            proc.kill()
            proc.wait()
    return log.read_text()


def test_ctrl_c_while_the_first_model_loads_starts_no_other_load(tmp_path: Path) -> None:
    """SIGINT while silero-vad, the first model, loads: no "ready" line (a server that announces itself as it quits
    looks hung), a line saying the load stops before its next model, "stopped", exit status 0. The first Ctrl-C
    said "stopping once the models have loaded" and Whisper, Piper and the chat LM loaded before the exit."""
    text = _interrupt_the_load(tmp_path, "loading silero-vad", 1)
    before, stop_line, after = text.partition("SIGINT: stopping before the next model loads (the one loading now "
                                              "cannot be cut short; Ctrl-C again to stop now)")
    assert stop_line and "loading silero-vad" in before, text
    assert "loading" not in after and "ready:" not in text and after.rstrip().endswith("stopped"), text


def test_a_second_ctrl_c_while_the_models_load_stops_at_once(tmp_path: Path) -> None:
    """The first Ctrl-C waits for the model loading now (the chat LM, minutes with a big one); a second one did
    nothing at all, so a user who would not wait had to kill the server. It now ends the process at once."""
    # The embedded chat LM loads in about a second: on a loaded box it had loaded, and the server stopped with
    # "stopped" as it should, before the second press came.
    text = _interrupt_the_load(tmp_path, "loading the chat LM", 2, script=_SERVE_WITH_A_CHAT_LM_THAT_NEVER_LOADS)
    assert text.rstrip().endswith("SIGINT: stopped during the model load (signalled twice)"), text
    assert "ready:" not in text, text


@pytest.mark.parametrize("first_at", ["loading the chat LM", "ready:"])
def test_a_second_ctrl_c_once_the_models_have_loaded_stops_the_stop_and_says_so(tmp_path: Path,
                                                                               first_at: str) -> None:
    """A second Ctrl-C while the server closed its models (a stop that goes on) said 'stopped during the model load
    (signalled twice)' when the first had come during the load, which had ended since; pressed after 'ready' it
    did nothing, and a user had to kill the server. It now ends the process at once and says it cut the stop."""
    text = _interrupt_the_load(tmp_path, first_at, 2, script=_SERVE_WITH_MODELS_THAT_NEVER_CLOSE,
                               then_at="closing the models")
    assert "llama.cpp loaded" in text.partition("closing the models")[0], text
    assert text.rstrip().endswith("SIGINT: stopped during the stop (signalled twice)"), text
    assert "model load (signalled twice)" not in text, text


def test_a_line_logged_while_a_progress_bar_runs_starts_a_line_of_its_own() -> None:
    """Ctrl-C while the first start assembled the chat model: 'SIGINT: stopping before the next model loads' came
    glued to the end of the assembly's progress bar ('... 133M/469M [00:00<00:01, 311MB/s]2026-11-28 ... INFO ...')."""
    import io
    import logging

    from tqdm import tqdm

    from controller.cli import log_handler

    out = io.StringIO()
    handler = log_handler(out)
    with tqdm(total=469, file=out, desc="assembling model.gguf", mininterval=0) as bar:
        bar.update(133)
        handler.handle(logging.makeLogRecord({"name": "controller.app", "levelno": logging.INFO, "levelname": "INFO",
                                              "msg": "SIGINT: stopping before the next model loads"}))
        bar.update(336)
    line = next(part for part in re.split(r"[\r\n]", out.getvalue()) if "SIGINT" in part)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d [\d:,]+ INFO controller\.app: SIGINT: stopping before the next model loads",
                        line), repr(out.getvalue())
    assert "469/469" in out.getvalue().split(line)[1]  # and the bar went on below it


def test_version_is_the_projects(capsys: pytest.CaptureFixture[str]) -> None:
    """`stepaudio-rt --version` said "the following arguments are required: command"."""
    import tomllib

    from controller.cli import build_parser

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == f"stepaudio-rt {project['version']}\n"


@pytest.mark.slow
def test_the_log_names_the_language_as_whisper_reads_it() -> None:
    """`serve --language EN-us` logged 'loading Whisper (EN-us)', as typed, where Whisper is given 'en'."""
    server = ServerProcess("--language", "EN-us")
    try:
        assert "loading Whisper (en)" in server.log(), server.log()
    finally:
        server.stop()


def serve_on_a_read_only_cache(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`serve --port 0 ARGS` with STEPAUDIO_RT_CACHE=cache, which a read-only bind mount in a user namespace (root
    writes through any mode bits) makes read-only."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no unshare, or no user namespaces here")
    serve_cmd = shlex.join([sys.executable, "-m", "controller.cli", "serve", "--port", "0", *args])
    cmd = f"mount -o bind,ro {shlex.quote(str(cache))} {shlex.quote(str(cache))} && exec {serve_cmd}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "STEPAUDIO_RT_CACHE": str(cache)})


@pytest.mark.skipif(not embedded_gguf_ready(), reason="needs the assembled chat LM")
def test_a_read_only_cache_that_whisper_base_must_be_written_to_is_said_before_listening(tmp_path: Path) -> None:
    """`serve --language de` assembles Whisper base into the cache on its first start. With the chat LM already
    there, a read-only cache was not checked (only a missing chat LM was), and the server failed after 'listening
    on'."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in (EMBEDDED_GGUF_NAME, EMBEDDED_GGUF_NAME + ".sha256"):
        (cache / name).symlink_to(default_cache_dir() / name)
    proc = serve_on_a_read_only_cache(cache, "--language", "de")
    assert_one_line_error(proc, f"cannot prepare the embedded models: [Errno 30] Read-only file system: '{cache}' (the "
                                f"model cache, {cache}: set STEPAUDIO_RT_CACHE to a writable folder with 1 GB free)")


@pytest.mark.slow
def test_a_step_audio_profile_says_a_read_only_cache_for_whisper_base_before_listening(tmp_path: Path) -> None:
    """The tiny and Step-Audio profiles transcribe with Whisper base too for `--language de`, but only the embedded
    profile's cache was checked: they failed after 'listening on', once the Step-Audio models had loaded."""
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run([sys.executable, "-m", "controller.cli", "make-checkpoint", "--profile", "tiny", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    proc = serve_on_a_read_only_cache(cache, "--profile", "tiny", "--model-path", str(tmp_path), "--language", "de")
    assert_one_line_error(proc, f"cannot prepare Whisper (--language de): [Errno 30] Read-only file system: '{cache}' "
                                f"(the model cache, {cache}: set STEPAUDIO_RT_CACHE to a writable folder with 200 MB "
                                "free)")
