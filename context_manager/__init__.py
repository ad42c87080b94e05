"""Pure conversation state: items, chat-format rendering under a token budget, persona defaults."""

from __future__ import annotations

from context_manager.conversation import (
    ROOT,
    AssistantMessage,
    Conversation,
    ConversationError,
    DuplicateItemError,
    FunctionCall,
    FunctionCallOutput,
    InvalidEditError,
    Item,
    SystemMessage,
    UnknownItemError,
    UserMessage,
)
from context_manager.persona import DEFAULT_INSTRUCTIONS, Persona
from context_manager.template_costs import TemplateCosts, measure_template_costs
from context_manager.token_counts import TokenCounts

__all__ = [
    "ROOT",
    "AssistantMessage",
    "Conversation",
    "ConversationError",
    "DuplicateItemError",
    "FunctionCall",
    "FunctionCallOutput",
    "InvalidEditError",
    "Item",
    "SystemMessage",
    "TemplateCosts",
    "measure_template_costs",
    "UnknownItemError",
    "UserMessage",
    "DEFAULT_INSTRUCTIONS",
    "Persona",
    "TokenCounts",
]
