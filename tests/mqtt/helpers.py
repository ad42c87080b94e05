"""A real mosquitto broker in a subprocess, an aiomqtt watcher that records what it receives, and a serve stopped
while the broker is held."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import signal
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from tests.conftest import free_port, missing_peer


class Mosquitto:
    """Debian's mosquitto on a free loopback port; can be stopped, killed and started again on that port."""

    def __init__(self, workdir: Path, *, persistent: bool = False, options: tuple[str, ...] = ()) -> None:
        """options: more lines of mosquitto.conf, e.g. "max_packet_size 20000"."""
        if shutil.which("mosquitto") is None:
            missing_peer("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        # `user`: as root, mosquitto would switch to user "mosquitto", which cannot write our temp dir.
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "log_type all",
                 f"user {getpass.getuser()}"]
        if persistent:  # sessions of offline subscribers survive a restart, QoS 0 included
            lines += ["persistence true", f"persistence_location {self.dir}/", "queue_qos0_messages true"]
        lines += options
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log_path = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto not listening on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    at: float  # time.monotonic() on arrival

    def json(self) -> dict:
        return json.loads(self.payload)


@dataclass
class Watcher:
    """Subscribes at QoS 2, so each message arrives at the QoS it was published with."""

    client: aiomqtt.Client
    messages: list[Received] = field(default_factory=list)
    _task: asyncio.Task | None = None
    _new: asyncio.Event = field(default_factory=asyncio.Event)

    async def _read(self) -> None:
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            self.messages.append(Received(m.topic.value, payload, m.qos, m.retain, time.monotonic()))
            self._new.set()

    async def wait_for(self, topic_suffix: str, *, timeout: float = 30.0, start: int = 0,
                       where: Callable[[Received], bool] = lambda m: True) -> Received:
        """The first message from index `start` on whose topic ends so (and that `where` takes)."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages[start:]:
                if m.topic.endswith(topic_suffix) and where(m):
                    return m
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no message on *{topic_suffix} in {timeout}s; got "
                                   f"{[m.topic for m in self.messages][-30:]}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), remaining)
            except TimeoutError:
                pass

    def on(self, topic_suffix: str) -> list[Received]:
        return [m for m in self.messages if m.topic.endswith(topic_suffix)]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.client.__aexit__(None, None, None)


async def watch(port: int, *topics: str, identifier: str | None = None, persistent: bool = False) -> Watcher:
    if persistent:  # MQTT 3.1.1 with clean_session=False: the broker queues for us while we are away
        client = aiomqtt.Client("127.0.0.1", port, identifier=identifier, clean_session=False,
                                protocol=aiomqtt.ProtocolVersion.V311)
    else:
        client = aiomqtt.Client("127.0.0.1", port, identifier=identifier, protocol=aiomqtt.ProtocolVersion.V5)
    await client.__aenter__()
    w = Watcher(client)
    w._task = asyncio.create_task(w._read())
    for t in topics:
        await client.subscribe(t, qos=2)
    return w


class DelayProxy:
    """A TCP proxy in the test's event loop that holds every chunk `delay` seconds, each way: a distant broker."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.server: asyncio.Server | None = None
        self.port = 0
        self._sockets: set[asyncio.StreamWriter] = set()  # both ends of every proxied connection

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._sockets |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)
        self._sockets -= {writer, up_writer}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward each chunk `delay` after it was read, keeping order, without holding up the reads."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data or writer.is_closing():  # the end, or cut()
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        forwarder = asyncio.create_task(forward())
        try:
            while True:
                data = await reader.read(65536)
                queue.put_nowait((loop.time() + self.delay, data))
                if not data:
                    break
            await forwarder
        finally:
            forwarder.cancel()

    def cut(self) -> None:
        """Break every connection now: what the proxy holds is lost, as on a network failure."""
        for writer in self._sockets:
            writer.transport.abort()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self.cut()


async def publish(port: int, topic: str, payload: bytes | str, qos: int = 1) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.publish(topic, payload, qos=qos)


async def retained_session_statuses(port: int) -> dict[str, dict]:
    """What a dashboard opened now learns: the retained session statuses (a barrier message ends the wait)."""
    w = await watch(port, "stepaudio/v1/sessions/+/status", "test/barrier")
    try:
        await publish(port, "test/barrier", b"x")
        await w.wait_for("test/barrier", timeout=10)
    finally:
        await w.close()
    return {m.topic.split("/")[3]: m.json() for m in w.messages if m.topic.endswith("/status")}


async def eventually(check, timeout: float = 20.0, interval: float = 0.2):  # noqa: ANN001, ANN201
    """Poll `check()` until it returns a truthy value (that value is returned)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)


def _wait_for(log: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"no {text!r} in:\n{log.read_text()}"
        time.sleep(0.01)


def ctrl_c_while_the_broker_takes_online(command: list[str], tmp_path: Path, *, held_at: str, loaded: str,
                                         group: bool = False) -> tuple[int, str]:
    """Runs `command` (a serve, --mqtt-url left to add) against a broker held once the log has `held_at`; once it
    has `loaded` (the last model's) and the bus waits for the broker to take "online", SIGINTs the server (its
    process group with `group`, as a terminal's Ctrl-C does), frees the broker 0.5 s later and returns the exit
    status and the log of a server that must exit within 90 s."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    log = tmp_path / "serve.log"
    try:
        with open(log, "wb") as out:
            # drain_timeout: the bus would wait this long for a broker that does not take "online"
            proc = subprocess.Popen([*command, "--mqtt-url", f"{broker.url}?drain_timeout=60"], stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for(log, held_at)  # a line once the bus has connected and published its "loading"
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGSTOP)
            try:
                _wait_for(log, loaded)
                time.sleep(0.5)  # the bus has sent "online" and waits for the broker's answer
                (os.killpg if group else os.kill)(proc.pid, signal.SIGINT)
                time.sleep(0.5)  # the signal heard while the broker is still held
            finally:
                broker.proc.send_signal(signal.SIGCONT)
            code = proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # torchrun's ranks too
                proc.wait()
    finally:
        broker.stop()
    return code, log.read_text()
