"""`stepaudio-rt sip-bridge` with an option it cannot work with says which one in a line and exits 2, like its other
option errors, before it answers any call."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from clients.sip.cli import build_parser
from tests.sip.media import free_udp_port
from tests.sip.peers import BridgeProcess


def _sip_bridge(*args: str) -> subprocess.CompletedProcess[str]:
    """`stepaudio-rt sip-bridge` with a server URL that nothing answers and `args`: these options stop it at start."""
    return subprocess.run([sys.executable, "-m", "clients.sip.cli", "--server-url", "ws://127.0.0.1:9/v1/realtime",
                           *args], capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.parametrize(("option", "said"), [
    (["--port", "70000"], "sip-bridge: the SIP port must be within 1-65535, got 70000"),
    (["--port", "0"], "sip-bridge: the SIP port must be within 1-65535, got 0"),
    # the options the user typed, not BridgeConfig's fields (max_calls, rtp_timeout_s, silence_duration_ms, ...)
    (["--max-calls", "0"], "sip-bridge: --max-calls must be at least 1, got 0"),
    (["--rtp-timeout", "nan"], "sip-bridge: --rtp-timeout must be positive, got nan"),
    (["--rtp-timeout", "-5"], "sip-bridge: --rtp-timeout must be positive, got -5.0"),
    (["--hold-keepalive", "nan"], "sip-bridge: --hold-keepalive must be positive, got nan"),
    (["--silence-ms", "0"], "sip-bridge: --silence-ms must be positive, got 0"),
    (["--server-url", "127.0.0.1:8765"], "sip-bridge: --server-url must be a ws:// or http:// URL, "
                                          "e.g. ws://127.0.0.1:8765/v1/realtime, got '127.0.0.1:8765'"),
    (["--host", "0.0.0.0"], "sip-bridge: --advertise is needed when listening on 0.0.0.0: the address callers reach"),
    # RFC 3550 11: an even RTP port and its RTCP port above it; this one was taken, and its calls got odd ports
    (["--rtp-ports", "10001-10002"], "sip-bridge: --rtp-ports 10001-10002 holds no even RTP port with its RTCP port, "
                                     "the odd one above it (RFC 3550 11), e.g. 10002-10003"),
])
def test_an_impossible_port_or_call_limit_is_named(option: list[str], said: str) -> None:
    """They had ended in a traceback, "ValueError: invalid UaConfig". A NaN --rtp-timeout was taken: the bridge
    started, and hung up every call it answered 20 ms later ("RTP timeout")."""
    run = _sip_bridge(*option)
    assert (run.returncode, run.stderr.strip()) == (2, said)


@pytest.mark.parametrize("host", ["localhost:5080", "sip://127.0.0.1"])
def test_a_host_given_with_a_port_or_a_scheme_is_a_usage_error(host: str) -> None:
    """`--host localhost:5080` was looked up whole with --port added: "cannot listen on localhost:5080:5060 (UDP):
    Name or service not known"."""
    run = _sip_bridge("--host", host)
    assert run.returncode == 2 and run.stderr.startswith("usage: stepaudio-rt sip-bridge"), run.stderr
    assert run.stderr.splitlines()[-1] == (
        f"stepaudio-rt sip-bridge: error: argument --host: {host!r} is not an address to listen on: an IP address or "
        "host name such as 127.0.0.1 or 0.0.0.0, without a scheme or a port (the port goes in --port)"), run.stderr


def test_a_call_log_that_cannot_be_written_stops_the_start(tmp_path: Path) -> None:
    """Found only at the first call's end, every call's line was lost (a traceback per call in the bridge's log)
    while the bridge went on answering: the call log is where calls are counted."""
    missing = tmp_path / "no-such-dir" / "calls.jsonl"
    run = _sip_bridge("--port", str(free_udp_port()), "--call-log", str(missing))
    assert (run.returncode, run.stderr.strip()) == (
        2, f"sip-bridge: cannot write the call log {missing}: No such file or directory")


def test_the_readme_names_every_sip_bridge_option() -> None:
    """The README's Telephony "Options:" paragraph is where a user looks up the bridge; it lacked `--server-url`
    (required), `--model` and `--log-level`."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    paragraph = readme.split("\n## Telephony (SIP)\n", 1)[1].split("\nOptions: ", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"`(--[a-z-]+)", paragraph))
    options = set(re.findall(r"(?m)^  (?:-\w, )?(--[a-z-]+)", build_parser().format_help())) - {"--help"}
    assert options <= documented, sorted(options - documented)


def test_an_http_server_url_is_taken_as_talk_takes_it() -> None:
    """talk and the openai SDK take the server's http:// address; the bridge refused it."""
    from clients.sip.bridge_config import BridgeConfig

    assert BridgeConfig(server_url="http://127.0.0.1:8765").server_url == "http://127.0.0.1:8765"


def test_help_says_the_server_url_may_be_the_servers_http_address() -> None:
    """The bridge takes `http://HOST:PORT`, as talk does and the README says, but its help named ws:// alone."""
    help_text = " ".join(build_parser().format_help().split())
    assert "--server-url SERVER_URL the agent server, ws://HOST:PORT/v1/realtime (or its http://HOST:PORT)" in help_text


def test_a_bridge_stopped_by_sigterm_says_so_in_its_log(tmp_path: Path) -> None:
    """systemd stops the bridge with SIGTERM: its log ended at its start-up lines, as if it were still running,
    where serve's says 'SIGTERM: stopping' and 'stopped'. It exits 0."""
    bridge = BridgeProcess("ws://127.0.0.1:9/v1/realtime", tmp_path)
    bridge.proc.send_signal(signal.SIGTERM)
    assert bridge.proc.wait(30) == 0
    lines = bridge.log().splitlines()
    assert any(line.endswith("SIGTERM: stopping (0 call(s) up)") for line in lines), lines
    assert lines[-1].endswith("stopped"), lines
