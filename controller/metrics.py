"""Prometheus metrics of one server process (served at GET /metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass(slots=True)
class Metrics:
    """One registry per server, so that tests can run several servers in one process."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    sessions_live: Gauge = field(init=False)
    sessions_total: Counter = field(init=False)
    sessions_refused: Counter = field(init=False)
    turns_total: Counter = field(init=False)
    responses_total: Counter = field(init=False)
    errors_total: Counter = field(init=False)
    speculations_started: Counter = field(init=False)
    speculations_committed: Counter = field(init=False)
    speculations_rolled_back: Counter = field(init=False)
    early_prefills: Counter = field(init=False)
    turn_inputs_warmed: Counter = field(init=False)
    first_audio_latency: Histogram = field(init=False)
    transcript_latency: Histogram = field(init=False)
    tts_rtf: Histogram = field(init=False)
    turn_input_wait: Histogram = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.sessions_live = Gauge("stepaudio_sessions_live", "Sessions connected now", registry=r)
        self.sessions_total = Counter("stepaudio_sessions", "Sessions accepted", registry=r)
        self.sessions_refused = Counter("stepaudio_sessions_refused",
                                        "WebSocket handshakes refused because --max-sessions were connected",
                                        registry=r)
        self.turns_total = Counter("stepaudio_turns", "User turns committed", registry=r)
        self.responses_total = Counter("stepaudio_responses", "Responses finished, by status",
                                       ["status"], registry=r)
        self.errors_total = Counter("stepaudio_errors", "Error events sent, by code", ["code"], registry=r)
        self.speculations_started = Counter("stepaudio_speculations_started",
                                            "Speculative replies started at a pause", registry=r)
        self.speculations_committed = Counter("stepaudio_speculations_committed",
                                              "Speculative replies committed at end of turn", registry=r)
        self.speculations_rolled_back = Counter(
            "stepaudio_speculations_rolled_back",
            "Speculative replies discarded (speech resumed or inputs changed)", registry=r)
        self.early_prefills = Counter("stepaudio_early_prefills",
                                      "Prompt-cache warm-ups with the words heard while the user spoke", registry=r)
        self.turn_inputs_warmed = Counter(
            "stepaudio_turn_inputs_warmed",
            "User turns transcribed from a silence shorter than the pause, ahead of the speculation (once done)",
            registry=r)
        self.first_audio_latency = Histogram(
            "stepaudio_first_audio_latency_seconds",
            "End of user speech (VAD end of turn) to the first audio delta sent",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.transcript_latency = Histogram(
            "stepaudio_transcript_latency_seconds",
            "End of user speech to the final input transcript", buckets=_LATENCY_BUCKETS, registry=r)
        self.tts_rtf = Histogram("stepaudio_tts_real_time_factor",
                                 "Synthesis wall time / audio duration, per response",
                                 buckets=(0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0), registry=r)
        self.turn_input_wait = Histogram(
            "stepaudio_turn_input_wait_seconds",
            "Time a reply to a user turn waited for that turn's input (its transcription) after it started; "
            "replies the user got only (a speculation counts once committed)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0), registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
