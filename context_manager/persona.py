"""The default persona: what the agent is told when the client gives no instructions."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_INSTRUCTIONS", "Persona"]

# Spoken output: long answers and markup read badly through TTS, so the default asks for
# short plain sentences. Clients replace it with session.update {"instructions": ...}.
DEFAULT_INSTRUCTIONS = (
    "You are a helpful voice assistant. Answer in one or two short spoken sentences. No lists or markdown."
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Persona:
    """A named default system prompt (the server's profile may swap it)."""

    name: str = "assistant"
    instructions: str = DEFAULT_INSTRUCTIONS
