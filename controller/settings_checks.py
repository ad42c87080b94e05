"""What a session.update or a response.create asks of a session's settings, checked whole before any of it applies:
the first thing refused raises RemoteProtocolError naming its field, and the session stays as it was."""

from __future__ import annotations

import logging

from controller.errors import RemoteProtocolError
from controller.pipeline import SpeechPipeline
from controller.prompt_budget import PromptBudget
from controller.realtime.session_config import UNSET, SessionConfig, SessionPatch, Transcription, apply_patch
from controller.realtime.session_update import check_language, check_tool_choice, check_tools, check_voice
from streaming_tokenizer.whisper_asr import normalize_language

# What only a session's replies use (SessionConfig field names): a transcription session has none.
REPLY_FIELDS = frozenset({"instructions", "voice", "speed", "output_modalities", "output_format", "tools",
                          "tool_choice", "temperature", "max_output_tokens"})


def log_served_as(log: logging.LoggerAdapter[logging.Logger], event_type: str, served_as: tuple[str, ...]) -> None:
    for line in served_as:
        log.warning("%s: %s", event_type, line)


class SettingsChecks:
    def __init__(self, pipeline: SpeechPipeline, budget: PromptBudget) -> None:
        """pipeline: its voices, languages and tools_refused are what a session may ask for; budget: the session's,
        which its instructions must fit."""
        self._pipeline = pipeline
        self._budget = budget

    async def session_update(self, current: SessionConfig, new: SessionConfig, *, model: str, model_chosen: bool,
                             requested_model: str | None, voice_lock: str | None) -> None:
        """A session.update that makes `new` of `current`. model: the session's; model_chosen: whether its client
        named it (on connecting or in a session.update); requested_model: the update's session.model, if any;
        voice_lock: why the voice may not change now (None: it may), the end of the refusal's sentence."""
        if new.kind != current.kind:  # in the GA API's words, which a beta transcription_session.update gets too
            raise RemoteProtocolError(
                f"Passing a {new.kind} session update event to a {current.kind} session is not allowed (a session's "
                "type is set when it connects: ?intent=transcription for a transcription session).",
                code="invalid_parameter", param="session.type")
        if requested_model is not None and requested_model != model and model_chosen:
            # as the API: "any field except voice and model"
            raise RemoteProtocolError(
                f"This session runs model {model!r} (the ?model= it connected with); session.model cannot "
                f"change to {requested_model!r}.", code="invalid_value", param="session.model")
        self._voice(new.voice, "session.audio.output.voice", current=current, lock=voice_lock)
        self._languages(new.transcription)
        check_tools(new, path="session", refused=self._pipeline.tools_refused)
        await self._budget.check_instructions(new, current, "session.instructions")
        check_tool_choice(new, path="session")

    async def response_create(self, current: SessionConfig, overrides: SessionPatch, *, voice_lock: str | None) -> None:
        """A response.create's overrides of the session's configuration `current`."""
        if overrides.voice is not UNSET:
            self._voice(overrides.voice, "response.audio.output.voice", current=current, lock=voice_lock)
        overridden = apply_patch(current, overrides)
        check_tools(overridden, path="response", refused=self._pipeline.tools_refused)
        await self._budget.check_instructions(overridden, current, "response.instructions")
        check_tool_choice(overridden, path="response")

    def _voice(self, voice: str, param: str, *, current: SessionConfig, lock: str | None) -> None:
        """A voice of the profile's, and as the Realtime API: a conversation keeps the voice its assistant audio was
        spoken in, in every reply (lock says why it is fixed now)."""
        check_voice(voice, param=param, voices=self._pipeline.voices)
        if voice != current.voice and lock is not None:
            raise RemoteProtocolError(f"Cannot update a conversation's voice {lock}.", code="cannot_update_voice",
                                      param=param)

    def _languages(self, transcription: Transcription | None) -> None:
        """`language` and each of `languages` is one the ASR knows: either may become the language it is asked for."""
        if transcription is None:
            return
        param = "session.audio.input.transcription"
        for language, at in [(transcription.language, f"{param}.language"),
                             *((code, f"{param}.languages[{i}]") for i, code in enumerate(transcription.languages))]:
            check_language(language, normalize_language(language), languages=self._pipeline.languages, param=at)
