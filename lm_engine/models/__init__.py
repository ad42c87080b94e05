"""Model families as plain torch modules built from a ModelConfig."""
from __future__ import annotations

from torch import nn

from lm_engine.models.config import ModelConfig


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.family == "step1":
        from lm_engine.models.step1 import Step1ForCausalLM
        return Step1ForCausalLM(cfg)
    from lm_engine.models.qwen2 import Qwen2ForCausalLM
    return Qwen2ForCausalLM(cfg)
