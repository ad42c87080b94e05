"""Realtime session configuration: the frozen config, patches from client JSON, and the wire form.

Rules (OpenAI Realtime GA semantics, beta names accepted on input):
- Only fields present in an update change; a present `null` clears where the API allows it
  (transcription, turn_detection). Nested objects that are present replace the old value whole
  (missing sub-fields take defaults), as the API does for turn_detection.
- Beta spellings map onto GA fields: `modalities` -> output_modalities, `voice` ->
  audio.output.voice, `input_audio_format`/`output_audio_format` ("pcm16", "g711_ulaw",
  "g711_alaw") -> audio formats, top-level `turn_detection`, `input_audio_transcription`,
  `max_response_output_tokens`. Errors name the field as the client spelled it.
- `temperature` (beta only) is accepted and kept; it is not part of the GA session object.
- Fields the API has and this server does not serve (tracing, noise_reduction, reasoning ...) are checked as the API
  checks them and served as nothing (session.updated shows them null, the log says so); `model` cannot be changed
  after connect. A key the API does not have either is refused with unknown_parameter, as the API refuses it.
- Values this server cannot honour are refused, not ignored: a `prompt` (a stored prompt
  template), a non-empty `include` (transcript logprobs) and a `truncation` other than "auto".
- semantic_vad is served by server_vad, its eagerness as the silence that ends a turn (low 1000 ms, medium/auto
  500, high 250; its create/interrupt flags kept); session.updated shows the server_vad in effect and the log says so.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from context_manager.persona import DEFAULT_INSTRUCTIONS
from controller.errors import ConfigError
from vad.turn_detector import check_threshold

__all__ = [
    "AudioFormat",
    "ServerVad",
    "Transcription",
    "FunctionTool",
    "ToolChoiceFunction",
    "ToolChoice",
    "SessionConfig",
    "Unset",
    "UNSET",
    "SessionPatch",
    "apply_patch",
    "session_to_wire",
]

MAX_OUTPUT_TOKENS_LIMIT = 4096


class AudioFormat(enum.Enum):
    """Wire audio formats: 16-bit LE PCM at 24 kHz, or G.711 u-law / A-law at 8 kHz."""

    PCM = "audio/pcm"
    PCMU = "audio/pcmu"
    PCMA = "audio/pcma"

    @property
    def sample_rate(self) -> int:
        return 24000 if self is AudioFormat.PCM else 8000

    def to_wire(self) -> dict[str, object]:
        if self is AudioFormat.PCM:
            return {"type": "audio/pcm", "rate": 24000}
        return {"type": self.value}


# Beta `input_audio_format` / `output_audio_format` strings.
BETA_FORMATS = {"pcm16": AudioFormat.PCM, "g711_ulaw": AudioFormat.PCMU, "g711_alaw": AudioFormat.PCMA}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerVad:
    """server_vad turn detection; times in ms of input audio."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    idle_timeout_ms: int | None = None
    create_response: bool = True
    interrupt_response: bool = True

    def __post_init__(self) -> None:
        try:
            check_threshold(self.threshold)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.prefix_padding_ms < 0 or self.silence_duration_ms < 0:
            raise ConfigError("prefix_padding_ms and silence_duration_ms must be >= 0")
        if self.idle_timeout_ms is not None and self.idle_timeout_ms < 0:
            raise ConfigError("idle_timeout_ms must be >= 0")

    def to_wire(self) -> dict[str, object]:
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "idle_timeout_ms": self.idle_timeout_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Transcription:
    """Input transcription settings; the server transcribes with its own ASR whatever `model` says."""

    model: str = "whisper-1"
    language: str | None = None
    prompt: str | None = None
    # GA's possible languages of the input audio. Whisper takes one language or detects it: a single possible language
    # is asked for as `language` is; of several, it detects the language (and cannot be held to the list).
    languages: tuple[str, ...] = ()

    @property
    def asr_language(self) -> str | None:
        """The language the ASR is asked to transcribe in; None: it detects it."""
        if self.language is not None or len(self.languages) != 1:
            return self.language
        return self.languages[0]

    def to_wire(self) -> dict[str, object]:
        wire: dict[str, object] = {"model": self.model, "language": self.language, "prompt": self.prompt}
        if self.languages:  # only when sent: the session object of a client that sent none stays as it was
            wire["languages"] = list(self.languages)
        return wire


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionTool:
    """A function the model may call; `parameters` is a JSON Schema object."""

    name: str
    description: str = ""
    parameters: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a function tool needs a name")

    def to_wire(self) -> dict[str, object]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
        }

    def to_chat(self) -> dict[str, object]:
        """The OpenAI chat-completions `tools` entry (what lm_engine.ChatRequest takes)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": dict(self.parameters)},
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolChoiceFunction:
    """Force a call of the named function."""

    name: str


ToolChoice = Literal["auto", "none", "required"] | ToolChoiceFunction


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """The effective configuration of one Realtime session (also used per response)."""

    # "realtime": a conversation; "transcription" (connected with ?intent=transcription): turns are transcribed and
    # nothing answers them. Fixed for the life of a session.
    kind: Literal["realtime", "transcription"] = "realtime"
    instructions: str = DEFAULT_INSTRUCTIONS
    voice: str = "joe"
    speed: float = 1.0  # speaking rate of the reply's audio, 0.25 .. 1.5 as the API allows
    # ("audio",): spoken reply plus its transcript; ("text",): text only, no audio.
    output_modalities: tuple[str, ...] = ("audio",)
    input_format: AudioFormat = AudioFormat.PCM
    output_format: AudioFormat = AudioFormat.PCM
    transcription: Transcription | None = None
    turn_detection: ServerVad | None = field(default_factory=ServerVad)
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: ToolChoice = "auto"
    temperature: float | None = None
    # None: the client set no limit, and replies get this server's default length; "inf" ("the maximum available
    # tokens", the API says) is the longest reply the server allows. Kept apart through every merge.
    max_output_tokens: int | Literal["inf"] | None = None

    def __post_init__(self) -> None:
        if self.output_modalities not in (("audio",), ("text",)):
            raise ConfigError(f"output_modalities must be ('audio',) or ('text',), got {self.output_modalities}")
        if isinstance(self.max_output_tokens, int) and not 1 <= self.max_output_tokens <= MAX_OUTPUT_TOKENS_LIMIT:
            raise ConfigError(f"max_output_tokens must be 'inf' or 1..{MAX_OUTPUT_TOKENS_LIMIT}")
        if not 0.25 <= self.speed <= 1.5:
            raise ConfigError(f"speed must be in [0.25, 1.5], got {self.speed}")


class Unset(enum.Enum):
    """Marks a SessionPatch field the client did not send (None can be a real value)."""

    UNSET = "UNSET"


UNSET = Unset.UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionPatch:
    """The validated, GA-normalised fields of a session.update (or response.create overrides)."""

    kind: Literal["realtime", "transcription"] | Unset = UNSET
    instructions: str | Unset = UNSET
    voice: str | Unset = UNSET
    speed: float | Unset = UNSET
    output_modalities: tuple[str, ...] | Unset = UNSET
    input_format: AudioFormat | Unset = UNSET
    output_format: AudioFormat | Unset = UNSET
    transcription: Transcription | None | Unset = UNSET
    turn_detection: ServerVad | None | Unset = UNSET
    tools: tuple[FunctionTool, ...] | Unset = UNSET
    tool_choice: ToolChoice | Unset = UNSET
    temperature: float | None | Unset = UNSET
    max_output_tokens: int | Literal["inf"] | None | Unset = UNSET

    def changes(self) -> dict[str, object]:
        """The fields that were sent, by SessionConfig field name."""
        out: dict[str, object] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not UNSET:
                out[f.name] = value
        return out


def apply_patch(cfg: SessionConfig, patch: SessionPatch) -> SessionConfig:
    """Return `cfg` with the patch's sent fields replaced."""
    # SessionPatch mirrors SessionConfig field for field (a test checks), so the values fit.
    return dataclasses.replace(cfg, **patch.changes())  # type: ignore[arg-type]


def _tool_choice_wire(choice: ToolChoice) -> object:
    if isinstance(choice, ToolChoiceFunction):
        return {"type": "function", "name": choice.name}
    return choice


def session_to_wire(cfg: SessionConfig, *, session_id: str, model: str) -> dict[str, object]:
    """The GA `session` object for session.created / session.updated."""
    audio_input = {
        "format": cfg.input_format.to_wire(),
        "transcription": cfg.transcription.to_wire() if cfg.transcription else None,
        "noise_reduction": None,
        "turn_detection": cfg.turn_detection.to_wire() if cfg.turn_detection else None,
    }
    if cfg.kind == "transcription":
        if cfg.turn_detection is not None:  # a transcription session's turn detection has no response settings
            audio_input["turn_detection"] = {k: v for k, v in cfg.turn_detection.to_wire().items()
                                             if k in ("type", "threshold", "prefix_padding_ms", "silence_duration_ms")}
        return {"type": "transcription", "object": "realtime.session", "id": session_id,
                "audio": {"input": audio_input}, "include": None}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": list(cfg.output_modalities),
        "instructions": cfg.instructions,
        "audio": {
            "input": audio_input,
            "output": {"format": cfg.output_format.to_wire(), "voice": cfg.voice, "speed": cfg.speed},
        },
        "tools": [t.to_wire() for t in cfg.tools],
        "tool_choice": _tool_choice_wire(cfg.tool_choice),
        "max_output_tokens": cfg.max_output_tokens,
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
    }
