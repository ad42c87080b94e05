"""speech_decoder: text or LM audio tokens -> waveform (Piper TTS in the embedded profile; Step-Audio flow + HiFT).

Importing this package does no work: names resolve lazily so that the embedded profile never imports torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy exports resolve to, for type checkers (else each is Any); "X as X" re-exports
    from speech_decoder.checkpoint import write_cosyvoice_folder as write_cosyvoice_folder
    from speech_decoder.cosyvoice_model import CosyVoiceModel as CosyVoiceModel, SpeakerPrompt as SpeakerPrompt
    from speech_decoder.flow_batch import FlowBatcher as FlowBatcher
    from speech_decoder.piper_tts import PiperConfig as PiperConfig, PiperError as PiperError, PiperTts as PiperTts
    from speech_decoder.sentences import SentenceChunker as SentenceChunker, clean_for_speech as clean_for_speech
    from speech_decoder.streaming_decoder import (StreamingDecoder as StreamingDecoder,
                                                  StreamingDecoderConfig as StreamingDecoderConfig)

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


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'speech_decoder' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
