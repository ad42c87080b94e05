"""Step-Audio's streaming dual-codebook speech tokenizer (vq02 linguistic + vq06 semantic -> LM ids)."""

from .checkpoint import write_tokenizer_folder
from .config import StepTokenizerError, StreamConfig, TokenizerConfigError
from .tokenizer import (
    StepAudioTokenizer, StreamingStepTokenizer, Vq06Backend, ids_to_text, interleave,
)  # fmt: skip

__all__ = [
    "StepAudioTokenizer", "StepTokenizerError", "StreamConfig", "StreamingStepTokenizer", "TokenizerConfigError",
    "Vq06Backend", "ids_to_text", "interleave", "write_tokenizer_folder",
]  # fmt: skip
