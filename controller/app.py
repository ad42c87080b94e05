"""Wiring: load the profile's models, start the server, run sessions until stopped."""

from __future__ import annotations

import asyncio
import uuid
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, Protocol

from prometheus_client import Gauge
from websockets.asyncio.server import ServerConnection

from controller.chat_url import check_chat_url
from controller.errors import ConfigError, LoadCancelled
from controller.metrics import Metrics
from controller.pipeline import ChecksChat, EmbeddedConfig, EmbeddedPipeline, OwnsMetrics, SpeechPipeline
from controller.realtime.server_events import Json
from controller.server import RealtimeServer, ServerConfig, VoiceList
from controller.session import Session
from controller.session_defaults import SessionDefaults
from lm_engine.assets import AssetError, embedded_gguf_ready
from model_files.cache import cache_hint, check_writable, default_cache_dir
from streaming_tokenizer.assets import AsrAssetError, whisper_base_to_assemble
from streaming_tokenizer.whisper_asr import normalize_language, uses_whisper_base, whisper_languages

logger = logging.getLogger(__name__)

CHAT_CHECK_EVERY_S = 5.0  # /healthz asks a --chat-url server whether it answers at most this often
SHUTDOWN_DRAIN_S = 2.0  # at shutdown, time given to the events still queued for each client
MQTT_PASSWORD_ENV = "STEPAUDIO_RT_MQTT_PASSWORD"  # the --mqtt-url user's password, where the URL gives none


class EventSink(Protocol):
    """Something that watches sessions (an event bus). Called on the event loop: must not block."""

    def session_opened(self, session_id: str) -> None: ...
    def session_event(self, session_id: str, event: Json) -> None: ...
    def session_closed(self, session_id: str) -> None: ...
    async def close(self) -> None: ...  # flush and disconnect, at server shutdown


@dataclass(frozen=True, slots=True, kw_only=True)
class AppConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    profile: str = "embedded"
    model_path: Path | None = None
    chat_url: str | None = None
    mqtt_url: str | None = None
    speculation: bool = True
    early_prefill: bool = True
    pause_ms: int = 200
    language: str = "en"
    threads: int = 2
    lm_threads: int = 1
    lm_nice: int = 0
    lm_slots: int = 1
    tp_step_timeout_s: float = 60.0
    max_pending_turns: int = 2  # SessionDefaults'
    max_input_audio_s: float = 300.0  # SessionDefaults'

    def __post_init__(self) -> None:
        if self.profile in ("step-audio", "full-random") and self.model_path is None:  # tiny writes its own
            raise ConfigError(f"--profile {self.profile} needs --model-path DIR"
                              + (" (stepaudio-rt make-checkpoint --profile full-random DIR writes a random one)"
                                 if self.profile == "full-random" else ""))
        if self.profile == "embedded" and self.model_path is not None:  # else the folder goes unused, unsaid
            raise ConfigError(f"--model-path is a Step-Audio model folder, which the {self.profile} profile does not "
                              "use: add --profile step-audio (or tiny, full-random)")
        if not 50 <= self.pause_ms <= 2000:
            raise ConfigError("--pause-ms must be between 50 and 2000")
        if self.max_pending_turns < 0:
            raise ConfigError("--max-pending-turns must be 0 (no limit) or more")
        if not 10 <= self.max_input_audio_s <= 3600:
            raise ConfigError("--max-input-audio-s must be between 10 and 3600")
        if self.chat_url is not None:
            check_chat_url(self.chat_url)
        # Every profile transcribes the user with Whisper in this language (the Step-Audio ones where the embedded
        # extra is installed): else every turn would fail there, after a model load for nothing.
        language = normalize_language(self.language)
        try:
            known = whisper_languages()
        except ImportError:  # no faster-whisper: a Step-Audio profile then makes no transcripts, in any language
            known = None
        if known is not None and language not in known:  # None ("") too: else served as English without a word
            raise ConfigError(f"--language {self.language!r} is not one of Whisper's language codes "
                              "(en, de, fr, es, zh, ja, ...)")


def load_pipeline(config: AppConfig, cancel: threading.Event | None = None) -> SpeechPipeline:
    """The profile's models, loaded one after another (minutes with the real Step-Audio checkpoints): once `cancel`
    is set the load stops before the next one with LoadCancelled."""
    if config.profile == "embedded":
        try:
            return EmbeddedPipeline(EmbeddedConfig(language=config.language, threads=config.threads,
                                                    lm_threads=config.lm_threads, chat_url=config.chat_url,
                                                    lm_nice=config.lm_nice,
                                                    lm_slots=config.lm_slots), cancel)
        except (AssetError, AsrAssetError) as exc:  # a model package missing or damaged: the message says which
            raise ConfigError(f"cannot prepare the embedded models: {exc}") from exc
        except OSError as exc:  # most likely the cache the chat LM (and Whisper base) are assembled into
            raise _embedded_cache_error(exc) from exc
    if config.profile in ("step-audio", "tiny", "full-random"):
        from controller.step_audio_pipeline import load_step_audio  # imports torch only for these profiles
        return load_step_audio(config, cancel)
    raise ConfigError(f"profile {config.profile!r} is not available in this build yet")


def _embedded_cache_error(exc: OSError) -> ConfigError:
    return ConfigError(f"cannot prepare the embedded models: {exc}{cache_hint(exc, '1 GB')}")


def check_cache(config: AppConfig) -> None:
    """The embedded chat LM, and Whisper base for a --language other than English (every profile transcribes with
    it), are assembled into the cache on their first start: a cache that cannot be written (a read-only home, a path
    through a file) was said only after 'listening on' and the other models' loads."""
    chat_lm = config.profile == "embedded" and not config.chat_url and not embedded_gguf_ready()
    whisper = uses_whisper_base(config.language) and whisper_base_to_assemble()
    if not (chat_lm or whisper):
        return
    try:
        check_writable(default_cache_dir())
    except OSError as exc:
        if config.profile == "embedded":
            raise _embedded_cache_error(exc) from exc
        from controller.step_audio_setup import whisper_cache_error  # as the Step-Audio profiles' load says it
        raise whisper_cache_error(config.language, exc) from exc


def _reachable_host(host: str) -> str:
    """The address to print for a listening host: a browser on this machine cannot open http://0.0.0.0/ (Chrome
    blocks it; others give no microphone there, not being localhost), but 127.0.0.1 reaches every address."""
    wildcards = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}
    return wildcards.get(host, f"[{host}]" if ":" in host else host)


class App:
    """One server process: a pipeline shared by all sessions, each session isolated in its own task."""

    def __init__(self, config: AppConfig, pipeline: SpeechPipeline | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.pipeline = pipeline
        self.sessions: dict[str, Session] = {}
        self.sinks: list[EventSink] = []  # event buses (MQTT) that see every session's events
        self.server = RealtimeServer(config.server, self.metrics, self._session, self._chat_problem, self._voices)
        self._chat_check: asyncio.Future[str | None] | None = None  # the last ask of the pipeline's chat_problem()
        self._chat_checked_at = 0.0
        self.cancel_load = threading.Event()  # set by a stop signal: the load stops before its next model
        self.loading = False  # while load_pipeline runs: what a second stop signal cuts short
        Gauge("stepaudio_session_tasks", "Tasks, timers and transcriptions held by live sessions",
              registry=self.metrics.registry).set_function(
            lambda: sum(s.live_tasks for s in self.sessions.values()))
        Gauge("stepaudio_buffered_audio_seconds", "Input audio held by live sessions",
              registry=self.metrics.registry).set_function(
            lambda: sum(s.audio.kept_seconds for s in self.sessions.values()))
        self.defaults = SessionDefaults(speculation=config.speculation, pause_ms=config.pause_ms,
                                        # a --chat-url server has no prompt-cache warm-up to take: the speech
                                        # would be transcribed each second for nothing
                                        early_prefill=config.early_prefill and config.chat_url is None,
                                        max_event_bytes=config.server.max_event_bytes,
                                        max_pending_turns=config.max_pending_turns,
                                        max_input_audio_s=config.max_input_audio_s)

    async def start(self, stop: asyncio.Event | None = None) -> None:
        """Listen, load the models, then accept sessions; not the last if `stop` was set during the load."""
        if self.pipeline is None and (self.config.profile != "embedded" or os.environ.get("WORLD_SIZE", "1") != "1"):
            from controller.step_audio_setup import check_model_folder
            check_model_folder(self.config)
        if self.pipeline is None:
            check_cache(self.config)
        if self.config.mqtt_url:
            from controller.mqtt_protocol import parse_mqtt_url
            password = os.environ.get(MQTT_PASSWORD_ENV) or None
            # Checked before listening (and before the models load): a mistyped URL is the one error line, not one
            # after "listening on"; parsed again once the port, part of the default node id, is known.
            parse_mqtt_url(self.config.mqtt_url, default_node_id="check", default_password=password)
        await self.server.start()
        logger.info("listening on http://%s:%d (profile %s)", self.config.server.host, self.server.port,
                    self.config.profile)
        bus = None
        if self.config.mqtt_url:
            mqtt = parse_mqtt_url(self.config.mqtt_url, default_node_id=f"{socket.gethostname()}-{self.server.port}",
                                  default_password=password)
            # Before the load, which takes minutes with the real checkpoints: the bus says the node is "loading"
            # (it said nothing of the node until it was ready).
            from controller.mqtt_bus import MqttBus  # the optional `mqtt` extra
            bus = MqttBus(mqtt, self.metrics, self.command, ready=self.pipeline is not None,
                          meta={"port": self.server.port, "profile": self.config.profile})
            await bus.start()
            self.sinks.append(bus)
        # A stop signal is heard at each await: after each, a stopped server goes no further (no model load, no
        # "ready" said to the bus or in the log).
        stopped = stop.is_set if stop is not None else lambda: False
        if self.pipeline is None and not stopped():
            loop = asyncio.get_running_loop()
            self.loading = True
            try:
                self.pipeline = await loop.run_in_executor(None, load_pipeline, self.config, self.cancel_load)
            except LoadCancelled:  # a stop signal's: its line is out, and run_app says "stopped"
                return
            finally:
                self.loading = False
        if stopped():
            return
        if isinstance(self.pipeline, OwnsMetrics):
            self.pipeline.register_metrics(self.metrics.registry)
        if bus is not None and not bus.ready:
            await bus.set_ready()
            if stopped():  # a signal while the broker took "online": the bus says "offline" at the close
                return
        self.server.ready = True
        where = f"{_reachable_host(self.config.server.host)}:{self.server.port}"
        logger.info("ready: ws://%s/v1/realtime  page: http://%s/", where, where)

    async def _chat_problem(self) -> str | None:
        """Why the chat LM cannot answer now (a --chat-url server down), for /healthz: asked of the pipeline at most
        every CHAT_CHECK_EVERY_S and one ask at a time, since a load balancer polls often and each ask is a request
        to that server."""
        pipeline = self.pipeline
        if not isinstance(pipeline, ChecksChat):  # pipelines whose chat LM can be down have one
            return None
        now = time.monotonic()
        if self._chat_check is None or self._chat_check.done() and now - self._chat_checked_at >= CHAT_CHECK_EVERY_S:
            self._chat_checked_at = now
            self._chat_check = asyncio.ensure_future(asyncio.to_thread(pipeline.chat_problem))
        return await asyncio.shield(self._chat_check)  # a probe that hangs up leaves the ask to the others

    def _voices(self) -> VoiceList | None:
        if self.pipeline is None:
            return None
        # A profile that speaks every name in its one voice (pipeline.voices None) offers that voice alone.
        names = self.pipeline.voices or {self.pipeline.default_voice}
        return VoiceList(default=self.pipeline.default_voice, names=tuple(sorted(names)))

    async def _session(self, ws: ServerConnection, model: str | None, kind: str) -> None:
        if self.pipeline is None:  # the server refuses sessions until ready; this is a second guard
            await ws.close(1013, "loading")
            return
        # Unique across servers: several nodes may share one event bus and one load balancer.
        session_id = f"sess_{uuid.uuid4().hex[:16]}"
        session = Session(session_id=session_id, model=model, pipeline=self.pipeline, metrics=self.metrics,
                          defaults=self.defaults, kind=kind)
        session.observer = self._observe if self.sinks else None
        self.sessions[session_id] = session
        for sink in self.sinks:
            sink.session_opened(session_id)
        try:
            await session.run(ws)
        except Exception:  # one session's failure never touches another
            logger.exception("session %s crashed", session_id)
            await ws.close(1011, "internal error")  # not the 1000 (normal) that the handler's return would send
        finally:
            del self.sessions[session_id]
            for sink in self.sinks:
                sink.session_closed(session_id)

    def _observe(self, session_id: str, event: Json) -> None:
        for sink in self.sinks:
            sink.session_event(session_id, event)

    async def command(self, session_id: str, name: str, payload: dict[str, object]) -> None:
        """An operator's command for one session (from the event bus): say, hangup, instructions."""
        session = self.sessions.get(session_id)
        if session is None:
            raise KeyError(f"no session {session_id!r}")
        if name == "say":
            await session.say(str(payload.get("text", "")))
        elif name == "instructions":
            await session.set_instructions(str(payload.get("instructions", "")))
        elif name == "hangup":
            await session.hangup()
        else:
            raise ValueError(f"unknown command {name!r}")

    async def close(self) -> None:
        # A client learns that its reply ended (response.done) before its connection closes with 1001.
        await asyncio.gather(*(s.end_replies(SHUTDOWN_DRAIN_S) for s in list(self.sessions.values())))
        await self.server.close()
        for session in list(self.sessions.values()):
            await session.close()
        for sink in self.sinks:
            await sink.close()
        if self.pipeline is not None:
            # Off the loop: the models' release may wait for their threads, and a second stop signal must be heard.
            await asyncio.to_thread(self.pipeline.close)


# How a stop signal during the load stops: between two models (minutes each with the real Step-Audio checkpoints).
_LOAD_STOP = " before the next model loads (the one loading now cannot be cut short; Ctrl-C again to stop now)"


def _stop_now(sig: signal.Signals, during: str) -> None:
    """Ends the process in the middle of a model load, which its thread cannot be asked to cut short, or of a stop
    that a user will not wait for (sessions' last events, the models' release). During a load nothing was served,
    so nothing is left to close; what a first start leaves half made in the cache the next one makes again (a
    `.part` entry removed under model_files.cache's lock, an incomplete tiny folder)."""
    logger.info("%s: stopped during the %s", sig.name, during)
    exit_now(0)


def exit_now(code: int) -> NoReturn:
    """Ends the process at once, its log and output flushed, without Python's finalisation: that collects and frees
    every object the models' libraries made (torch, onnxruntime, Whisper), which kept a tiny-profile server 3-5.7 s
    past its "stopped" line on 2 cores (gdb: Py_FinalizeEx's garbage collection). Call it only when nothing is left
    to close: the sessions, sinks and pipeline are (the engine's close told tensor-parallel followers to exit), or
    nothing was served yet; worker threads still busy (a synthesis, a llama.cpp task) end with the process."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


async def run_app(config: AppConfig, *, install_signals: bool = False) -> None:
    """Serves until SIGINT or SIGTERM (with install_signals). A signal while the models load stops the server once
    the model loading then has loaded (a load in its thread cannot be cut short), without a word of "ready". A
    second signal ends the process at once, whether a load or the stop is under way."""
    app = App(config)
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        tensor_parallel = os.environ.get("WORLD_SIZE", "1") != "1"
        if app.loading and tensor_parallel:
            # Ctrl-C (or torchrun's SIGTERM) reaches every rank: the others stop at once, and rank 0's load would
            # wait for them in gloo until torchrun kills it (30 s), or fail on their closed sockets. Before the load
            # and after it, rank 0 stops as a single process does (its engine's close is quick with the others gone).
            _stop_now(sig, "tensor-parallel model load")
        if stop.is_set():  # a user who pressed Ctrl-C again will not wait minutes more
            # The load's flag, not the server's readiness: a load that the first signal let end is no longer running.
            if app.loading:
                _stop_now(sig, "model load (signalled twice)")
            if not tensor_parallel:  # there a terminal's Ctrl-C comes twice: its own, then torchrun's SIGTERM
                _stop_now(sig, "stop (signalled twice)")
            return
        app.cancel_load.set()  # before the line: a load that starts after it must see the flag
        again = "" if tensor_parallel else " (Ctrl-C again to stop now)"
        # Once the models have loaded (the server may not be ready yet: the bus's "online"), a stop is a plain one.
        logger.info("%s: stopping%s", sig.name, _LOAD_STOP if app.loading else again)
        stop.set()

    if install_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
    try:
        await app.start(stop)
        await stop.wait()
    finally:
        await app.close()
    logger.info("stopped")  # not after a failed start: its error is the last line
