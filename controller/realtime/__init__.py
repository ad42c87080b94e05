"""Pure OpenAI Realtime (GA) protocol: client event parsing, session config, server event builders.

No I/O: the session shell feeds raw messages in and sends the returned dicts out.
"""

from __future__ import annotations

from controller.errors import RemoteProtocolError
from controller.realtime.client_events import (
    DEFAULT_MAX_EVENT_BYTES,
    ClientEvent,
    ConversationItemCreate,
    ConversationItemDelete,
    ConversationItemRetrieve,
    ConversationItemTruncate,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCommit,
    OutputAudioBufferClear,
    ResponseCancel,
    ResponseCreate,
    SessionUpdate,
    parse_client_event,
)
from controller.realtime.items import (
    ContentPart,
    FunctionCallOutputSpec,
    FunctionCallSpec,
    ItemReference,
    ItemSpec,
    MessageSpec,
    assistant_message_item,
    function_call_item,
    function_call_output_item,
    spec_to_wire,
    system_item,
    user_audio_item,
    user_text_item,
)
from controller.realtime.server_events import (
    SequentialIds,
    ServerEvents,
    audio_part,
    response,
    status_details,
    text_part,
    usage,
)
from controller.realtime.session_config import (
    UNSET,
    AudioFormat,
    FunctionTool,
    ServerVad,
    SessionConfig,
    SessionPatch,
    ToolChoice,
    ToolChoiceFunction,
    Transcription,
    apply_patch,
    session_to_wire,
)
from controller.realtime.session_update import apply_session_update, parse_session_patch

# docs/INTERFACES.md calls the parser's error RealtimeProtocolError; it is RemoteProtocolError.
RealtimeProtocolError = RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "ClientEvent",
    "ConversationItemCreate",
    "ConversationItemDelete",
    "ConversationItemRetrieve",
    "ConversationItemTruncate",
    "InputAudioBufferAppend",
    "InputAudioBufferClear",
    "InputAudioBufferCommit",
    "OutputAudioBufferClear",
    "ResponseCancel",
    "ResponseCreate",
    "SessionUpdate",
    "parse_client_event",
    "ContentPart",
    "FunctionCallOutputSpec",
    "FunctionCallSpec",
    "ItemReference",
    "ItemSpec",
    "MessageSpec",
    "assistant_message_item",
    "function_call_item",
    "function_call_output_item",
    "spec_to_wire",
    "system_item",
    "user_audio_item",
    "user_text_item",
    "SequentialIds",
    "ServerEvents",
    "audio_part",
    "response",
    "status_details",
    "text_part",
    "usage",
    "UNSET",
    "AudioFormat",
    "FunctionTool",
    "ServerVad",
    "SessionConfig",
    "SessionPatch",
    "ToolChoice",
    "ToolChoiceFunction",
    "Transcription",
    "apply_patch",
    "session_to_wire",
    "apply_session_update",
    "parse_session_patch",
    "RealtimeProtocolError",
]
