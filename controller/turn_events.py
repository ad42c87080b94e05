"""The turn-taking core's boundary: its config, the events an adapter feeds it and the actions it returns for the
adapter (controller/session.py) to carry out. controller.turn_taking's transition table lists every Event for every
state."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnConfig:
    server_vad: bool = True
    speculation: bool = True
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_s: float | None = None


# ---- events (inputs) -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_ms: int


@dataclass(frozen=True, slots=True)
class Pause:
    audio_ms: int


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    audio_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_ms: int


@dataclass(frozen=True, slots=True)
class BufferCommitted:
    """The client committed the input buffer itself (input_audio_buffer.commit), at audio_ms."""

    audio_ms: int


@dataclass(frozen=True, slots=True)
class BufferCleared:
    """The client cleared the input buffer (input_audio_buffer.clear) at audio_ms: the user's turn so far is gone."""

    audio_ms: int


@dataclass(frozen=True, slots=True)
class ResponseRequested:
    """response.create from the client."""


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """response.cancel from the client."""


@dataclass(frozen=True, slots=True)
class ReplyTruncated:
    """The client truncated the message of generation gen_id while it was still being spoken."""
    gen_id: int


@dataclass(frozen=True, slots=True)
class ContextChanged:
    """The conversation changed outside a turn (item create/delete/truncate, new instructions/tools)."""


@dataclass(frozen=True, slots=True)
class GenerationAudioStarted:
    gen_id: int


@dataclass(frozen=True, slots=True)
class GenerationFinished:
    gen_id: int


@dataclass(frozen=True, slots=True)
class TimerFired:
    key: str


@dataclass(frozen=True, slots=True)
class ConfigChanged:
    config: TurnConfig
    audio_ms: int  # the input audio heard when it changed: where a turn the VAD no longer follows ends for the client


Event = (SpeechStarted | Pause | SpeechResumed | SpeechStopped | BufferCommitted | BufferCleared
         | ResponseRequested | CancelRequested | ReplyTruncated | ContextChanged | GenerationAudioStarted
         | GenerationFinished | TimerFired | ConfigChanged)
# The events about one generation: stale, and dropped, once a newer generation replaced it.
GenerationReport = ReplyTruncated | GenerationAudioStarted | GenerationFinished


# ---- actions (outputs) -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EmitSpeechStarted:
    audio_ms: int


@dataclass(frozen=True, slots=True)
class EmitSpeechStopped:
    audio_ms: int


@dataclass(frozen=True, slots=True)
class CommitUserTurn:
    """Close the user's turn: the input buffer becomes a user item (audio up to audio_end_ms)."""
    audio_end_ms: int | None


@dataclass(frozen=True, slots=True)
class StartGeneration:
    gen_id: int
    speculative: bool
    audio_end_ms: int | None  # the user audio the reply answers (None: the conversation as it is)


@dataclass(frozen=True, slots=True)
class CommitGeneration:
    gen_id: int


@dataclass(frozen=True, slots=True)
class CancelGeneration:
    gen_id: int
    reason: str  # "rollback" | "stale" | "barge_in" | "client_cancelled"


@dataclass(frozen=True, slots=True)
class FlushAudio:
    gen_id: int


@dataclass(frozen=True, slots=True)
class RejectRequest:
    code: str
    message: str
    active_gen: int | None = None  # the reply in the way, for the session to name its response id


@dataclass(frozen=True, slots=True)
class StartTimer:
    key: str
    deadline: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    key: str


@dataclass(frozen=True, slots=True)
class EmitIdleTimeout:
    pass


Action = (EmitSpeechStarted | EmitSpeechStopped | CommitUserTurn | StartGeneration | CommitGeneration
          | CancelGeneration | FlushAudio | RejectRequest | StartTimer | CancelTimer | EmitIdleTimeout)

IDLE_TIMER = "idle"
