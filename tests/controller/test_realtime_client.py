"""Client event parsing: GA and beta shapes, and each error code with its param and event_id."""

from __future__ import annotations

import json

import pytest
from openai.types.realtime import (
    ConversationItemCreateEventParam,
    ConversationItemTruncateEventParam,
    InputAudioBufferAppendEventParam,
    ResponseCreateEventParam,
    SessionUpdateEventParam,
)

from controller.errors import RemoteProtocolError
from controller.realtime import client_events as ce
from controller.realtime.items import ContentPart, FunctionCallOutputSpec, FunctionCallSpec, ItemReference, MessageSpec
from controller.realtime.session_config import (
    AudioFormat,
    FunctionTool,
    ServerVad,
    SessionPatch,
    ToolChoiceFunction,
    Transcription,
)


def parse(doc: object, max_bytes: int = 1 << 20) -> ce.ClientEvent:
    return ce.parse_client_event(json.dumps(doc), max_bytes=max_bytes)


def error_of(raw: str | bytes | object, max_bytes: int = 1 << 20) -> RemoteProtocolError:
    text = raw if isinstance(raw, (str, bytes)) else json.dumps(raw)
    with pytest.raises(RemoteProtocolError) as info:
        ce.parse_client_event(text, max_bytes=max_bytes)
    return info.value


def test_session_update_ga() -> None:
    doc: SessionUpdateEventParam = {
        "type": "session.update",
        "event_id": "c1",
        "session": {
            "type": "realtime",
            "instructions": "Be terse.",
            "output_modalities": ["text"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": {"model": "whisper-1", "language": "de"},
                    "noise_reduction": None,
                    "turn_detection": {"type": "server_vad", "threshold": 0.6, "silence_duration_ms": 700},
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.2},
            },
            "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "max_output_tokens": 300,
            "tracing": "auto",
        },
    }
    assert parse(doc) == ce.SessionUpdate(
        event_id="c1",
        patch=SessionPatch(
            kind="realtime",
            instructions="Be terse.",
            output_modalities=("text",),
            input_format=AudioFormat.PCMU,
            transcription=Transcription(model="whisper-1", language="de"),
            turn_detection=ServerVad(threshold=0.6, silence_duration_ms=700),
            output_format=AudioFormat.PCM,
            voice="marin",
            speed=1.2,
            tools=(FunctionTool(name="f", description="d", parameters={"type": "object"}),),
            tool_choice=ToolChoiceFunction(name="f"),
            max_output_tokens=300,
        ),
        served_as=("session.tracing: this server keeps no traces",),
    )


def test_session_update_beta() -> None:
    doc = {
        "type": "session.update",
        "session": {
            "modalities": ["text", "audio"],
            "voice": "alloy",
            "input_audio_format": "g711_alaw",
            "output_audio_format": "pcm16",
            "input_audio_transcription": None,
            "turn_detection": None,
            "temperature": 0.8,
            "max_response_output_tokens": "inf",
            "tool_choice": "required",
        },
    }
    assert parse(doc) == ce.SessionUpdate(
        event_id=None,
        patch=SessionPatch(
            output_modalities=("audio",),
            voice="alloy",
            input_format=AudioFormat.PCMA,
            output_format=AudioFormat.PCM,
            transcription=None,
            turn_detection=None,
            temperature=0.8,
            max_output_tokens="inf",
            tool_choice="required",
        ),
    )


def test_audio_buffer_events() -> None:
    doc: InputAudioBufferAppendEventParam = {"type": "input_audio_buffer.append", "audio": "AAECAw==", "event_id": "a"}
    assert parse(doc) == ce.InputAudioBufferAppend(event_id="a", audio=b"\x00\x01\x02\x03")
    assert parse({"type": "input_audio_buffer.commit"}) == ce.InputAudioBufferCommit(event_id=None)
    assert parse({"type": "input_audio_buffer.clear", "event_id": "x"}) == ce.InputAudioBufferClear(event_id="x")
    assert parse({"type": "output_audio_buffer.clear"}) == ce.OutputAudioBufferClear(event_id=None)


def test_bytes_input_is_accepted() -> None:
    raw = b'{"type": "input_audio_buffer.commit", "event_id": "b"}'
    assert ce.parse_client_event(raw, max_bytes=100) == ce.InputAudioBufferCommit(event_id="b")


def test_item_create_ga_messages() -> None:
    doc: ConversationItemCreateEventParam = {
        "type": "conversation.item.create",
        "previous_item_id": "root",
        "item": {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "hi"},
                {"type": "input_audio", "audio": "AAE=", "transcript": "yo"},
            ],
        },
    }
    assert parse(doc) == ce.ConversationItemCreate(
        event_id=None,
        previous_item_id="root",
        item=MessageSpec(
            id=None,
            role="user",
            content=(
                ContentPart(type="input_text", text="hi"),
                ContentPart(type="input_audio", audio=b"\x00\x01", transcript="yo"),
            ),
        ),
    )
    assistant = parse(
        {
            "type": "conversation.item.create",
            "item": {
                "id": "m1",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "ok"}],
            },
        }
    )
    assert isinstance(assistant, ce.ConversationItemCreate)
    assert assistant.item == MessageSpec(
        id="m1", role="assistant", content=(ContentPart(type="output_text", text="ok"),)
    )


def test_item_create_beta_content_types() -> None:
    ev = parse(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": "a"}, {"type": "audio", "transcript": "b"}],
            },
        }
    )
    assert isinstance(ev, ce.ConversationItemCreate)
    assert ev.item == MessageSpec(
        id=None,
        role="assistant",
        content=(ContentPart(type="output_text", text="a"), ContentPart(type="output_audio", transcript="b")),
    )
    assert isinstance(ev.item, MessageSpec) and ev.item.text == "a b"
    sys_ev = parse(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be nice."}]},
        }
    )
    assert isinstance(sys_ev, ce.ConversationItemCreate)
    assert sys_ev.item == MessageSpec(
        id=None, role="system", content=(ContentPart(type="input_text", text="Be nice."),)
    )


def test_item_create_function_items() -> None:
    call = parse(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a": 1}'},
        }
    )
    assert isinstance(call, ce.ConversationItemCreate)
    assert call.item == FunctionCallSpec(id=None, call_id="c1", name="f", arguments='{"a": 1}')
    out = parse(
        {
            "type": "conversation.item.create",
            "event_id": "e",
            "item": {"id": "o1", "type": "function_call_output", "call_id": "c1", "output": "42"},
        }
    )
    assert out == ce.ConversationItemCreate(
        event_id="e", previous_item_id=None, item=FunctionCallOutputSpec(id="o1", call_id="c1", output="42")
    )


def test_item_retrieve_truncate_delete() -> None:
    assert parse({"type": "conversation.item.retrieve", "item_id": "i"}) == ce.ConversationItemRetrieve(
        event_id=None, item_id="i"
    )
    doc: ConversationItemTruncateEventParam = {
        "type": "conversation.item.truncate",
        "item_id": "i",
        "content_index": 0,
        "audio_end_ms": 1500,
    }
    assert parse(doc) == ce.ConversationItemTruncate(event_id=None, item_id="i", content_index=0, audio_end_ms=1500)
    assert parse({"type": "conversation.item.delete", "item_id": "i", "event_id": "d"}) == ce.ConversationItemDelete(
        event_id="d", item_id="i"
    )


def test_response_create_and_cancel() -> None:
    assert parse({"type": "response.create"}) == ce.ResponseCreate(
        event_id=None, overrides=SessionPatch(), conversation="auto", input=None, metadata=None
    )
    ga: ResponseCreateEventParam = {
        "type": "response.create",
        "response": {
            "conversation": "none",
            "output_modalities": ["text"],
            "instructions": "Summarise.",
            "audio": {"output": {"voice": "cedar", "format": {"type": "audio/pcma"}}},
            "input": [
                {"type": "item_reference", "id": "item_1"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]},
            ],
            "metadata": {"k": "v"},
            "max_output_tokens": 50,
        },
    }
    assert parse(ga) == ce.ResponseCreate(
        event_id=None,
        overrides=SessionPatch(
            output_modalities=("text",),
            instructions="Summarise.",
            voice="cedar",
            output_format=AudioFormat.PCMA,
            max_output_tokens=50,
        ),
        conversation="none",
        input=(
            ItemReference(id="item_1"),
            MessageSpec(id=None, role="user", content=(ContentPart(type="input_text", text="x"),)),
        ),
        metadata={"k": "v"},
    )
    beta = parse({"type": "response.create", "response": {"modalities": ["text"], "voice": "ash", "temperature": 0.7}})
    assert isinstance(beta, ce.ResponseCreate)
    assert beta.overrides == SessionPatch(output_modalities=("text",), voice="ash", temperature=0.7)
    assert parse({"type": "response.cancel", "response_id": "r1"}) == ce.ResponseCancel(event_id=None, response_id="r1")
    assert parse({"type": "response.cancel"}) == ce.ResponseCancel(event_id=None, response_id=None)


# fmt: off
@pytest.mark.parametrize(
    ("raw", "code", "param", "event_id"),
    [
        ("{not json", "invalid_json", None, None),
        (b"\xff\xfe", "invalid_json", None, None),
        ("[1, 2]", "invalid_event", None, None),
        ({"event_id": "e1"}, "missing_required_parameter", "type", "e1"),
        ({"type": 7, "event_id": "e1"}, "invalid_value", "type", "e1"),
        ({"type": "response.audio.delta", "event_id": "e2"}, "unknown_event_type", "type", "e2"),
        ({"type": "input_audio_buffer.commit", "event_id": 5}, "invalid_value", "event_id", None),
        ({"type": "input_audio_buffer.append", "event_id": "e3"}, "missing_required_parameter", "audio", "e3"),
        ({"type": "input_audio_buffer.append", "audio": "not base64!", "event_id": "e4"},
         "invalid_base64", "audio", "e4"),
        ({"type": "input_audio_buffer.append", "audio": "AAE"}, "invalid_base64", "audio", None),
        ({"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": "1"},
         "invalid_value", "audio_end_ms", None),
        ({"type": "conversation.item.truncate", "item_id": "i", "content_index": True, "audio_end_ms": 1},
         "invalid_value", "content_index", None),
        ({"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": -1},
         "invalid_value", "audio_end_ms", None),
        ({"type": "conversation.item.delete", "item_id": 3}, "invalid_value", "item_id", None),
        ({"type": "conversation.item.create",
          "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": 1}]}},
         "invalid_value", "item.content[0].text", None),
        ({"type": "conversation.item.create",
          "item": {"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "x"}]}},
         "invalid_value", "item.content[0].type", None),
        ({"type": "conversation.item.create",
          "item": {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "@@"}]}},
         "invalid_base64", "item.content[0].audio", None),
        ({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": ["hi"]}},
         "invalid_value", "item.content[0]", None),
        ({"type": "conversation.item.create",
          "item": {"type": "message", "role": "user", "content": [{"type": "output_text", "text": "x"}]}},
         "invalid_value", "item.content[0].type", None),
        ({"type": "conversation.item.create", "item": {"type": "message", "role": "tool", "content": []}},
         "invalid_value", "item.role", None),
        ({"type": "conversation.item.create", "item": {"type": "mcp_call"}}, "invalid_value", "item.type", None),
        ({"type": "conversation.item.create", "item": {"type": "item_reference", "id": "x"}},
         "invalid_value", "item.type", None),
        ({"type": "conversation.item.create", "item": {"type": "function_call_output", "output": "x"}},
         "missing_required_parameter", "item.call_id", None),
        ({"type": "conversation.item.create", "item": []}, "invalid_value", "item", None),
        ({"type": "session.update"}, "missing_required_parameter", "session", None),
        ({"type": "session.update", "session": {"type": "translation"}}, "invalid_value", "session.type", None),
        ({"type": "session.update", "event_id": "s1",
          "session": {"audio": {"input": {"format": {"type": "audio/opus"}}}}},
         "invalid_value", "session.audio.input.format.type", "s1"),
        ({"type": "session.update", "session": {"audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}}},
         "invalid_value", "session.audio.output.format.rate", None),
        ({"type": "session.update", "session": {"input_audio_format": "opus"}},
         "invalid_value", "session.input_audio_format", None),
        ({"type": "session.update", "session": {"output_modalities": ["video"]}},
         "invalid_value", "session.output_modalities[0]", None),
        ({"type": "session.update", "session": {"output_modalities": []}},
         "invalid_value", "session.output_modalities", None),
        ({"type": "session.update", "session": {"modalities": "audio"}}, "invalid_value", "session.modalities", None),
        ({"type": "session.update",
          "session": {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 1.5}}}}},
         "invalid_value", "session.audio.input.turn_detection.threshold", None),
        ({"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"type": "push_to_talk"}}}}},
         "invalid_value", "session.audio.input.turn_detection.type", None),
        ({"type": "session.update", "session": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 0.5}}},
         "invalid_value", "session.turn_detection.silence_duration_ms", None),
        ({"type": "session.update",
          "session": {"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": "yes"}}}}},
         "invalid_value", "session.audio.input.turn_detection.create_response", None),
        ({"type": "session.update", "session": {"tools": [{"type": "mcp", "server_label": "x"}]}},
         "invalid_value", "session.tools[0].type", None),
        ({"type": "session.update", "session": {"tools": [{"type": "function"}]}},
         "missing_required_parameter", "session.tools[0].name", None),
        ({"type": "session.update", "session": {"tool_choice": "sometimes"}},
         "invalid_value", "session.tool_choice", None),
        ({"type": "session.update", "session": {"max_output_tokens": 5000}},
         "invalid_value", "session.max_output_tokens", None),
        ({"type": "session.update", "session": {"max_output_tokens": "lots"}},
         "invalid_value", "session.max_output_tokens", None),
        ({"type": "session.update", "session": {"max_output_tokens": 0}},
         "invalid_value", "session.max_output_tokens", None),
        ({"type": "session.update", "session": {"audio": {"output": {"voice": 3}}}},
         "invalid_value", "session.audio.output.voice", None),
        ({"type": "session.update", "session": {"audio": {"output": {"speed": 4}}}},
         "invalid_value", "session.audio.output.speed", None),
        ({"type": "session.update", "session": {"speed": 0.2}}, "invalid_value", "session.speed", None),
        ({"type": "session.update", "session": {"prompt": {"id": "pmpt_1"}}}, "invalid_value", "session.prompt", None),
        ({"type": "session.update", "session": {"include": ["item.input_audio_transcription.logprobs"]}},
         "invalid_value", "session.include", None),
        ({"type": "session.update", "session": {"truncation": "disabled"}},
         "invalid_value", "session.truncation", None),
        ({"type": "session.update", "session": {"truncation": {"type": "retention_ratio", "retention_ratio": 0.5}}},
         "invalid_value", "session.truncation", None),
        ({"type": "response.create", "event_id": "r", "response": {"prompt": {"id": "pmpt_1"}}},
         "invalid_value", "response.prompt", "r"),
        ({"type": "session.update", "session": {"temperature": "hot"}}, "invalid_value", "session.temperature", None),
        ({"type": "session.update", "session": {"instructions": None}}, "invalid_value", "session.instructions", None),
        ({"type": "response.create", "event_id": "r", "response": {"conversation": "conv_1"}},
         "invalid_value", "response.conversation", "r"),
        ({"type": "response.create", "response": {"input": [5]}}, "invalid_value", "response.input[0]", None),
        ({"type": "response.create", "response": {"metadata": {"k": 1}}}, "invalid_value", "response.metadata.k", None),
        ({"type": "response.create", "response": {"metadata": {f"k{i}": "v" for i in range(17)}}},
         "invalid_value", "response.metadata", None),
        ({"type": "response.create", "response": {"metadata": {"k" * 65: "v"}}},
         "invalid_value", "response.metadata." + "k" * 65, None),
        ({"type": "response.create", "response": {"metadata": {"k": "v" * 513}}},
         "invalid_value", "response.metadata.k", None),
        ({"type": "response.create", "response": {"output_modalities": ["speech"]}},
         "invalid_value", "response.output_modalities[0]", None),
        ({"type": "conversation.item.create", "event_id": "c", "item": {
            "type": "message", "role": "user", "status": "bogus", "content": [{"type": "input_text", "text": "x"}]}},
         "invalid_value", "item.status", "c"),
        # keys an item or content part does not have: the API refuses them; a misspelt one was read as absent
        ({"type": "conversation.item.create", "event_id": "u", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "x", "txt": "y"}]}},
         "unknown_parameter", "item.content[0].txt", "u"),
        ({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c", "output": "x",
                                                       "outptu": "y"}},
         "unknown_parameter", "item.outptu", None),
        ({"type": "response.create", "response": {"input": [{"type": "item_reference", "id": "i", "role": "user"}]}},
         "unknown_parameter", "response.input[0].role", None),
        ({"type": "conversation.item.create", "previous_itemid": "root", "item": {}},
         "unknown_parameter", "previous_itemid", None),
    ],
)
# fmt: on
def test_errors_name_code_param_and_event_id(raw: object, code: str, param: str | None, event_id: str | None) -> None:
    err = error_of(raw)
    assert (err.code, err.param, err.event_id) == (code, param, event_id)
    assert err.error_type == "invalid_request_error"


def test_too_large_is_checked_before_parsing() -> None:
    raw = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 100})
    err = error_of(raw, max_bytes=50)
    assert (err.code, err.param, err.message) == (
        "message_too_large",
        None,
        f"Event of {len(raw)} bytes exceeds the maximum of 50 bytes.",
    )
    # multi-byte characters are counted as UTF-8 bytes, not characters
    raw = json.dumps({"type": "input_audio_buffer.commit", "event_id": "é" * 20}, ensure_ascii=False)
    assert len(raw) <= 80 < len(raw.encode())
    assert error_of(raw, max_bytes=80).code == "message_too_large"
    assert ce.parse_client_event(raw, max_bytes=len(raw.encode())) == ce.InputAudioBufferCommit(event_id="é" * 20)


def test_error_messages_are_specific() -> None:
    assert error_of({"type": "nope"}).message == "Invalid value: 'nope'. Unknown client event type."
    assert error_of({"type": "session.update", "session": {"input_audio_format": "opus"}}).message == (
        "Invalid value for 'session.input_audio_format': 'opus'. "
        "Supported values are: 'pcm16', 'g711_ulaw', 'g711_alaw'."
    )
    assert error_of(
        {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": "1"}
    ).message == ("Invalid type for 'audio_end_ms': expected an integer, got string.")


def test_semantic_vad_is_server_vad_with_its_eagerness_as_the_silence_and_the_log_says_so() -> None:
    ev = parse(
        {
            "type": "session.update",
            "session": {
                "audio": {
                    "input": {
                        "turn_detection": {"type": "semantic_vad", "eagerness": "high", "interrupt_response": False}
                    }
                }
            },
        }
    )
    assert isinstance(ev, ce.SessionUpdate)
    assert ev.patch == SessionPatch(turn_detection=ServerVad(silence_duration_ms=250, interrupt_response=False))
    assert ev.served_as == ("session.audio.input.turn_detection: semantic_vad is served as server_vad, a turn ending "
                            "after 250 ms of silence (eagerness high)",)
    beta = parse({"type": "session.update", "session": {"turn_detection": {"type": "semantic_vad"}}})
    assert isinstance(beta, ce.SessionUpdate)
    assert beta.patch == SessionPatch(turn_detection=ServerVad(silence_duration_ms=500))
    assert beta.served_as == ("session.turn_detection: semantic_vad is served as server_vad, a turn ending after "
                              "500 ms of silence (eagerness auto)",)
    low = parse({"type": "session.update", "session": {"turn_detection": {"type": "semantic_vad", "eagerness": "low"}}})
    assert isinstance(low, ce.SessionUpdate) and low.patch.turn_detection == ServerVad(silence_duration_ms=1000)
    err = error_of({"type": "session.update", "session": {"turn_detection": {"type": "semantic_vad",
                                                                             "eagerness": "eager"}}})
    assert (err.code, err.param) == ("invalid_value", "session.turn_detection.eagerness")
    plain = parse({"type": "session.update", "session": {"turn_detection": {"type": "server_vad"}}})
    assert isinstance(plain, ce.SessionUpdate) and plain.served_as == ()


def test_fields_served_another_way_are_named_for_the_log() -> None:
    """Accepted so that existing clients work, but not as asked: each named in the log, none silently. They are
    checked as the API checks them: transcription's keywords and delay had been named as unknown fields, and a delay
    the API refuses ("never") was accepted."""
    ev = parse({"type": "session.update", "session": {
        "tracing": "auto", "audio": {"input": {"noise_reduction": {"type": "near_field"},
                                               "transcription": {"model": "gpt-4o-transcribe", "prompt": "Beckett"}}}}})
    assert isinstance(ev, ce.SessionUpdate)
    assert ev.served_as == (
        "session.audio.input.noise_reduction: this server has no noise reduction; the audio is used as sent",
        "session.tracing: this server keeps no traces",
        "session.audio.input.transcription.model: 'gpt-4o-transcribe' is served by this server's own Whisper",
        "session.audio.input.transcription.prompt: not used; this server's Whisper transcribes without a prompt")
    beta = parse({"type": "transcription_session.update", "session": {"input_audio_transcription": {"prompt": "x"}}})
    assert isinstance(beta, ce.SessionUpdate)
    assert beta.served_as == ("session.input_audio_transcription.prompt: not used; this server's Whisper transcribes "
                              "without a prompt",)
    hints = parse({"type": "session.update", "session": {"audio": {"input": {"transcription": {
        "keywords": ["Kubernetes"], "delay": "high"}}}}})
    assert isinstance(hints, ce.SessionUpdate)
    assert hints.served_as == (
        "session.audio.input.transcription.keywords: not used; this server's Whisper transcribes without hints",
        "session.audio.input.transcription.delay: not used; this server transcribes each turn once it has ended")
    for bad, param in (({"delay": "never"}, "delay"), ({"keywords": "Kubernetes"}, "keywords"),
                       ({"keywords": [7]}, "keywords[0]")):
        err = error_of({"type": "session.update", "session": {"audio": {"input": {"transcription": bad}}}})
        assert (err.code, err.param) == ("invalid_value", f"session.audio.input.transcription.{param}")
    quiet = parse({"type": "session.update", "session": {"tracing": None, "audio": {"input": {
        "noise_reduction": None, "transcription": {"model": "whisper-1", "prompt": ""}}}}})
    assert isinstance(quiet, ce.SessionUpdate) and quiet.served_as == ()


def test_transcription_languages_are_possible_languages_one_of_which_is_the_language_asked_for() -> None:
    """GA transcription.languages: one possible language is asked of the ASR as `language` is; of several it detects
    the language, and the log says so; `language` wins over both. An array of strings, checked as the API types it."""
    def transcription(**t: object) -> tuple[Transcription, tuple[str, ...]]:
        ev = parse({"type": "session.update", "session": {"audio": {"input": {"transcription": t}}}})
        assert isinstance(ev, ce.SessionUpdate) and isinstance(ev.patch.transcription, Transcription)
        return ev.patch.transcription, ev.served_as

    one, one_said = transcription(languages=["de"])
    several, several_said = transcription(languages=["de", "fr"])
    chosen, chosen_said = transcription(language="fr", languages=["de", "fr"])
    assert (one.asr_language, one_said) == ("de", ())
    assert (several.languages, several.asr_language) == (("de", "fr"), None)
    assert several_said == ("session.audio.input.transcription.languages: Whisper detects the language of each turn; "
                            "it cannot be held to several",)
    assert (chosen.asr_language, chosen_said) == ("fr", ())
    for bad, param in (("de", "languages"), ([1], "languages[0]")):
        err = error_of({"type": "session.update", "session": {"audio": {"input": {"transcription": {
            "languages": bad}}}}})
        assert (err.code, err.param) == ("invalid_value", f"session.audio.input.transcription.{param}")


def test_beta_transcription_session_update_is_a_transcription_sessions_update() -> None:
    """The beta API's transcription_session.update (openai's client.beta.realtime): its session object, which has no
    type, updates a transcription session (language, VAD, format), as session.update with type transcription does."""
    ev = parse({"type": "transcription_session.update", "event_id": "t1", "session": {
        "input_audio_format": "pcm16",
        "input_audio_transcription": {"model": "whisper-1", "language": "de", "prompt": "Namen"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 700},
        "input_audio_noise_reduction": None}})
    assert ev == ce.SessionUpdate(event_id="t1", patch=SessionPatch(
        kind="transcription", input_format=AudioFormat.PCM,
        transcription=Transcription(model="whisper-1", language="de", prompt="Namen"),
        turn_detection=ServerVad(silence_duration_ms=700)), served_as=(
        "session.input_audio_transcription.prompt: not used; this server's Whisper transcribes without a prompt",))
    err = error_of({"type": "transcription_session.update", "session": {"include": ["item.x.logprobs"]}})
    assert (err.code, err.param) == ("invalid_value", "session.include")


def test_session_keys_the_api_has_but_this_server_does_not_use_are_accepted() -> None:
    ev = parse(
        {
            "type": "session.update",
            "session": {"type": "realtime", "model": "gpt-realtime", "prompt": None, "include": []},
        }
    )
    # the model is carried for the session to compare with the one it connected with, not patched
    assert ev == ce.SessionUpdate(event_id=None, patch=SessionPatch(kind="realtime"), model="gpt-realtime")


@pytest.mark.parametrize("status", ["completed", "incomplete", "in_progress", None])
def test_an_item_status_the_api_allows_is_accepted(status: str | None) -> None:
    ev = parse({"type": "conversation.item.create", "item": {
        "type": "message", "role": "assistant", "status": status, "content": [{"type": "output_text", "text": "x"}]}})
    assert isinstance(ev, ce.ConversationItemCreate)
