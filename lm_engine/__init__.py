"""lm_engine: our inference engine and the chat backends the controller talks to.

Importing this package does no work: names resolve lazily so that the embedded profile never imports torch.
"""
from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lm_engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
