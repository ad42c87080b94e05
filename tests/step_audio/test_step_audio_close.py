"""StepAudioPipeline.close() as a library user calls it: each model used after it says that the pipeline is closed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.app import AppConfig, load_pipeline
from lm_engine.chat import ChatRequest
from tests.closed_pipeline import assert_each_use_says_closed, drain

pytestmark = pytest.mark.slow


async def test_each_model_used_after_the_close_says_the_pipeline_is_closed(tiny_model_dir: Path) -> None:
    """After close(), a reply and speech raised RuntimeError("cannot schedule new futures after shutdown"), and the
    VAD, the token counts and a cloned voice went on as if nothing had closed. Each now says the pipeline is closed,
    as the embedded pipeline's do."""
    pipeline = load_pipeline(AppConfig(profile="tiny", model_path=tiny_model_dir, threads=2))
    pipeline.close()
    pipeline.close()  # a second close is no error
    request = ChatRequest(messages=[{"role": "user", "content": "Hello"}])
    await assert_each_use_says_closed("tiny", [
        ("voice activity detection", pipeline.new_vad),
        ("audio tokenizer", pipeline.new_listener),
        ("text-to-speech", lambda: drain(pipeline.synthesize("Hello.", pipeline.default_voice))),
        ("text-to-speech", lambda: pipeline.register_speaker("Clone", np.zeros(48000, np.float32), 16000, "Hello.")),
        ("chat LM", lambda: drain(pipeline.reply(request))),
        ("chat LM", lambda: pipeline.count_tokens("Hello")),
        ("chat LM", lambda: pipeline.count_audio_tokens("<audio_1>")),
    ])
