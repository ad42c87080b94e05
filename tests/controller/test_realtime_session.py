"""SessionConfig: defaults, applying updates (GA and beta give the same config), validation."""

from __future__ import annotations

import json

import pytest

from controller.errors import ConfigError, RemoteProtocolError
from controller.realtime.session_config import (
    AudioFormat,
    FunctionTool,
    ServerVad,
    SessionConfig,
    SessionPatch,
    Transcription,
    apply_patch,
    session_to_wire,
)
from controller.realtime.session_update import apply_session_update, unknown_fields, parse_session_patch, served_as
from tests.realtime_schema import validate_server_event


def test_defaults() -> None:
    cfg = SessionConfig()
    assert cfg.output_modalities == ("audio",)
    assert cfg.turn_detection == ServerVad(
        threshold=0.5,
        prefix_padding_ms=300,
        silence_duration_ms=500,
        idle_timeout_ms=None,
        create_response=True,
        interrupt_response=True,
    )
    assert (cfg.input_format, cfg.output_format) == (AudioFormat.PCM, AudioFormat.PCM)
    assert (cfg.transcription, cfg.tools, cfg.tool_choice, cfg.temperature, cfg.max_output_tokens) == (
        None,
        (),
        "auto",
        None,
        None,  # no limit set: the server's default reply length, which "inf" (the longest reply it allows) is not
    )
    assert [f.sample_rate for f in AudioFormat] == [24000, 8000, 8000]


def test_ga_and_beta_updates_give_the_same_config() -> None:
    ga = {
        "type": "realtime",
        "output_modalities": ["text"],
        "instructions": "Hi.",
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.7,
                    "prefix_padding_ms": 100,
                    "idle_timeout_ms": 6000,
                },
            },
            "output": {"format": {"type": "audio/pcmu"}, "voice": "ash"},
        },
        "max_output_tokens": 100,
    }
    beta = {
        "modalities": ["text"],
        "instructions": "Hi.",
        "input_audio_format": "g711_ulaw",
        "output_audio_format": "g711_ulaw",
        "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
        "turn_detection": {"type": "server_vad", "threshold": 0.7, "prefix_padding_ms": 100, "idle_timeout_ms": 6000},
        "voice": "ash",
        "max_response_output_tokens": 100,
    }
    expected = SessionConfig(
        output_modalities=("text",),
        instructions="Hi.",
        input_format=AudioFormat.PCMU,
        output_format=AudioFormat.PCMU,
        transcription=Transcription(model="gpt-4o-transcribe", language="en"),
        turn_detection=ServerVad(threshold=0.7, prefix_padding_ms=100, idle_timeout_ms=6000),
        voice="ash",
        max_output_tokens=100,
    )
    assert apply_session_update(SessionConfig(), ga) == expected
    assert apply_session_update(SessionConfig(), beta) == expected


def test_only_sent_fields_change_and_null_clears() -> None:
    cfg = SessionConfig(instructions="A", transcription=Transcription())
    cfg = apply_session_update(cfg, {"audio": {"input": {"turn_detection": None, "transcription": None}}})
    assert cfg == SessionConfig(instructions="A", turn_detection=None, transcription=None)
    # clearing instructions with "" and tools with [] (as the API documents)
    cfg = apply_session_update(SessionConfig(tools=(FunctionTool(name="f"),)), {"instructions": "", "tools": []})
    assert (cfg.instructions, cfg.tools) == ("", ())


def test_update_error_carries_event_id_and_leaves_config_unchanged() -> None:
    cfg = SessionConfig()
    with pytest.raises(RemoteProtocolError) as info:
        apply_session_update(
            cfg, {"instructions": "new", "audio": {"input": {"format": {"type": "audio/flac"}}}}, event_id="e9"
        )
    err = info.value
    assert (err.code, err.param, err.event_id) == ("invalid_value", "session.audio.input.format.type", "e9")
    assert err.message == (
        "Invalid value for 'session.audio.input.format.type': 'audio/flac'. "
        "Supported values are: 'audio/pcm', 'audio/pcmu', 'audio/pcma'."
    )
    assert cfg == SessionConfig()


def test_patch_mirrors_config_fields() -> None:
    import dataclasses

    assert [f.name for f in dataclasses.fields(SessionPatch)] == [f.name for f in dataclasses.fields(SessionConfig)]


def test_apply_patch_is_replace_of_sent_fields() -> None:
    patch = SessionPatch(voice="v", temperature=None)
    assert patch.changes() == {"voice": "v", "temperature": None}
    assert apply_patch(SessionConfig(temperature=0.9), patch) == SessionConfig(voice="v", temperature=None)
    assert apply_patch(SessionConfig(), SessionPatch()) == SessionConfig()


def test_config_objects_validate_themselves() -> None:
    with pytest.raises(ConfigError):
        ServerVad(threshold=2.0)
    with pytest.raises(ConfigError):
        SessionConfig(output_modalities=("audio", "text"))
    with pytest.raises(ConfigError):
        SessionConfig(max_output_tokens=0)
    with pytest.raises(ConfigError):
        FunctionTool(name="")


def test_updated_session_wire_validates_and_reflects_update() -> None:
    cfg = apply_session_update(
        SessionConfig(),
        {
            "audio": {"input": {"transcription": {"model": "whisper-1"}}, "output": {"voice": {"id": "voice_123"}}},
            "tools": [{"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}],
            "tool_choice": "none",
        },
    )
    wire = session_to_wire(cfg, session_id="sess_2", model="m")
    assert wire["tools"] == [
        {
            "type": "function",
            "name": "lookup",
            "description": "",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    assert wire["tool_choice"] == "none"
    assert wire["audio"] == {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "whisper-1", "language": None, "prompt": None},
            "noise_reduction": None,
            "turn_detection": ServerVad().to_wire(),
        },
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "voice_123", "speed": 1.0},
    }
    validate_server_event(json.dumps({"type": "session.updated", "event_id": "e", "session": wire}))


def test_function_tool_chat_form() -> None:
    tool = FunctionTool(name="f", description="d", parameters={"type": "object"})
    assert tool.to_chat() == {
        "type": "function",
        "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
    }


def test_a_transcription_session_never_answers_and_has_the_transcription_shape() -> None:
    from controller.session_parts import turn_config

    cfg = SessionConfig(kind="transcription", transcription=Transcription(),
                        turn_detection=ServerVad(idle_timeout_ms=5000))
    turns = turn_config(cfg, speculation=True)
    assert turns.server_vad and not turns.create_response and not turns.speculation
    assert turns.idle_timeout_s is None  # an idle timeout would start a reply
    realtime = turn_config(SessionConfig(turn_detection=ServerVad(idle_timeout_ms=5000)), speculation=True)
    assert realtime.create_response and realtime.speculation and realtime.idle_timeout_s == 5.0
    wire = session_to_wire(cfg, session_id="sess_t", model="m")
    assert wire["type"] == "transcription" and set(wire) == {"type", "object", "id", "audio", "include"}
    validate_server_event(json.dumps({"type": "session.created", "event_id": "e", "session": wire}))
    with pytest.raises(RemoteProtocolError, match="response.type"):  # only a session has a type of its own
        parse_session_patch({"type": "transcription"}, path="response")


def test_fields_the_server_does_not_know_are_named_for_its_log_and_its_own_session_object_has_none() -> None:
    """A misspelt field is refused: unknown_fields names it, as the API does. The session object the server sends,
    sent back whole, is all known fields, as is every name the GA and beta updates above use."""
    cfg = apply_session_update(SessionConfig(), {"audio": {"input": {"transcription": {"model": "whisper-1"}}}})
    for wire in (session_to_wire(cfg, session_id="s", model="m"),
                 session_to_wire(apply_session_update(SessionConfig(kind="transcription"), {}), session_id="s",
                                 model="m")):
        assert unknown_fields(wire) == []
    beta = {"modalities": ["text"], "voice": "x", "input_audio_format": "pcm16", "output_audio_format": "pcm16",
            "input_audio_transcription": {"model": "whisper-1", "language": "en"}, "temperature": 0.8,
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 300},
            "max_response_output_tokens": "inf"}
    assert unknown_fields(beta) == []
    typos = {"instruction": "be brief", "audio": {"output": {"vioce": "x", "speed": 1.2},
                                                  "input": {"turn_detection": {"type": "server_vad", "treshold": 0.4}}}}
    assert unknown_fields(typos) == ["session.instruction", "session.audio.output.vioce",
                                     "session.audio.input.turn_detection.treshold"]
    nested = {"tools": [{"type": "function", "name": "f"}, {"type": "function", "name": "g", "meta": {}}],
              "tool_choice": {"type": "function", "name": "f", "strict": True}, "tracing": {"group": "x"},
              "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000, "bits": 16}}}}
    assert unknown_fields(nested) == ["session.tools[1].meta", "session.tool_choice.strict", "session.tracing.group",
                                      "session.audio.input.format.bits"]


def test_turn_detection_fields_of_the_other_vad_type_are_unknown() -> None:
    """semantic_vad reads only its eagerness (and the two flags); server_vad has no eagerness. A field of the other
    type had no effect and, being a known name, no word in the log either: a client tuning semantic_vad's
    silence_duration_ms saw session.updated with another value and no reason."""
    semantic = {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "low",
                                                       "silence_duration_ms": 800, "threshold": 0.7}}}}
    assert unknown_fields(semantic) == ["session.audio.input.turn_detection.silence_duration_ms",
                                        "session.audio.input.turn_detection.threshold"]
    assert unknown_fields({"turn_detection": {"type": "server_vad", "eagerness": "high", "idle_timeout_ms": 5000}}
                          ) == ["session.turn_detection.eagerness"]


@pytest.mark.parametrize(("session", "param"), [
    ({"audio": {"input": {"noise_reduction": {"type": "near-field"}}}}, "session.audio.input.noise_reduction.type"),
    ({"audio": {"input": {"noise_reduction": "near_field"}}}, "session.audio.input.noise_reduction"),
    ({"input_audio_noise_reduction": {"type": "bogus"}}, "session.input_audio_noise_reduction.type"),
    ({"audio": {"input": {"noise_reduction": {"type": "far_field", "strength": "high"}}}},
     "session.audio.input.noise_reduction.strength"),
    ({"audio": {"input": {"noise_reduction": {"strength": True}}}}, "session.audio.input.noise_reduction.strength"),
    ({"tracing": "manual"}, "session.tracing"),
    ({"tracing": 5}, "session.tracing"),
    ({"tracing": {"workflow_name": 5}}, "session.tracing.workflow_name"),
    ({"tracing": {"metadata": "x"}}, "session.tracing.metadata"),
    ({"parallel_tool_calls": "yes"}, "session.parallel_tool_calls"),
    ({"reasoning": "high"}, "session.reasoning"),
    ({"reasoning": {"effort": "max"}}, "session.reasoning.effort"),
])
def test_malformed_noise_reduction_and_tracing_are_refused_though_neither_is_served(session: dict, param: str) -> None:
    """This server has no noise reduction and keeps no traces (session.updated shows both null), but a malformed
    value is refused as the API refuses it, naming the field and the event: it was applied as nothing, so a client
    that worked here failed first on the API it was written for."""
    with pytest.raises(RemoteProtocolError) as info:
        apply_session_update(SessionConfig(), session, event_id="e7")
    assert (info.value.code, info.value.param, info.value.event_id) == ("invalid_value", param, "e7")


@pytest.mark.parametrize("session", [
    {"audio": {"input": {"noise_reduction": {"type": "near_field"}}}, "tracing": "auto"},
    {"input_audio_noise_reduction": {"type": "far_field"}, "tracing": {"workflow_name": "w", "group_id": "g",
                                                                       "metadata": {"k": 1}}},
    {"audio": {"input": {"noise_reduction": None}}, "tracing": None},
    {"audio": {"input": {"noise_reduction": {"type": "near_field", "strength": 0.5}}}},
    {"parallel_tool_calls": False, "reasoning": {"effort": "low"}},
])
def test_well_formed_noise_reduction_and_tracing_are_accepted(session: dict) -> None:
    assert apply_session_update(SessionConfig(), session) == SessionConfig()


def test_a_misspelt_noise_reduction_field_is_unknown() -> None:
    """noise_reduction's own fields were never looked at: a misspelt strength had no word anywhere."""
    assert unknown_fields({"audio": {"input": {"noise_reduction": {"type": "near_field", "strenght": 0.5}}},
                           "input_audio_noise_reduction": {"typ": "far_field"}}) == [
        "session.audio.input.noise_reduction.strenght", "session.input_audio_noise_reduction.typ"]


def test_reasoning_fields_are_named_for_the_log_as_not_taken() -> None:
    said = served_as({"parallel_tool_calls": True, "reasoning": {"effort": "high"}})
    assert [line.split(":")[0] for line in said] == ["session.parallel_tool_calls", "session.reasoning"], said
