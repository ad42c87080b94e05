"""SDP (RFC 4566) parse/serialize and the offer/answer rules we follow (RFC 3264). Pure.

Rules:
- We answer audio only, with one voice codec: the first of the offer's formats (the offerer's preference order,
  RFC 3264 6.1) that is PCMU (static 0) or PCMA (static 8), or a dynamic type whose rtpmap names PCMU/8000 or
  PCMA/8000. If the offer names telephone-event/8000 (RFC 4733) we answer it with the offerer's payload type.
- An offer with no usable audio stream, or an audio stream with no PCMU/PCMA, raises NoCommonCodec (488). One
  whose audio is offered only over another profile than RTP/AVP(F) (SRTP: RTP/SAVP, UDP/TLS/RTP/SAVPF) raises
  IncompatibleTransport (488, Warning 302) naming it: its codecs may well be ours, and the caller's operator
  must learn that encrypted media is what we cannot take.
- The answer has one m= line per offered m= line (6): audio we accept gets our port, every other stream port 0.
- Direction mirrors the offer: sendonly -> recvonly, recvonly -> sendonly, inactive -> inactive, else sendrecv.
  A media-level direction attribute wins over a session-level one (RFC 4566 6). An offer whose address is the
  RFC 2543 hold address 0.0.0.0 gives us nowhere to send (RFC 3264 8.4): our answer says we do not send
  (sendrecv -> recvonly, sendonly -> inactive), so that it says what we do; it said sendrecv while we sent nothing.
- A re-offer is answered with the codec already in use (`keep`), so the media streams and the agent session's
  audio format never change mid-call; a re-offer without it raises NoCommonCodec (488, the call goes on).
- A re-offer whose audio streams all have port 0 removes the audio (RFC 3264 8.2): it is answered with port 0
  for them, and the media is "removed" (inactive, no address: nothing is sent or heard) until a later re-offer
  adds audio again. A first offer without audio still raises NoCommonCodec: a call without it is no call.
- The remote media address is the media-level c= when present, else the session-level c= (5.7).
- We send 20 ms packets (rtp.FRAME_SAMPLES): an audio stream whose a=maxptime (the most the offerer can take in
  one packet, RFC 4566 6; media-level, else session-level) is below 20 is passed over, and an offer with no other
  usable stream raises NoCommonCodec (488, Warning 305) saying so, rather than an answer whose audio the caller
  could not take.
- Our sockets are IPv4: an audio stream whose address is IN IP6 is passed over (a dual-stack offer's IP4 stream
  is taken); an offer with no other usable stream raises IncompatibleAddress (488, Warning 301), not an answer
  whose audio could never be sent.
- The answer to OPTIONS shows what we take (RFC 3264 9, `capabilities`): one audio stream of port 0 (so that
  nobody mistakes it for an offer and sends media) listing PCMU, PCMA and telephone-event.
- An INVITE without SDP (a delayed offer, RFC 3261 13.2.1) is answered with our offer. `stand_in` is what that
  offer answers, so our answer to it is our offer: one codec, telephone-event, sendrecv, and no address yet
  (0.0.0.0: nothing is sent until the caller's answer names one; it is no hold).
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.sip.errors import IncompatibleAddress, IncompatibleTransport, NoCommonCodec, RemoteProtocolError
from clients.sip.rtp import FRAME_SAMPLES

__all__ = ["TELEPHONE_EVENT", "Codec", "MediaDescription", "Negotiated", "SessionDescription", "build_answer",
           "capabilities", "negotiate", "stand_in"]

PCMU = 0
PCMA = 8
_STATIC = {PCMU: "PCMU", PCMA: "PCMA"}
PACKET_MS = FRAME_SAMPLES * 1000 // 8000  # the audio in each RTP packet we send, 20 ms
TELEPHONE_EVENT = 101  # the payload type our offers give telephone-event/8000 (RFC 4733)
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_MIRROR = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive", "sendrecv": "sendrecv"}
_UNSENDING = {"sendrecv": "recvonly", "sendonly": "inactive", "recvonly": "recvonly", "inactive": "inactive"}
_UNSPECIFIED = ("0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One m= section: `m=<media> <port> <proto> <fmt> ...` and its c=/a= lines."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: str | None = None  # the address of a media-level "c=IN <address_type> <addr>"
    attributes: tuple[tuple[str, str | None], ...] = ()
    address_type: str = "IP4"  # "IP4" or "IP6"

    def attr(self, name: str) -> list[str | None]:
        return [v for k, v in self.attributes if k == name]

    def rtpmap(self) -> dict[int, str]:
        """payload type -> "encoding/clock[/channels]" (upper-cased encoding name)."""
        out: dict[int, str] = {}
        for v in self.attr("rtpmap"):
            pt, _, enc = (v or "").partition(" ")
            if pt.isdigit() and enc:
                name, _, rest = enc.strip().partition("/")
                out[int(pt)] = f"{name.upper()}/{rest}"
        return out

    def direction(self, default: str = "sendrecv") -> str:
        """This stream's direction attribute, else `default` (the session-level one, RFC 4566 6)."""
        return next((k for k, _ in self.attributes if k in _DIRECTIONS), default)


@dataclass(frozen=True, slots=True)
class SessionDescription:
    origin: str
    session_name: str = "-"
    connection: str | None = None
    timing: str = "0 0"
    media: tuple[MediaDescription, ...] = ()
    attributes: tuple[tuple[str, str | None], ...] = ()
    address_type: str = "IP4"  # of the session-level connection

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        """Parse an SDP body; raises RemoteProtocolError (400) when it is not SDP."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError("SDP is not UTF-8") from exc
        origin, name, conn, conn_type, timing = None, "-", None, "IP4", "0 0"
        attrs: list[tuple[str, str | None]] = []
        media: list[dict[str, object]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if len(line) < 2 or line[1] != "=":
                raise RemoteProtocolError(f"bad SDP line {line[:40]!r}")
            kind, value = line[0], line[2:]
            cur = media[-1] if media else None
            if kind == "v" and value != "0":
                raise RemoteProtocolError(f"SDP version {value!r}")
            if kind == "o":
                origin = value
            elif kind == "s":
                name = value
            elif kind == "c":
                addr_type, addr = _connection(value)
                if cur is None:
                    conn, conn_type = addr, addr_type
                else:
                    cur["connection"], cur["address_type"] = addr, addr_type
            elif kind == "t":
                timing = value
            elif kind == "m":
                media.append(_media_line(value))
            elif kind == "a":
                k, colon, v = value.partition(":")
                pair = (k, v if colon else None)
                if cur is None:
                    attrs.append(pair)
                else:
                    cur["attributes"] = (*cur["attributes"], pair)  # type: ignore[misc]
        if origin is None:
            raise RemoteProtocolError("SDP without o= line")
        return cls(origin, name, conn, timing, tuple(MediaDescription(**m) for m in media),  # type: ignore[arg-type]
                   tuple(attrs), conn_type)

    @property
    def direction(self) -> str:
        """The session-level direction attribute (RFC 4566 6), sendrecv by default."""
        return next((k for k, _ in self.attributes if k in _DIRECTIONS), "sendrecv")

    def serialize(self) -> bytes:
        lines = ["v=0", f"o={self.origin}", f"s={self.session_name}"]
        if self.connection:
            lines.append(f"c=IN {self.address_type} {self.connection}")
        lines.append(f"t={self.timing}")
        lines += [_attr_line(a) for a in self.attributes]
        for m in self.media:
            lines.append(f"m={m.media} {m.port} {m.proto} {' '.join(m.formats)}")
            if m.connection:
                lines.append(f"c=IN {m.address_type} {m.connection}")
            lines += [_attr_line(a) for a in m.attributes]
        return ("\r\n".join(lines) + "\r\n").encode()


def _attr_line(a: tuple[str, str | None]) -> str:
    return f"a={a[0]}" if a[1] is None else f"a={a[0]}:{a[1]}"


def _connection(value: str) -> tuple[str, str]:
    """(address type, address) of a c= line."""
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise RemoteProtocolError(f"bad c= line {value!r}")
    return parts[1], parts[2].split("/")[0]  # drop a multicast TTL


def _media_line(value: str) -> dict[str, object]:
    parts = value.split()
    if len(parts) < 4:
        raise RemoteProtocolError(f"bad m= line {value!r}")
    port = parts[1].split("/")[0]
    if not port.isdigit() or int(port) > 65535:
        raise RemoteProtocolError(f"bad media port {parts[1]!r}")
    return {"media": parts[0], "port": int(port), "proto": parts[2], "formats": tuple(parts[3:]), "attributes": ()}


@dataclass(frozen=True, slots=True)
class Codec:
    payload_type: int
    name: str  # "PCMU" or "PCMA"

    @property
    def realtime_format(self) -> str:
        """The Realtime API audio format type for this codec."""
        return "audio/pcmu" if self.name == "PCMU" else "audio/pcma"

    @property
    def silence_byte(self) -> int:
        return 0xFF if self.name == "PCMU" else 0xD5


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The result of accepting an offer: what we send and receive, and where to."""

    codec: Codec
    dtmf_payload_type: int | None
    remote_host: str
    remote_port: int
    direction: str  # our direction in the answer
    media_index: int  # which m= line of the offer we took

    @property
    def sends(self) -> bool:
        """Whether we may send RTP: not on hold, and the caller named where (not so before a delayed offer's
        answer)."""
        return self.direction in ("sendrecv", "sendonly") and self.remote_host not in _UNSPECIFIED

    @property
    def held(self) -> bool:
        """Whether the caller holds the call (its offer sendonly, inactive or at 0.0.0.0, or the audio removed):
        what it sends meanwhile is hold music, if anything. A delayed offer's media before the answer is no hold."""
        return self.direction in ("recvonly", "inactive")

    @property
    def receives(self) -> bool:
        """Whether the caller is meant to send us RTP."""
        return self.direction in ("sendrecv", "recvonly")

    @property
    def removed(self) -> bool:
        """Whether the caller's last re-offer removed the audio stream (port 0, RFC 3264 8.2)."""
        return self.remote_port == 0

    @property
    def awaits_caller_rtp(self) -> bool:
        """Whether the caller's silence means it is gone: it should send and is not holding the call. A holding
        caller (a=sendonly or c=0.0.0.0, RFC 3264 8.4) may send hold music but need not, and many phones send
        nothing until they resume."""
        return self.receives and self.sends


def negotiate(offer: SessionDescription, *, keep: Codec | None = None) -> Negotiated:
    """Pick the codec for the first usable audio stream of `offer` (only `keep` when given: a re-offer, which may
    also remove the audio: see the module rules).

    Raises:
        NoCommonCodec: no audio stream with PCMU or PCMA (or with `keep`).
        IncompatibleAddress: there are such streams, but only on IPv6 addresses.
        IncompatibleTransport: audio is offered only over profiles other than RTP/AVP (SRTP).
    """
    audio = [index for index, m in enumerate(offer.media) if m.media == "audio"]
    if keep is not None and audio and all(offer.media[index].port == 0 for index in audio):
        return Negotiated(keep, None, "0.0.0.0", 0, "inactive", audio[0])  # removed: the call goes on without
    ipv6: str | None = None  # the address of a usable stream passed over for being IPv6
    profile: str | None = None  # the profile of an audio stream passed over for it
    short: int | None = None  # the maxptime of a usable stream passed over for being below our packets' 20 ms
    for index, m in enumerate(offer.media):
        if m.media != "audio" or m.port == 0:
            continue
        if not m.proto.startswith("RTP/AVP"):
            profile = profile or m.proto
            continue
        rtpmap = m.rtpmap()
        codec, dtmf = None, None
        for fmt in m.formats:
            if not fmt.isdigit():
                continue
            pt = int(fmt)
            enc = rtpmap.get(pt) or (f"{_STATIC[pt]}/8000" if pt in _STATIC else "")
            name, _, clock = enc.partition("/")
            if codec is None and name in ("PCMU", "PCMA") and clock.split("/")[0] == "8000" \
                    and keep in (None, Codec(pt, name)):
                codec = Codec(pt, name)
            elif dtmf is None and name == "TELEPHONE-EVENT" and clock.startswith("8000"):
                dtmf = pt
        if codec is None:
            continue
        maxptime = _maxptime(m, offer)
        if maxptime is not None and maxptime < PACKET_MS:
            short = maxptime
            continue
        host = m.connection or offer.connection
        if host is None:
            raise RemoteProtocolError("SDP offer without a connection address")
        if (m.address_type if m.connection else offer.address_type) != "IP4":
            ipv6 = host
            continue
        direction = _MIRROR[m.direction(offer.direction)]
        return Negotiated(codec, dtmf, host, m.port, _UNSENDING[direction] if host in _UNSPECIFIED else direction,
                          index)
    if ipv6 is not None:
        raise IncompatibleAddress(f"media address IN IP6 {ipv6}: this bridge speaks IPv4 only")
    if profile is not None:
        raise IncompatibleTransport(f"audio over {profile}: this bridge speaks plain RTP/AVP, no SRTP")
    if short is not None:
        raise NoCommonCodec(f"a=maxptime:{short}: this bridge sends {PACKET_MS} ms packets")
    raise NoCommonCodec(f"no {keep.name if keep else 'PCMU/PCMA'} audio stream in the offer")


def _maxptime(m: MediaDescription, offer: SessionDescription) -> int | None:
    """The stream's a=maxptime in ms (RFC 4566 6), else the session's; None without one (or an unreadable one)."""
    values = m.attr("maxptime") or [v for k, v in offer.attributes if k == "maxptime"]
    value = (values[0] or "").strip() if values else ""
    return int(value) if value.isdigit() else None


def build_answer(offer: SessionDescription, chosen: Negotiated, *, local_host: str, rtp_port: int,
                 session_id: int, session_version: int = 1, ptime_ms: int = PACKET_MS) -> SessionDescription:
    """Our SDP answer to `offer` (RFC 3264 6): the chosen stream on `rtp_port` (unless the offer removed it), every
    other stream rejected."""
    media: list[MediaDescription] = []
    for index, m in enumerate(offer.media):
        if index != chosen.media_index or chosen.removed:
            media.append(MediaDescription(m.media, 0, m.proto, m.formats))
            continue
        c = chosen.codec
        formats = [str(c.payload_type)]
        attrs: list[tuple[str, str | None]] = [("rtpmap", f"{c.payload_type} {c.name}/8000")]
        if chosen.dtmf_payload_type is not None:
            formats.append(str(chosen.dtmf_payload_type))
            attrs += [("rtpmap", f"{chosen.dtmf_payload_type} telephone-event/8000"),
                      ("fmtp", f"{chosen.dtmf_payload_type} 0-16")]
        attrs += [("ptime", str(ptime_ms)), (chosen.direction, None)]
        media.append(MediaDescription("audio", rtp_port, m.proto, tuple(formats), None, tuple(attrs)))
    return SessionDescription(origin=f"stepaudio-rt {session_id} {session_version} IN IP4 {local_host}",
                              session_name="stepaudio-rt", connection=local_host, media=tuple(media))


def stand_in(codec: Codec, dtmf_payload_type: int | None) -> tuple[SessionDescription, Negotiated]:
    """The offer we act as if we had received when an INVITE has none, and the media of our answer to it (see the
    module rules)."""
    formats = [str(codec.payload_type)]
    attrs: list[tuple[str, str | None]] = [("rtpmap", f"{codec.payload_type} {codec.name}/8000")]
    if dtmf_payload_type is not None:
        formats.append(str(dtmf_payload_type))
        attrs.append(("rtpmap", f"{dtmf_payload_type} telephone-event/8000"))
    stream = MediaDescription("audio", 9, "RTP/AVP", tuple(formats), attributes=tuple(attrs))
    offer = SessionDescription(origin="- 0 0 IN IP4 0.0.0.0", connection="0.0.0.0", media=(stream,))
    return offer, Negotiated(codec, dtmf_payload_type, "0.0.0.0", 9, "sendrecv", 0)


def capabilities(local_host: str, session_id: int) -> SessionDescription:
    """What we take, for a response to OPTIONS (see the module rules); `session_id` must differ each time (RFC 3264
    9)."""
    formats = (str(PCMU), str(PCMA), str(TELEPHONE_EVENT))
    attrs: tuple[tuple[str, str | None], ...] = (
        ("rtpmap", f"{PCMU} PCMU/8000"), ("rtpmap", f"{PCMA} PCMA/8000"),
        ("rtpmap", f"{TELEPHONE_EVENT} telephone-event/8000"), ("fmtp", f"{TELEPHONE_EVENT} 0-16"))
    return SessionDescription(origin=f"stepaudio-rt {session_id} {session_id} IN IP4 {local_host}",
                              session_name="stepaudio-rt", connection=local_host,
                              media=(MediaDescription("audio", 0, "RTP/AVP", formats, attributes=attrs),))
