"""--rtp-ports: each call's RTP socket takes a free port of the range (a firewall's), never one outside it; with all
of them taken the call cannot be given media (the bridge refuses it 503)."""

from __future__ import annotations

import asyncio
import errno
import random

import pytest

from clients.sip.bridge_config import BridgeConfig
from clients.sip.cli import build_parser
from clients.sip.udp import open_rtp_socket
from tests.sip.media import held_port_with_free_neighbour


def test_a_call_takes_the_free_port_of_the_range_and_none_when_all_are_taken() -> None:
    held, port = held_port_with_free_neighbour()

    async def main() -> None:
        for seed in range(4):  # whichever port the random order tries first
            rtp = await open_rtp_socket(lambda data, addr: None, "127.0.0.1", (port, port + 1), random.Random(seed))
            assert rtp.get_extra_info("sockname")[1] == port + 1
            rtp.close()
            await asyncio.sleep(0)  # the transport closes its socket on the next loop turn
        with pytest.raises(OSError) as taken:
            await open_rtp_socket(lambda data, addr: None, "127.0.0.1", (port, port), random.Random(0))
        assert taken.value.errno == errno.EADDRINUSE and f"no free RTP port in {port}-{port}" in str(taken.value)

    try:
        asyncio.run(main())
    finally:
        held.close()


def test_the_range_is_checked_where_it_is_given() -> None:
    assert build_parser().parse_args(["--server-url", "ws://h/v1/realtime", "--rtp-ports", "10000-10999"]).rtp_ports \
        == (10000, 10999)
    for bad in ("20000-10000", "0-10", "ten-twenty"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--server-url", "ws://h/v1/realtime", "--rtp-ports", bad])
    with pytest.raises(ValueError, match="LOW-HIGH within 1-65535"):
        BridgeConfig(server_url="ws://h/v1/realtime", rtp_ports=(5, 4))
