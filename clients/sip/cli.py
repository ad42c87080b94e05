"""`stepaudio-rt sip-bridge`: answer SIP calls over UDP and bridge each one to an agent session.

    stepaudio-rt sip-bridge --server-url ws://127.0.0.1:8765/v1/realtime [--host 127.0.0.1] [--port 5060]

The entry point is `main(argv) -> int`; `python -m clients.sip.cli ...` runs it too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import sys
from pathlib import Path

from clients.cli_text import listen_host
from clients.sip.bridge import BridgeConfig, CallRecord, SipBridge
from clients.sip.errors import BridgeConfigError

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

# The BridgeConfig field each option sets: its errors name the field, the user typed the option.
_OPTION_OF_FIELD = {"server_url": "--server-url", "advertise": "--advertise", "max_calls": "--max-calls",
                    "silence_duration_ms": "--silence-ms", "rtp_timeout_s": "--rtp-timeout",
                    "hold_keepalive_s": "--hold-keepalive", "rtp_ports": "--rtp-ports"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stepaudio-rt sip-bridge",
                                description="Answer SIP calls (UDP) and bridge each to a Realtime agent session.")
    p.add_argument("--host", type=listen_host, default="127.0.0.1",
                   help="address to listen on; also used in Contact and SDP (default 127.0.0.1)")
    p.add_argument("--advertise", default=None, metavar="ADDRESS",
                   help="the address callers reach, for Contact and SDP (needed with --host 0.0.0.0)")
    p.add_argument("--port", type=int, default=5060, help="SIP UDP port (default 5060)")
    p.add_argument("--server-url", required=True,
                   help="the agent server, ws://HOST:PORT/v1/realtime (or its http://HOST:PORT)")
    p.add_argument("--api-key", default=os.environ.get("STEPAUDIO_RT_API_KEY"),
                   help="Bearer key for the server (env STEPAUDIO_RT_API_KEY)")
    p.add_argument("--model", default="stepaudio-rt",
                   help="the ?model= of the server URL, as the Realtime API asks (default stepaudio-rt)")
    p.add_argument("--instructions", default=None, help="session instructions for every call")
    p.add_argument("--silence-ms", type=int, default=None,
                   help="server_vad silence_duration_ms (end of a caller's turn); the server's default if unset")
    p.add_argument("--max-calls", type=int, default=16,
                   help="calls at once; one more is answered 503 with Retry-After (default 16)")
    p.add_argument("--rtp-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="hang up a call after this long without RTP from a caller that is not on hold (default 60; "
                        "0: never)")
    p.add_argument("--hold-keepalive", type=float, default=60.0, metavar="SECONDS",
                   help="ask a caller on hold this long without RTP with an in-dialog OPTIONS, and hang up if it is "
                        "gone; applies with --rtp-timeout 0 too (default 60; 0: never)")
    p.add_argument("--rtp-ports", type=_port_range, default=None, metavar="LOW-HIGH",
                   help="take each call's RTP port from this range, e.g. 10000-20000 (a firewall's); default: any "
                        "free port. A call takes an even port and leaves the odd one above it, in the range too, for "
                        "RTCP (RFC 3550), so a range holds half as many calls as ports. A call that finds all of them "
                        "taken is refused 503")
    p.add_argument("--call-log", type=Path, default=None,
                   help="append one JSON line per finished call (includes transcripts: personal data)")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="what the bridge logs on stderr (default INFO)")
    return p


def _port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        ports = (int(low), int(high if sep else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LOW-HIGH (e.g. 10000-20000)") from None
    if not 1 <= ports[0] <= ports[1] <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: ports run from 1 to 65535, LOW first")
    return ports


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = BridgeConfig(server_url=args.server_url, host=args.host, port=args.port, advertise=args.advertise,
                              api_key=args.api_key, model=args.model, instructions=args.instructions,
                              silence_duration_ms=args.silence_ms, max_calls=args.max_calls,
                              rtp_timeout_s=args.rtp_timeout or None, hold_keepalive_s=args.hold_keepalive or None,
                              rtp_ports=args.rtp_ports)
    except BridgeConfigError as exc:
        print(f"sip-bridge: {_OPTION_OF_FIELD.get(exc.field, exc.field)} {exc.problem}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"sip-bridge: {exc}", file=sys.stderr)
        return 2
    if args.call_log is not None:
        try:  # now, not at the first call's end: each call's line would be lost, with the bridge answering on
            args.call_log.open("a", encoding="utf-8").close()
        except OSError as exc:
            print(f"sip-bridge: cannot write the call log {args.call_log}: {exc.strerror}", file=sys.stderr)
            return 2
    try:
        asyncio.run(_serve(config, args.call_log))
    except OSError as exc:  # binding the SIP socket: like a bad option, the start fails with status 2, as serve's
        print(f"sip-bridge: cannot listen on {args.host}:{args.port} (UDP): {_bind_failure(exc)}", file=sys.stderr)
        return 2
    return 0


def _bind_failure(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (another bridge or SIP phone? choose a free one with --port)"
    if exc.errno == errno.EADDRNOTAVAIL:  # the system's words alone did not say which address would do
        return (f"{exc.strerror} (not an address of this machine: give one of its own, or 0.0.0.0 with --advertise to "
                "listen on all of them)")
    return exc.strerror or str(exc)  # without asyncio's "[Errno 99]": the address is named before it


async def _serve(config: BridgeConfig, call_log: Path | None) -> None:
    def record(rec: CallRecord) -> None:
        if call_log is not None:
            with call_log.open("a", encoding="utf-8") as f:
                f.write(json.dumps(rec.to_json()) + "\n")

    bridge = SipBridge(config, on_call_end=record)
    await bridge.start()
    loop = asyncio.get_running_loop()
    stopped_by: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not stopped_by.done():
            stopped_by.set_result(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal, sig)
    try:
        sig = await stopped_by
        # as serve's log does: an operator reading it after a restart sees the stop was asked for, and when it ended
        logger.info("%s: stopping (%d call(s) up)", sig.name, bridge.calls_up)
    finally:
        await bridge.close()
    logger.info("stopped")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
