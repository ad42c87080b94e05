"""The MQTT bus's sans-I/O core: its configuration (from --mqtt-url), what goes where (topics, message building and
sizing), command parsing, and the directory of which node has which session. No broker, no clock (time comes in
as an argument). The topic layout and the bus's rules are in controller/mqtt_bus.py's docstring."""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from controller.errors import ConfigError, ProtocolError, SessionClosed
from speech_decoder.sentences import clean_for_speech

COMMANDS = ("say", "instructions", "hangup")
ERROR_REPLY = "error"  # .../cmd/error: where commands are answered, not a command
LIFECYCLE = frozenset({
    "session.opened", "session.closed", "session.created", "session.updated",
    "response.created", "response.done", "response.output_audio.done",
    "response.output_audio_transcript.done", "response.output_text.done",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed",
    "error",
})


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttConfig:
    """Where the broker is and how the bus behaves; built from --mqtt-url by `parse_mqtt_url`."""

    host: str
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = None
    prefix: str = "stepaudio"
    node_id: str = ""
    buffer: int = 10000  # messages held while the broker is slow or away
    metrics_interval: float = 10.0
    keepalive: int = 30
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    publish_timeout: float = 10.0
    drain_timeout: float = 2.0  # at shutdown, time given to publish what is buffered
    max_message: int = 262144  # bytes of one MQTT packet the broker accepts (its max_packet_size)

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("--mqtt-url needs a host, e.g. mqtt://127.0.0.1:1883")
        if not 0 < self.port < 65536:
            raise ConfigError(f"--mqtt-url port {self.port} is out of range")
        for name, value in (("prefix", self.prefix), ("node_id", self.node_id)):
            # NUL is forbidden in topic names: the broker drops the connection, which looked like a timeout
            if not value or any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/"):
                raise ConfigError(f"--mqtt-url {name}={value!r} is not a usable topic part")
        if self.prefix.startswith("$"):  # the broker's own ($SYS): refused, or unseen by '#' subscribers
            raise ConfigError(f"--mqtt-url prefix={self.prefix!r}: topics starting with '$' are the broker's")
        if "/" in self.node_id:
            raise ConfigError(f"--mqtt-url node_id={self.node_id!r} must be one topic level (no '/')")
        if self.buffer < 1:
            raise ConfigError("--mqtt-url buffer must be at least 1")
        if self.max_message < 1024:  # a stub, a status or a cmd/error reply must still fit
            raise ConfigError("--mqtt-url max_message must be at least 1024 bytes")
        floats = (self.metrics_interval, self.backoff_initial, self.backoff_max, self.publish_timeout,
                  self.drain_timeout)
        if not all(math.isfinite(x) for x in floats):  # nan passed every comparison: metrics never came again
            raise ConfigError("--mqtt-url metrics_interval, backoff and timeout values must be finite numbers")
        if self.keepalive > 65535:  # MQTT's two-byte field: the bus failed at every connect, with a traceback
            raise ConfigError("--mqtt-url keepalive must be at most 65535 (seconds)")
        if self.metrics_interval <= 0 or self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise ConfigError("--mqtt-url metrics_interval and backoff values must be positive, "
                              "backoff_max >= backoff_initial")
        if self.keepalive < 1 or self.publish_timeout <= 0 or self.drain_timeout < 0:
            raise ConfigError("--mqtt-url keepalive, publish_timeout and drain_timeout must be positive")


_INT_OPTIONS = ("buffer", "keepalive", "max_message")
_FLOAT_OPTIONS = ("metrics_interval", "backoff_initial", "backoff_max", "publish_timeout", "drain_timeout")


def parse_mqtt_url(url: str, *, default_node_id: str, default_password: str | None = None) -> MqttConfig:
    """mqtt[s]://[user[:password]@]host[:port][?prefix=..&node_id=..&buffer=..&metrics_interval=..
    &keepalive=..&backoff_initial=..&backoff_max=..&publish_timeout=..&drain_timeout=..&max_message=..]

    `default_password` is the user's password where the URL gives none (one on a command line shows in `ps`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"--mqtt-url {_without_password(url)!r}: the scheme must be mqtt:// or mqtts://")
    try:
        port = parts.port
    except ValueError as exc:  # with credentials, often a password with a '#', '?' or '/', which end the host part
        hint = (" (in a user name or password, write '#' '?' '/' '@' ':' as %23 %3F %2F %40 %3A)"
                if "@" in url else "")
        raise ConfigError(f"--mqtt-url {_without_password(url)!r}: bad port{hint}") from exc
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    known = {"prefix", "node_id", *_INT_OPTIONS, *_FLOAT_OPTIONS}
    unknown = sorted(set(query) - known)
    if unknown:
        raise ConfigError(f"--mqtt-url: unknown option(s) {unknown}; known: {sorted(known)}")
    options = {k: _number_option(k, query[k]) for k in (*_INT_OPTIONS, *_FLOAT_OPTIONS) if k in query}
    return MqttConfig(
        # `port or ...` made an explicit :0 the default port; it is refused as out of range
        host=parts.hostname or "", port=(8883 if parts.scheme == "mqtts" else 1883) if port is None else port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else default_password if parts.username else None,
        # an empty ?prefix= (`prefix=$PREFIX` with it unset) is refused, as an empty node_id is, not made the default
        prefix=query.get("prefix", "stepaudio").strip("/"),
        node_id=query.get("node_id", default_node_id), **options)  # type: ignore[arg-type]


def _number_option(name: str, text: str) -> int | float:
    """A numeric ?option= of the URL. int()'s and float()'s own message ("invalid literal for int() with base 10:
    'abc'") named no option: with several in the URL, the user could not tell which one was wrong."""
    kind, what = (int, "a whole number") if name in _INT_OPTIONS else (float, "a number")
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"--mqtt-url {name}={text!r} is not {what}") from None


def _without_password(url: str) -> str:
    """The URL as an error may show it: terminals and logs are no place for the broker's password. Everything
    from the first ':' after the user name to the '@' goes, so a password the URL parser misreads goes too."""
    return re.sub(r"^([^:/]*://[^:/@?#]*:)[^@]*@", r"\1***@", url)


# ---- pure helpers: what goes where --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Command:
    session_id: str
    name: str
    payload: dict[str, object]


class BadCommand(ValueError):
    """A command message we cannot run; the text goes back on .../cmd/error."""


def _part(value: str) -> str:
    """A topic level from an id we do not control: no separators or wildcards."""
    return "".join("_" if c in "/+#\0" else c for c in value) or "_"


_STUB_IDS = ("event_id", "response_id", "item_id")  # what lets a reader match a stub to other events


def event_message(prefix: str, session_id: str, event: dict[str, object], max_message: int) -> Outgoing:
    """The message of one session event; a stub in its place when the packet would exceed max_message."""
    type_ = str(event.get("type", "unknown"))
    topic = f"{prefix}/v1/sessions/{_part(session_id)}/events/{_part(type_)}"
    payload = json.dumps(event, separators=(",", ":")).encode()
    if packet_size(topic, payload) > max_message:
        stub = {"type": type_, **{k: event[k] for k in _STUB_IDS if k in event}, "truncated": True,
                "bytes": len(payload)}
        payload = json.dumps(stub, separators=(",", ":")).encode()
    return Outgoing(topic=topic, payload=payload, qos=1 if type_ in LIFECYCLE else 0)


def packet_size(topic: str, payload: bytes) -> int:
    """An upper bound of the PUBLISH packet's size: fixed header (<= 5 bytes), topic length (2), packet id (2),
    MQTT 5 properties (1; we send none) around the topic and payload."""
    return 10 + len(topic.encode()) + len(payload)


def session_of(prefix: str, topic: str) -> str:
    """The session level of a topic under <prefix>/v1/sessions/."""
    return topic.removeprefix(f"{prefix}/v1/sessions/").split("/")[0]


def error_topic(prefix: str, command_topic: str) -> str:
    """Where a command is answered: the cmd/error of the session its topic names, however deep the topic."""
    return f"{prefix}/v1/sessions/{_part(session_of(prefix, command_topic))}/cmd/{ERROR_REPLY}"


def command_error_message(prefix: str, topic: str, payload: bytes, exc: Exception, node_id: str) -> Outgoing:
    """The answer on cmd/error to a command that could not run: what went wrong, in words and as a stable `kind`,
    with the command's payload (base64 when it is not text) so that a dashboard can show what was refused."""
    quoted = payload[:1024].decode() if _is_text(payload[:1024]) else base64.b64encode(payload[:1024]).decode()
    body = {"topic": topic, "error": error_text(exc), "kind": error_kind(exc), "node_id": node_id, "payload": quoted}
    return Outgoing(topic=error_topic(prefix, topic), payload=json.dumps(body, separators=(",", ":")).encode(), qos=1)


def error_kind(exc: Exception) -> str:
    """A code that programs can match: a session's own refusals carry the Realtime error code the same refusal has
    on the WebSocket (e.g. conversation_already_has_active_response); Python class names are no API."""
    if isinstance(exc, BadCommand):
        return "bad_command"
    if isinstance(exc, KeyError):
        return "unknown_session"
    if isinstance(exc, ProtocolError):
        return exc.code
    if isinstance(exc, SessionClosed):
        return "session_closed"
    return "command_failed"


def error_text(exc: Exception) -> str:
    """What a failed command's answer and the log say. str(KeyError("x")) is "'x'" (the key's repr): both get the
    message itself."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def _is_text(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return False
    return True


def session_status_message(prefix: str, session_id: str, node_id: str | None, now: float) -> Outgoing:
    """The retained status of a live session, or (node_id None) the empty retained message that deletes it."""
    payload = b"" if node_id is None else json.dumps(
        {"status": "live", "session_id": session_id, "node_id": node_id, "time": now}, separators=(",", ":")).encode()
    return Outgoing(topic=f"{prefix}/v1/sessions/{_part(session_id)}/status", payload=payload, qos=1, retain=True)


def subscriptions(prefix: str) -> list[str]:
    # cmd/# rather than one filter per known command: a mistyped or unknown command gets an answer too.
    # The statuses feed the Directory.
    return [f"{prefix}/v1/sessions/+/cmd/#", f"{prefix}/v1/sessions/+/status", f"{prefix}/v1/nodes/+/status"]


@dataclass(slots=True)
class Directory:
    """Which node has which live session, from the retained statuses every node publishes (a pure core)."""

    node_id: str
    local: set[str] = field(default_factory=set)  # this node's live sessions
    owners: dict[str, str] = field(default_factory=dict)  # session -> node, as retained session statuses say
    offline: set[str] = field(default_factory=set)  # nodes whose status says offline

    def owned_elsewhere(self, session_id: str) -> bool:
        return session_id not in self.local and self.owners.get(session_id, self.node_id) != self.node_id

    def observe(self, prefix: str, topic: str, payload: bytes) -> list[tuple[str, str | None]] | None:
        """Take in a status message. Returns the session statuses to publish, (session, None) to clear a ghost or
        (session, this node) to restore one of ours that another node cleared (it saw our will on a short link
        loss); None for a topic that is no status."""
        levels = topic.removeprefix(f"{prefix}/v1/").split("/")
        if len(levels) != 3 or levels[2] != "status" or levels[0] not in ("nodes", "sessions"):
            return None
        body = _json_object(payload)
        # Only what this message changes is looked at: scanning every session at each status made a connect to a
        # broker holding N live sessions' statuses cost N*N steps (20000: 16 s of the event loop's CPU).
        if levels[0] == "nodes":
            if levels[1] == self.node_id:  # we are alive, whatever a will (seen as the broker shut down) said
                return []
            if body.get("status") == "online":
                self.offline.discard(levels[1])
                return []
            self.offline.add(levels[1])
            ghosts = [sid for sid, node in self.owners.items() if node == levels[1]]
        elif levels[1] in self.local and body.get("node_id") != self.node_id:
            return [(levels[1], self.node_id)]
        elif isinstance(body.get("node_id"), str):
            node = self.owners[levels[1]] = str(body["node_id"])
            ghost = node in self.offline or (node == self.node_id and levels[1] not in self.local)
            ghosts = [levels[1]] if ghost else []
        else:  # cleared: the session ended
            self.owners.pop(levels[1], None)
            return []
        for sid in ghosts:
            del self.owners[sid]
        return [(sid, None) for sid in ghosts]


def _json_object(payload: bytes) -> dict[str, object]:
    try:
        body = json.loads(payload) if payload else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def parse_command(prefix: str, topic: str, payload: bytes) -> Command | None:
    """Check a command message against its topic's schema; raises BadCommand.

    Returns None for a reply on .../cmd/error: answering it would start an endless exchange of errors
    between the nodes that share a broker (or with ourselves, since we subscribe to our own replies)."""
    head = f"{prefix}/v1/sessions/"
    rest = topic[len(head):].split("/") if topic.startswith(head) else []
    if len(rest) == 3 and rest[1] == "cmd" and rest[2] == ERROR_REPLY:
        return None
    if len(rest) < 3 or rest[1] != "cmd":
        raise BadCommand(f"not a command topic: {topic}")
    if len(rest) > 3 or rest[2] not in COMMANDS:
        raise BadCommand(f"unknown command {'/'.join(rest[2:])!r}; the commands are {', '.join(COMMANDS)}")
    session_id, _, name = rest
    body: object = {}
    if payload.strip():
        try:
            # decoded here: json.loads would take bytes as UTF-16 or UTF-32 too (\xff\xfe reads as a UTF-16 BOM)
            body = json.loads(payload.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise BadCommand(f"payload is not UTF-8 text (byte {payload[exc.start]:#04x} at {exc.start}): "
                             "commands are JSON objects") from exc
        except json.JSONDecodeError as exc:
            raise BadCommand(f"payload is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadCommand("payload must be a JSON object")
    required = {"say": "text", "instructions": "instructions"}.get(name)
    if required is not None and not isinstance(body.get(required), str):
        raise BadCommand(f"{name} needs a string field {required!r}")
    if name == "say" and not clean_for_speech(str(body["text"])):  # emoji, symbols: a reply with no audio
        raise BadCommand("say needs a text with something to speak (letters or digits)")
    return Command(session_id=session_id, name=name, payload=body)
