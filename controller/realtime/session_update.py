"""Parsing session.update (and response.create overrides) into a SessionPatch.

See session_config.py for the rules (GA semantics, beta names accepted, unknown keys refused).
Every error is a RemoteProtocolError naming the field as the client spelled it. A key this server does not know is
refused as the API refuses it (unknown_parameter, "Unknown parameter: 'session.tools[0].meta'."): a misspelt field
had been taken as nothing, the update applied without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from controller.errors import RemoteProtocolError
from controller.realtime._json import Fields, invalid
from controller.realtime.session_config import (
    BETA_FORMATS,
    MAX_OUTPUT_TOKENS_LIMIT,
    AudioFormat,
    FunctionTool,
    ServerVad,
    SessionConfig,
    SessionPatch,
    ToolChoice,
    ToolChoiceFunction,
    Transcription,
    apply_patch,
)
from vad.turn_detector import check_threshold

__all__ = ["apply_session_update", "check_tool_choice", "parse_session_patch", "reasoning_served_as", "served_as",
           "unknown_fields"]


# The keys each object of a session (or response) may carry: the GA and beta names this module reads, and the
# read-only ones of the session object the server sends, which a client may send back as it got them.
_TURN_DETECTION = ("type", "threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms",
                   "create_response", "interrupt_response", "eagerness")
# Each type's own keys: the other's are not read (semantic_vad's silence comes from its eagerness alone).
_VAD_KEYS = {"server_vad": tuple(k for k in _TURN_DETECTION if k != "eagerness"),
             "semantic_vad": ("type", "eagerness", "create_response", "interrupt_response")}
_TRANSCRIPTION = ("model", "language", "prompt", "languages", "keywords", "delay")
_NOISE_REDUCTION = ("type", "strength")
_FORMAT = ("type", "rate")
TRANSCRIPTION_DELAYS = ("minimal", "low", "medium", "high", "xhigh")
_SESSION_KNOWN: dict[str, tuple[str, ...]] = {
    "": ("type", "object", "id", "model", "instructions", "output_modalities", "audio", "include",
         "max_output_tokens", "prompt", "tool_choice", "tools", "tracing", "truncation", "parallel_tool_calls",
         "reasoning", "expires_at", "client_secret",
         # beta
         "modalities", "voice", "speed", "input_audio_format", "output_audio_format", "input_audio_transcription",
         "input_audio_noise_reduction", "turn_detection", "temperature", "max_response_output_tokens"),
    "audio": ("input", "output"),
    "audio.input": ("format", "transcription", "noise_reduction", "turn_detection"),
    "audio.output": ("format", "voice", "speed"),
    "audio.input.format": _FORMAT,
    "audio.output.format": _FORMAT,
    "tools[]": ("type", "name", "description", "parameters"),
    "tool_choice": ("type", "name"),
    "tracing": ("workflow_name", "group_id", "metadata"),
    "reasoning": ("effort",),
    "audio.input.turn_detection": _TURN_DETECTION,
    "audio.input.transcription": _TRANSCRIPTION,
    "audio.input.noise_reduction": _NOISE_REDUCTION,
    "input_audio_noise_reduction": _NOISE_REDUCTION,
    "turn_detection": _TURN_DETECTION,
    "input_audio_transcription": _TRANSCRIPTION,
}
# A response takes the reply's settings of a session, and its own (conversation, input, metadata): the input side
# (format, transcription, turn detection, noise reduction), model and tracing are the session's, and have no effect on
# one response, so a response.create carrying them hears of it as of any field this server does not read.
_RESPONSE_KNOWN: dict[str, tuple[str, ...]] = {
    **_SESSION_KNOWN,
    "": ("conversation", "input", "metadata", "instructions", "output_modalities", "audio", "include",
         "max_output_tokens", "prompt", "tool_choice", "tools", "truncation", "parallel_tool_calls", "reasoning",
         # beta
         "modalities", "voice", "speed", "output_audio_format", "temperature", "max_response_output_tokens"),
    "audio": ("output",),
}


def unknown_fields(payload: Mapping[str, object], path: str = "session") -> list[str]:
    """The fields of a session (or response, path "response") object that this server does not read there, as the
    API names them ("session.audio.output.vioce", "session.tools[0].meta")."""
    out: list[str] = []
    known_at = _RESPONSE_KNOWN if path == "response" else _SESSION_KNOWN

    def walk(obj: Mapping[str, object], rel: str, shown: str) -> None:
        known = _VAD_KEYS.get(str(obj.get("type")), known_at[rel]) if rel.endswith("turn_detection") else known_at[rel]
        for key, value in obj.items():
            sub, sub_shown = (f"{rel}.{key}", f"{shown}.{key}") if rel else (key, key)
            if key not in known:
                out.append(f"{path}.{sub_shown}")
            elif sub in known_at and isinstance(value, Mapping):
                walk(value, sub, sub_shown)
            elif f"{sub}[]" in known_at and isinstance(value, list):
                for i, entry in enumerate(value):
                    # a function tool's keys: the API's other tools (mcp) have keys of their own, and are refused
                    # by their type (invalid_value) as tools this server cannot call
                    if isinstance(entry, Mapping) and entry.get("type") in (None, "function"):
                        walk(entry, f"{sub}[]", f"{sub_shown}[{i}]")

    walk(payload, "", "")
    return out


def refuse_unknown(payload: Mapping[str, object], path: str, event_id: str | None) -> None:
    """Raises:
        RemoteProtocolError: unknown_parameter, in the API's words, for the first field unknown_fields names.
    """
    unknown = unknown_fields(payload, path)
    if unknown:
        raise RemoteProtocolError(f"Unknown parameter: '{unknown[0]}'.", code="unknown_parameter", param=unknown[0],
                                  event_id=event_id)


def served_as(payload: Mapping[str, object], path: str = "session") -> list[str]:
    """What a session object asks for that this server serves in another way, one line each for the log (the client
    sees the result in session.updated): semantic_vad, as server_vad; a noise_reduction, as none (the audio is used
    as sent); tracing, as none; a transcription model, as the server's own Whisper; a transcription prompt, as none
    (Whisper transcribes each turn without one), and so are its keywords and delay; several possible languages, as
    Whisper's detection."""
    audio = payload.get("audio")
    audio_input = audio.get("input") if isinstance(audio, Mapping) else None
    audio_input = audio_input if isinstance(audio_input, Mapping) else {}

    def asked(ga: str, beta: str) -> dict[str, object]:
        return {f"audio.input.{ga}": audio_input.get(ga), beta: payload.get(beta)}

    out = []
    for rel, td in asked("turn_detection", "turn_detection").items():
        if isinstance(td, Mapping) and td.get("type") == "semantic_vad":
            eagerness = td.get("eagerness") or "auto"
            out.append(f"{path}.{rel}: semantic_vad is served as server_vad, a turn ending after "
                       f"{SEMANTIC_SILENCE_MS.get(str(eagerness), 500)} ms of silence (eagerness {eagerness})")
    for rel, nr in asked("noise_reduction", "input_audio_noise_reduction").items():
        if nr is not None:
            out.append(f"{path}.{rel}: this server has no noise reduction; the audio is used as sent")
    if payload.get("tracing") is not None:
        out.append(f"{path}.tracing: this server keeps no traces")
    out.extend(reasoning_served_as(payload, path))
    for rel, t in asked("transcription", "input_audio_transcription").items():
        if not isinstance(t, Mapping):
            continue
        if t.get("model") not in (None, "whisper-1"):
            out.append(f"{path}.{rel}.model: {t.get('model')!r} is served by this server's own Whisper")
        if t.get("prompt"):
            out.append(f"{path}.{rel}.prompt: not used; this server's Whisper transcribes without a prompt")
        if t.get("keywords"):
            out.append(f"{path}.{rel}.keywords: not used; this server's Whisper transcribes without hints")
        if t.get("delay") is not None:
            out.append(f"{path}.{rel}.delay: not used; this server transcribes each turn once it has ended")
        languages = t.get("languages")
        if isinstance(languages, list) and len(languages) > 1 and not t.get("language"):
            out.append(f"{path}.{rel}.languages: Whisper detects the language of each turn; it cannot be held to "
                       "several")
    return out


def reasoning_served_as(payload: Mapping[str, object], path: str) -> list[str]:
    """The part of served_as that a response has too: its reasoning fields, which this server's chat LM does not take
    (the API's non-reasoning models do not either)."""
    return [f"{path}.{key}: for the API's reasoning models; this server's chat LM does not take it"
            for key in ("parallel_tool_calls", "reasoning") if payload.get(key) is not None]


def apply_session_update(
    cfg: SessionConfig, payload: Mapping[str, object], *, event_id: str | None = None
) -> SessionConfig:
    """Validate a session.update's `session` object and apply it to `cfg`.

    Raises:
        RemoteProtocolError: code "invalid_value"/"missing_required_parameter" with `param` set to
            the offending field's path (e.g. "session.audio.input.format.type") and `event_id`.
    """
    return apply_patch(cfg, parse_session_patch(payload, event_id=event_id))


def check_tool_choice(cfg: SessionConfig, *, path: str) -> None:
    """A tool_choice that forces a function must name one of the tools, and "required" needs a tool: either would
    otherwise be answered by a message, as if the choice had been "auto". Checked on the config an update or a
    response would run with, since the tools and the choice may come in different events.

    Raises:
        RemoteProtocolError: invalid_value, param "<path>.tool_choice.name" or "<path>.tool_choice".
    """
    choice = cfg.tool_choice
    if choice == "required" and not cfg.tools:
        raise invalid(f"{path}.tool_choice", f"Invalid value for '{path}.tool_choice': 'required' needs a function "
                      "tool to call and there are none; send the tools with it.")
    if isinstance(choice, ToolChoiceFunction) and all(t.name != choice.name for t in cfg.tools):
        names = ", ".join(repr(t.name) for t in cfg.tools) or "none"
        raise invalid(f"{path}.tool_choice.name", f"Invalid value for '{path}.tool_choice.name': {choice.name!r} is "
                      f"not one of the tools (function tools: {names}).")


def check_tools(cfg: SessionConfig, *, path: str, refused: str | None) -> None:
    """Function tools on a profile that cannot call them are refused, not ignored: the client would wait for calls
    that never come. `refused` is the profile's reason (None: it calls tools).

    Raises:
        RemoteProtocolError: invalid_value, param "<path>.tools".
    """
    if cfg.tools and refused is not None:
        raise invalid(f"{path}.tools", f"Invalid value for '{path}.tools': {refused}. Send no tools (an empty list) "
                      "to this server.")


def check_voice(voice: str, *, param: str, voices: frozenset[str] | None) -> None:
    """A voice the profile does not have is refused, not spoken in another voice. `voices` is the profile's set
    (None: it speaks every name in its one voice).

    Raises:
        RemoteProtocolError: invalid_value, param `param`.
    """
    if voices is not None and voice not in voices:
        raise invalid(param, f"Invalid value for '{param}': {voice!r} is not a voice of this server (its voices: "
                      f"{', '.join(sorted(voices))}).")


def check_language(language: str | None, code: str | None, *, param: str, languages: frozenset[str] | None) -> None:
    """A transcription language the profile's ASR does not know is refused here, not by a failure at every turn.
    `code` is `language` as the ASR reads it ("en-US" -> "en"); `languages` its codes (None: any).

    Raises:
        RemoteProtocolError: invalid_value, param `param`.
    """
    if language is not None and languages is not None and code not in languages:
        raise invalid(param, f"Invalid value for '{param}': {language!r} is not a language this server transcribes "
                      "(ISO-639-1 codes such as 'en', 'de', 'fr', 'zh').")


def parse_session_patch(
    payload: Mapping[str, object], *, path: str = "session", event_id: str | None = None
) -> SessionPatch:
    """Validate a GA or beta session object (or response.create `response`) into a SessionPatch."""
    refuse_unknown(payload, path, event_id)
    f = Fields(payload, path, event_id)
    ch: dict[str, object] = {}
    if f.obj.get("prompt") is not None:  # its instructions live on OpenAI's servers: ignoring it would drop them
        raise invalid(f.param("prompt"), f"Invalid value for '{f.param('prompt')}': prompt templates are not "
                      "supported by this server; send the instructions themselves.", event_id)
    if f.obj.get("include"):  # null and [] ask for nothing extra
        raise invalid(f.param("include"), f"Invalid value for '{f.param('include')}': this server's transcripts "
                      "have no logprobs to include.", event_id)
    if f.obj.get("truncation") not in (None, "auto"):  # the context is cut by the server's own token budget
        raise invalid(f.param("truncation"), f"Invalid value for '{f.param('truncation')}': only 'auto' is "
                      "supported (the oldest turns are dropped to fit the context budget).", event_id)
    _check_tracing(f)
    _check_reasoning(f)
    if f.has("type") and f.obj["type"] is not None:  # a response has no type of its own: only a session's
        ch["kind"] = f.choice("type", ("realtime", "transcription") if path == "session" else ("realtime",))
    if f.has("instructions"):
        ch["instructions"] = f.str_("instructions")
    for key in ("output_modalities", "modalities"):
        if f.has(key):
            ch["output_modalities"] = _modalities(f, key)
    audio = f.opt_obj("audio")
    if audio is not None:
        _parse_audio(audio, ch)
    _parse_beta_audio(f, ch)
    if f.has("tools"):
        ch["tools"] = _tools(f)
    if f.has("tool_choice"):
        ch["tool_choice"] = _tool_choice(f)
    if f.has("temperature"):
        ch["temperature"] = None if f.obj["temperature"] is None else f.number("temperature", low=0.0, high=2.0)
    for key in ("max_output_tokens", "max_response_output_tokens"):
        if f.has(key):
            ch["max_output_tokens"] = _max_tokens(f, key)
    return SessionPatch(**ch)  # type: ignore[arg-type]  # values were checked field by field above


def _parse_audio(audio: Fields, ch: dict[str, object]) -> None:
    inp = audio.opt_obj("input")
    if inp is not None:
        _check_noise_reduction(inp, "noise_reduction")
        if inp.has("format") and inp.obj["format"] is not None:
            ch["input_format"] = _format(inp.obj_("format"))
        if inp.has("transcription"):
            t = inp.opt_obj("transcription")
            ch["transcription"] = None if t is None else _transcription(t)
        if inp.has("turn_detection"):
            td = inp.opt_obj("turn_detection")
            ch["turn_detection"] = None if td is None else _turn_detection(td)
    out = audio.opt_obj("output")
    if out is not None:
        if out.has("format") and out.obj["format"] is not None:
            ch["output_format"] = _format(out.obj_("format"))
        if out.has("voice"):
            ch["voice"] = _voice(out)
        if out.has("speed"):
            ch["speed"] = out.number("speed", low=0.25, high=1.5)


def _check_noise_reduction(f: Fields, key: str) -> None:
    """Served as none (served_as), but checked as the API checks it: a client that works here must not meet its
    first invalid_value on the API it was written for."""
    nr = f.opt_obj(key)
    if nr is not None and nr.obj.get("type") is not None:
        nr.choice("type", ("near_field", "far_field"))
    if nr is not None and nr.obj.get("strength") is not None:
        nr.number("strength", low=-math.inf, high=math.inf)  # a number: the API's types give it no range


def _check_tracing(f: Fields) -> None:
    """Served as none, and checked like noise_reduction: "auto" or an object of two strings and a metadata object."""
    if isinstance(f.obj.get("tracing"), str):
        f.choice("tracing", ("auto",))
    elif (tracing := f.opt_obj("tracing")) is not None:
        tracing.opt_str("workflow_name")
        tracing.opt_str("group_id")
        tracing.opt_obj("metadata")


def _check_reasoning(f: Fields) -> None:
    """parallel_tool_calls and reasoning are for the API's reasoning models (served_as names them): checked as the
    API types them, a boolean and {effort}."""
    if f.obj.get("parallel_tool_calls") is not None:
        f.bool_("parallel_tool_calls")
    if (reasoning := f.opt_obj("reasoning")) is not None and reasoning.obj.get("effort") is not None:
        reasoning.choice("effort", ("minimal", "low", "medium", "high", "xhigh"))


def _parse_beta_audio(f: Fields, ch: dict[str, object]) -> None:
    _check_noise_reduction(f, "input_audio_noise_reduction")
    if f.has("voice"):
        ch["voice"] = _voice(f)
    if f.has("speed"):
        ch["speed"] = f.number("speed", low=0.25, high=1.5)
    if f.has("input_audio_format"):
        ch["input_format"] = BETA_FORMATS[f.choice("input_audio_format", tuple(BETA_FORMATS))]
    if f.has("output_audio_format"):
        ch["output_format"] = BETA_FORMATS[f.choice("output_audio_format", tuple(BETA_FORMATS))]
    if f.has("input_audio_transcription"):
        t = f.opt_obj("input_audio_transcription")
        ch["transcription"] = None if t is None else _transcription(t)
    if f.has("turn_detection"):
        td = f.opt_obj("turn_detection")
        ch["turn_detection"] = None if td is None else _turn_detection(td)


def _modalities(f: Fields, key: str) -> tuple[str, ...]:
    values = f.list_(key)
    seen: set[str] = set()
    for i, v in enumerate(values):
        if v not in ("audio", "text"):
            raise invalid(
                f"{f.param(key)}[{i}]",
                f"Invalid value for '{f.param(key)}[{i}]': {v!r}. Supported values are: 'audio', 'text'.",
                f.event_id,
            )
        seen.add(str(v))
    if not seen:
        raise invalid(f.param(key), f"'{f.param(key)}' must not be empty.", f.event_id)
    # Audio output always carries its transcript, so beta ["text", "audio"] is GA ["audio"].
    return ("audio",) if "audio" in seen else ("text",)


def _format(f: Fields) -> AudioFormat:
    kind = "audio/pcm" if f.obj.get("type") is None else f.choice("type", ("audio/pcm", "audio/pcmu", "audio/pcma"))
    fmt = AudioFormat(kind)
    if fmt is AudioFormat.PCM and f.obj.get("rate") is not None:
        rate = f.int_("rate")
        if rate != 24000:
            raise invalid(
                f.param("rate"),
                f"Invalid value for '{f.param('rate')}': {rate}. Supported values are: 24000.",
                f.event_id,
            )
    return fmt


def _voice(f: Fields) -> str:
    value = f.obj.get("voice")
    if isinstance(value, dict):
        return f.obj_("voice").str_("id")  # custom voice object {"id": ...}
    voice = f.str_("voice")
    if not voice:
        raise invalid(f.param("voice"), f"'{f.param('voice')}' must not be empty.", f.event_id)
    return voice


def _transcription(f: Fields) -> Transcription:
    # keywords and delay tune the API's newer transcription models; served as nothing (served_as), but checked as the
    # API types them, as noise_reduction is.
    _strings(f, "keywords")
    if f.obj.get("delay") is not None:
        f.choice("delay", TRANSCRIPTION_DELAYS)
    return Transcription(
        model=f.opt_str("model") or "whisper-1",
        language=f.opt_str("language") or None,
        prompt=f.opt_str("prompt") or None,
        languages=_strings(f, "languages"),
    )


def _strings(f: Fields, key: str) -> tuple[str, ...]:
    """An optional array of strings; () when absent or null."""
    if f.obj.get(key) is None:
        return ()
    values = f.list_(key)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise invalid(f"{f.param(key)}[{i}]", f"Invalid type for '{f.param(key)}[{i}]': expected a string.",
                          f.event_id)
    return tuple(str(v) for v in values)


# semantic_vad's eagerness as server_vad's silence before a turn ends: this server has no model of whether the user
# has finished, only of speech and silence ("auto" is "medium", server_vad's default).
SEMANTIC_SILENCE_MS = {"low": 1000, "medium": 500, "auto": 500, "high": 250}


# The API's schema types the turn detection times int32. Past it, idle_timeout_ms (10**400) failed converting to
# seconds, after the session had taken the update.
INT32_MAX = 2**31 - 1


def _turn_detection(f: Fields) -> ServerVad:
    kind = f.choice("type", ("server_vad", "semantic_vad"))
    flags: dict[str, object] = {}
    for key in ("create_response", "interrupt_response"):
        if f.obj.get(key) is not None:
            flags[key] = f.bool_(key)
    if kind == "semantic_vad":
        eagerness = f.choice("eagerness", tuple(SEMANTIC_SILENCE_MS)) if f.obj.get("eagerness") is not None \
            else "auto"
        return ServerVad(silence_duration_ms=SEMANTIC_SILENCE_MS[eagerness], **flags)  # type: ignore[arg-type]
    vals: dict[str, object] = dict(flags)
    if f.obj.get("threshold") is not None:
        threshold = f.real("threshold")  # NaN too: check_threshold says what it must be
        try:
            check_threshold(threshold)
        except ValueError as exc:
            raise invalid(f.param("threshold"), f"Invalid value for '{f.param('threshold')}': {exc}.",
                          f.event_id) from None
        vals["threshold"] = float(threshold)
    for key in ("prefix_padding_ms", "silence_duration_ms"):
        if f.obj.get(key) is not None:
            vals[key] = f.int_(key, minimum=0, maximum=INT32_MAX)
    vals["idle_timeout_ms"] = f.opt_int("idle_timeout_ms", minimum=0, maximum=INT32_MAX)
    return ServerVad(**vals)  # type: ignore[arg-type]  # each value checked above


def _tools(f: Fields) -> tuple[FunctionTool, ...]:
    tools: list[FunctionTool] = []
    for i, raw in enumerate(f.list_("tools")):
        t = f.item_obj("tools", i, raw)
        if t.obj.get("type") is not None:
            t.choice("type", ("function",))
        name = t.str_("name")
        if not name:
            raise invalid(t.param("name"), f"'{t.param('name')}' must not be empty.", f.event_id)
        params = t.opt_obj("parameters")
        tools.append(
            FunctionTool(
                name=name,
                description=t.opt_str("description") or "",
                parameters=dict(params.obj) if params is not None else {},
            )
        )
    return tuple(tools)


def _tool_choice(f: Fields) -> ToolChoice:
    value = f.obj.get("tool_choice")
    if isinstance(value, dict):
        c = f.obj_("tool_choice")
        c.choice("type", ("function",))
        return ToolChoiceFunction(name=c.str_("name"))
    choice = f.choice("tool_choice", ("auto", "none", "required"))
    if choice == "auto":
        return "auto"
    return "none" if choice == "none" else "required"


def _max_tokens(f: Fields, key: str) -> int | Literal["inf"] | None:
    value = f.obj.get(key)
    if value is None or value == "inf":  # null, as session.updated shows an unset limit: the server's default
        return value
    if isinstance(value, str):
        f.choice(key, ("inf",))
    n = f.int_(key, minimum=1)
    if n > MAX_OUTPUT_TOKENS_LIMIT:
        raise invalid(
            f.param(key),
            f"Invalid value for '{f.param(key)}': {n} is above the maximum of {MAX_OUTPUT_TOKENS_LIMIT}.",
            f.event_id,
        )
    return n
