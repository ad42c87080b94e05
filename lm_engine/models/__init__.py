"""Model families as plain torch modules built from a ModelConfig."""
from __future__ import annotations

from typing import TYPE_CHECKING

from lm_engine.models.config import ModelConfig

if TYPE_CHECKING:  # each family's module is imported only when it is built
    from lm_engine.models.decoder import DecoderForCausalLM


def build_model(cfg: ModelConfig) -> DecoderForCausalLM:
    if cfg.family == "step1":
        from lm_engine.models.step1 import Step1ForCausalLM
        return Step1ForCausalLM(cfg)
    from lm_engine.models.qwen2 import Qwen2ForCausalLM
    return Qwen2ForCausalLM(cfg)
