"""Qwen2 logits from the engine vs `transformers` on the dequantised embedded GGUF (Qwen2.5-Coder-0.5B Q4_K_M).

The GGUF is dequantised once (gguf package) into HF-named fp32 tensors; transformers' Qwen2ForCausalLM and our engine
are both built from those tensors, so the comparison isolates the architectures (RoPE, q/k/v biases, GQA 14:2,
untied head in this file) and our paged-cache path.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow

# Qwen2.5 chat template via transformers' tokenizer (computed once, kept as ids to spare CI a 70 s tokenizer
# conversion): "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital
# of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n"
PROMPT = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 3838, 374, 279, 6722,
          315, 9625, 30, 21806, 304, 825, 11652, 13, 151645, 198, 151644, 77091, 198]


def test_qwen2_matches_transformers_on_the_embedded_gguf():
    transformers = pytest.importorskip("transformers")
    from lm_engine.assets import AssetError, embedded_gguf_path

    try:
        path = embedded_gguf_path()
    except AssetError as exc:
        pytest.skip(f"embedded GGUF not available: {exc}")
    from lm_engine.engine.config import EngineConfig, SamplingParams
    from lm_engine.engine_api import Engine
    from lm_engine.utils.gguf_loader import iter_gguf, read_gguf

    cfg, reader = read_gguf(path)
    state = dict(iter_gguf(reader, progress=False))
    hf_cfg = transformers.Qwen2Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        rms_norm_eps=cfg.rms_norm_eps, rope_theta=cfg.rope_theta, max_position_embeddings=cfg.max_seq_len,
        tie_word_embeddings=cfg.tie_word_embeddings, attn_implementation="eager", torch_dtype=torch.float32)
    with torch.device("meta"):
        hf = transformers.Qwen2ForCausalLM(hf_cfg)
    missing, unexpected = hf.load_state_dict(state, strict=False, assign=True)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    hf.model.rotary_emb = type(hf.model.rotary_emb)(config=hf_cfg)  # rebuilt off the meta device
    hf.eval()
    with torch.inference_mode():
        ref = hf(torch.tensor([PROMPT])).logits[0].float()
    eng = Engine.from_tensors(cfg, state.items(), torch.device("cpu"), torch.float32,
                              EngineConfig(block_size=16, num_kv_blocks=32))
    del state
    got = eng.logits(PROMPT)
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    assert (got - ref).abs().max() < 2e-3 * ref.abs().max()
    # Decode through the paged cache: greedy continuation equals transformers' greedy continuation.
    out = eng.generate(PROMPT, SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True))
    with torch.inference_mode():
        want = hf.generate(torch.tensor([PROMPT]), max_new_tokens=8, do_sample=False)[0, len(PROMPT):].tolist()
    assert out == want
    eng.close()
