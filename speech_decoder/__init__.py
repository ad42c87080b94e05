"""speech_decoder: text or LM audio tokens -> waveform (Piper TTS in the embedded profile; Step-Audio flow + HiFT).

Importing this package does no work: names resolve lazily so that the embedded profile never imports torch.
"""
from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it. Each section is owned by the part it names.
_EXPORTS: dict[str, str] = {
    # --- embedded TTS (Piper) and text chunking ---
    "PiperTts": "speech_decoder.piper_tts",
    "PiperConfig": "speech_decoder.piper_tts",
    "PiperError": "speech_decoder.piper_tts",
    "SentenceChunker": "speech_decoder.sentences",
    "clean_for_speech": "speech_decoder.sentences",
    # --- Step-Audio speech path (flow matching, HiFT) ---
    "CosyVoiceModel": "speech_decoder.cosyvoice_model",
    "SpeakerPrompt": "speech_decoder.cosyvoice_model",
    "StreamingDecoder": "speech_decoder.streaming_decoder",
    "StreamingDecoderConfig": "speech_decoder.streaming_decoder",
    "FlowBatcher": "speech_decoder.flow_batch",
    "write_cosyvoice_folder": "speech_decoder.checkpoint",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'speech_decoder' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
