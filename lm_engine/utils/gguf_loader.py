"""GGUF (llama.cpp) Qwen2 checkpoints, dequantised to float32 with the `gguf` package, under HF tensor names.

llama.cpp stores Qwen2 q/k weights unpermuted (only its LLaMA converter permutes), and dequantize() returns
[out, in] row-major arrays, i.e. the HF layout. A separate output.weight means an untied head (the embedded Q4_K_M
file quantises embedding and head differently).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from lm_engine.models.config import ModelConfig

_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
        "output_norm.weight": "model.norm.weight"}
_BLOCK = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
          "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj"}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)")


def hf_name(gguf_name: str) -> str:
    if gguf_name in _TOP:
        return _TOP[gguf_name]
    m = _BLOCK_RE.fullmatch(gguf_name)
    if m is None or m.group(2) not in _BLOCK:
        raise KeyError(f"unknown GGUF tensor {gguf_name!r}")
    return f"model.layers.{m.group(1)}.{_BLOCK[m.group(2)]}.{m.group(3)}"


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def read_gguf(path: Path | str) -> tuple[ModelConfig, Any]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    if arch != "qwen2":
        raise ValueError(f"{path}: GGUF architecture {arch!r}; only qwen2 is supported")
    names = {t.name for t in reader.tensors}
    heads = int(_field(reader, "qwen2.attention.head_count"))
    hidden = int(_field(reader, "qwen2.embedding_length"))
    cfg = ModelConfig.from_hf({
        "model_type": "qwen2",
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data),
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, "qwen2.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, "qwen2.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, "qwen2.attention.head_count_kv")),
        "rms_norm_eps": float(_field(reader, "qwen2.attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(_field(reader, "qwen2.context_length")),
        "rope_theta": float(_field(reader, "qwen2.rope.freq_base")),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": _field(reader, "tokenizer.ggml.padding_token_id"),
        "torch_dtype": "float32",
    })
    return cfg, reader


def iter_gguf(reader: Any, progress: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    from gguf import quants

    for t in tqdm(reader.tensors, desc="dequantising GGUF", unit="tensor", disable=not progress):
        arr = quants.dequantize(t.data, t.tensor_type)
        yield hf_name(t.name), torch.from_numpy(np.array(arr, dtype=np.float32))  # own, writable copy
