"""Each call's RTP port is even, its RTCP port the odd one above (RFC 3550 11): with --rtp-ports (a firewall's range)
a free pair of the range, never a port outside it; with all of them taken the call cannot be given media (the bridge
refuses it 503)."""

from __future__ import annotations

import asyncio
import errno
import random
import re
from pathlib import Path

import pytest

from clients.sip.bridge_config import BridgeConfig
from clients.sip.cli import build_parser
from clients.sip.udp import open_rtp_socket
from tests.sip.media import held_rtp_port_with_free_pair_above, wait_for
from tests.sip.peers import BridgeProcess, need, run_sipp
from tests.sip.sipp_scenario import expect, request, scenario, sdp


def _ignore(data: bytes, addr: tuple[str, int]) -> None:
    pass


def test_a_call_takes_the_free_pair_of_the_range_and_none_when_all_are_taken() -> None:
    """Of p-1..p+3 (p even, held), p + 2 is the one RTP port a call can take: p - 1 and p + 1 are odd, p + 3 is
    p + 2's RTCP port. Of p-1..p+1 none is left."""
    held, port = held_rtp_port_with_free_pair_above()

    async def main() -> None:
        for seed in range(8):  # whichever port the random order tries first
            rtp = await open_rtp_socket(_ignore, "127.0.0.1", (port - 1, port + 3), random.Random(seed))
            assert rtp.get_extra_info("sockname")[1] == port + 2
            rtp.close()
            await asyncio.sleep(0)  # the transport closes its socket on the next loop turn
        with pytest.raises(OSError) as taken:
            await open_rtp_socket(_ignore, "127.0.0.1", (port - 1, port + 1), random.Random(0))
        assert taken.value.errno == errno.EADDRINUSE
        assert f"no free RTP port pair in {port - 1}-{port + 1}" in str(taken.value)

    try:
        asyncio.run(main())
    finally:
        held.close()


def test_without_a_range_a_call_takes_an_even_port() -> None:
    """The system's pick is even half of the time: 16 calls at once would all have been even one time in 65536."""
    async def main() -> list[int]:
        sockets = [await open_rtp_socket(_ignore, "127.0.0.1", None, random.Random(n)) for n in range(16)]
        ports = [s.get_extra_info("sockname")[1] for s in sockets]
        for s in sockets:
            s.close()
        await asyncio.sleep(0)
        return ports

    ports = asyncio.run(main())
    assert len(set(ports)) == 16 and all(p % 2 == 0 for p in ports), ports


def test_the_range_is_checked_where_it_is_given() -> None:
    assert build_parser().parse_args(["--server-url", "ws://h/v1/realtime", "--rtp-ports", "10000-10999"]).rtp_ports \
        == (10000, 10999)
    for bad in ("20000-10000", "0-10", "ten-twenty"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--server-url", "ws://h/v1/realtime", "--rtp-ports", bad])
    with pytest.raises(ValueError, match="LOW-HIGH within 1-65535"):
        BridgeConfig(server_url="ws://h/v1/realtime", rtp_ports=(5, 4))


@pytest.mark.slow
def test_sipp_callers_get_an_even_media_port_of_the_range(embedded_server, tmp_path: Path) -> None:
    """RFC 3550 11: the m= port of the bridge's answer is even (a caller sends its RTCP to the odd one above). Three
    calls in turn against a range of five ports, two of them even: each of them gets p or p + 2 (sipp fails the call
    on an odd one; a random port of the five was odd 3 times in 5)."""
    need("sipp")
    held, port = held_rtp_port_with_free_pair_above()
    held.close()  # p is free again: the range holds two pairs
    bridge = BridgeProcess(embedded_server.ws, tmp_path, "--rtp-ports", f"{port - 1}-{port + 3}")
    try:
        code, errors = run_sipp(scenario(
            request("INVITE", 1, in_dialog=False, body=sdp("0")),
            expect(200, match="m=audio [0-9]*[02468] RTP/AVP 0"),
            request("ACK", 1, in_dialog=True),
            request("BYE", 2, in_dialog=True), expect(200, optional=())), bridge.port, tmp_path, calls=3)
        calls = wait_for(lambda: len(bridge.calls()) == 3 and bridge.calls(), 10)
    finally:
        bridge.stop()
    assert code == 0, f"{errors}\n{bridge.log()}"
    assert [c["end_reason"] for c in calls] == ["remote hangup"] * 3
    answered = [int(p) for p in re.findall(r"answered: PCMU -> rtp (\d+)", bridge.log_path.read_text())]
    assert len(answered) == 3 and set(answered) <= {port, port + 2}, answered


@pytest.mark.slow
def test_a_call_that_finds_no_free_port_pair_is_refused_503_as_other_refusals_read(embedded_server,
                                                                                   tmp_path: Path) -> None:
    """Every port pair of --rtp-ports taken: the caller gets 503 with Retry-After (RFC 3261 21.5.4), and the call log
    and the bridge's log say so in the form of every other refusal ("refused 503: ...", "refused with 503: ..."):
    its end_reason was the bare "no free RTP port pair in ...", which an operator counting refusals missed."""
    need("sipp")
    held, port = held_rtp_port_with_free_pair_above()  # p held: p-1..p+1 holds one pair, (p, p+1), and it is taken
    try:
        bridge = BridgeProcess(embedded_server.ws, tmp_path, "--rtp-ports", f"{port - 1}-{port + 1}")
        try:
            code, errors = run_sipp(scenario(
                request("INVITE", 1, in_dialog=False, body=sdp("0")),
                expect(503, match="^ *5 *$", header="Retry-After"),
                request("ACK", 1, in_dialog=True)), bridge.port, tmp_path)
            calls = wait_for(bridge.calls, 10)
        finally:
            bridge.stop()
    finally:
        held.close()
    assert code == 0, f"{errors}\n{bridge.log()}"
    why = f"no free RTP port pair in {port - 1}-{port + 1} on 127.0.0.1"
    assert [c["end_reason"] for c in calls] == [f"refused 503: {why}"]
    assert f"refused with 503: {why}" in bridge.log()
