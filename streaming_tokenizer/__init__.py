"""Speech -> LM input. In the embedded profile: Whisper ASR text, per turn, streamed as partials.
For Step-Audio: the dual-codebook tokenizer in `streaming_tokenizer.step_audio` (imports torch: import
it from there, lazily).

Synchronous objects; callers run them on worker threads. Importing this package loads no model.
"""

from __future__ import annotations

from streaming_tokenizer.assets import AsrAssetError, default_cache_dir, tiny_en_dir, whisper_base_dir
from streaming_tokenizer.transcriber import Asr, StreamingTranscriber
from streaming_tokenizer.whisper_asr import WhisperAsr, normalize_language

__all__ = [
    "Asr",
    "AsrAssetError",
    "StreamingTranscriber",
    "WhisperAsr",
    "default_cache_dir",
    "normalize_language",
    "tiny_en_dir",
    "whisper_base_dir",
]
