from __future__ import annotations

import pytest
import torch

from lm_engine.engine.config import EngineConfig
from lm_engine.engine_api import Engine


@pytest.fixture
def eng(tiny_ckpt):
    """An engine over the tiny TTS-shaped Step-1 checkpoint, on the CPU in fp32, with small blocks (4 tokens) so that
    short prompts already span several."""
    e = Engine.from_pretrained(tiny_ckpt("tts"), device="cpu", dtype=torch.float32, progress=False,
                               config=EngineConfig(block_size=4, num_kv_blocks=128))
    yield e
    e.close()
