"""The SIP bridge's configuration (one frozen dataclass, validated when built; the CLI builds it)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from clients.sip.addresses import parse_ip
from clients.sip.errors import BridgeConfigError
from clients.sip.rtp import rtp_ports

__all__ = ["BridgeConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeConfig:
    server_url: str
    host: str = "127.0.0.1"  # where SIP and RTP sockets listen
    port: int = 5060
    advertise: str | None = None  # the address callers reach, put in Contact and SDP; None: `host`
    api_key: str | None = None
    model: str | None = "stepaudio-rt"
    instructions: str | None = None
    silence_duration_ms: int | None = None  # server_vad end-of-turn silence; None keeps the server's default
    max_calls: int = 16
    connect_timeout_s: float = 10.0
    jitter_depth: int = 3
    max_inbound_frames: int = 500  # 10 s of caller audio waiting for the agent socket; older frames are dropped
    # A caller that vanished without BYE (crash, network loss) would hold its agent session and a call slot
    # forever: with no RTP for this long while we expect some, we hang up. None: never.
    rtp_timeout_s: float | None = 60.0
    # A held phone may rightly send no RTP for long, so the RTP timeout spares it; it is asked instead, with an
    # in-dialog OPTIONS after this long without RTP, whether it is still there. Kept when rtp_timeout_s is None:
    # a held caller that vanished must not keep its call forever either. None: never asked.
    hold_keepalive_s: float | None = 60.0
    # Each call's RTP port (even, its RTCP port the odd one above: both in the range) from this range (inclusive);
    # None: any free even port.
    rtp_ports: tuple[int, int] | None = None
    # The agent answers key presses once no key came for this long: a caller keying in a number presses the next
    # key sooner, and wants one answer to the number, not one per digit.
    dtmf_pause_s: float = 1.5

    def __post_init__(self) -> None:
        # http(s):// as talk and the openai SDK take it: the client turns it into ws(s)://.../v1/realtime.
        parts = urlsplit(self.server_url)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise BridgeConfigError("server_url", "must be a ws:// or http:// URL, e.g. "
                                                  f"ws://127.0.0.1:8765/v1/realtime, got {self.server_url!r}")
        for host in (self.host, self.public_host):  # sockets, Via, Contact and SDP are written for IPv4
            if isinstance(parse_ip(host), ipaddress.IPv6Address):
                raise ValueError(f"{host} is an IPv6 address: the SIP bridge speaks IPv4 only")
        public = parse_ip(self.public_host)  # None: a host name, taken as it is
        if public is not None and public.is_unspecified:
            # c=0.0.0.0 in our SDP means hold, and ACK/BYE to Contact 0.0.0.0 go nowhere
            raise BridgeConfigError("advertise", f"is needed when listening on {self.host}: the address callers reach")
        if not 1 <= self.port <= 65535:  # checked here, not first in the UA core: the CLI says which option is wrong
            raise ValueError(f"the SIP port must be within 1-65535, got {self.port}")
        if self.max_calls < 1:
            raise BridgeConfigError("max_calls", f"must be at least 1, got {self.max_calls}")
        if self.silence_duration_ms is not None and self.silence_duration_ms <= 0:
            raise BridgeConfigError("silence_duration_ms", f"must be positive, got {self.silence_duration_ms}")
        # `not > 0`, not `<= 0`: NaN compares false both ways, and a NaN timeout hung every call up at once
        if self.rtp_timeout_s is not None and not self.rtp_timeout_s > 0:
            raise BridgeConfigError("rtp_timeout_s", f"must be positive, got {self.rtp_timeout_s}")
        if self.hold_keepalive_s is not None and not self.hold_keepalive_s > 0:
            raise BridgeConfigError("hold_keepalive_s", f"must be positive, got {self.hold_keepalive_s}")
        if self.dtmf_pause_s <= 0:
            raise BridgeConfigError("dtmf_pause_s", f"must be positive, got {self.dtmf_pause_s}")
        if self.rtp_ports is not None and not 1 <= self.rtp_ports[0] <= self.rtp_ports[1] <= 65535:
            raise ValueError(f"the RTP port range must be LOW-HIGH within 1-65535, got {self.rtp_ports}")
        if self.rtp_ports is not None and not rtp_ports(*self.rtp_ports):
            low, high = self.rtp_ports
            pair = min(low + low % 2, 65534)
            raise BridgeConfigError("rtp_ports", f"{low}-{high} holds no even RTP port with its RTCP port, the odd one "
                                                 f"above it (RFC 3550 11), e.g. {pair}-{pair + 1}")

    @property
    def public_host(self) -> str:
        return self.advertise or self.host
