"""lm_engine: our inference engine and the chat backends the controller talks to.

Importing this package does no work: names resolve lazily so that the embedded profile never imports torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy exports resolve to, for type checkers (else each is Any); "X as X" re-exports
    from lm_engine.assets import embedded_gguf_path as embedded_gguf_path
    from lm_engine.backends.llamacpp import LlamaCppBackend as LlamaCppBackend, LlamaCppConfig as LlamaCppConfig
    from lm_engine.backends.remote import RemoteChatBackend as RemoteChatBackend
    from lm_engine.chat import (ChatBackend as ChatBackend, ChatBackendError as ChatBackendError,
                                ChatDelta as ChatDelta, ChatRequest as ChatRequest,
                                ChatRequestError as ChatRequestError, ChatUsage as ChatUsage,
                                PrefillBackend as PrefillBackend, ToolCallDelta as ToolCallDelta)
    from lm_engine.checkpoint import (make_checkpoint as make_checkpoint,
                                      write_step1_checkpoint as write_step1_checkpoint)
    from lm_engine.engine.config import EngineConfig as EngineConfig, SamplingParams as SamplingParams
    from lm_engine.engine.llm_engine import EngineError as EngineError, TokenDelta as TokenDelta
    from lm_engine.engine_api import Engine as Engine
    from lm_engine.models.config import ModelConfig as ModelConfig
    from lm_engine.tokenizer import Step1Tokenizer as Step1Tokenizer

# name -> module that defines it. Each section is owned by the part of the engine it names.
_EXPORTS: dict[str, str] = {
    # --- chat backends (embedded profile, remote) ---
    "ChatRequest": "lm_engine.chat",
    "ChatDelta": "lm_engine.chat",
    "ChatUsage": "lm_engine.chat",
    "ToolCallDelta": "lm_engine.chat",
    "ChatBackend": "lm_engine.chat",
    "PrefillBackend": "lm_engine.chat",
    "ChatBackendError": "lm_engine.chat",
    "ChatRequestError": "lm_engine.chat",
    "LlamaCppBackend": "lm_engine.backends.llamacpp",
    "LlamaCppConfig": "lm_engine.backends.llamacpp",
    "RemoteChatBackend": "lm_engine.backends.remote",
    "embedded_gguf_path": "lm_engine.assets",
    # --- engine (paged KV, scheduler, models, loader) ---
    "Engine": "lm_engine.engine_api",
    "EngineConfig": "lm_engine.engine.config",
    "SamplingParams": "lm_engine.engine.config",
    "TokenDelta": "lm_engine.engine.llm_engine",
    "EngineError": "lm_engine.engine.llm_engine",
    "ModelConfig": "lm_engine.models.config",
    "Step1Tokenizer": "lm_engine.tokenizer",
    "make_checkpoint": "lm_engine.checkpoint",
    "write_step1_checkpoint": "lm_engine.checkpoint",
}


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lm_engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
