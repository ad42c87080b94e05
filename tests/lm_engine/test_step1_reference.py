"""An independent, straightforward eager Step-1 written from the facts in STEP_AUDIO.md.

Dense attention over the whole sequence with an explicit sqrt-ALiBi bias -slope_h * sqrt(i - j), fp32 throughout.
Nothing here imports lm_engine or kernels.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


def slopes(n_heads: int) -> torch.Tensor:
    n = 2 ** math.floor(math.log2(n_heads))
    s = [2 ** (-8 * i / n) for i in range(1, n + 1)]
    extra = [2 ** (-4 * k / n) for k in range(1, 2 * n, 2)]  # slopes of the 2n-head series at odd steps
    return torch.tensor(s + extra[: n_heads - n])


def load_state(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    cfg = json.loads((path / "config.json").read_text())
    sd: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        sd.update({k: v.float() for k, v in load_file(str(f)).items()})
    return cfg, sd


def rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def step1_logits(cfg: dict, sd: dict[str, torch.Tensor], ids: list[int]) -> torch.Tensor:
    H, G = cfg["num_attention_heads"], cfg["num_attention_groups"]
    D = cfg["hidden_size"] // H
    eps = cfg["rms_norm_eps"]
    L = len(ids)
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    dist = (i - j).float()
    bias = -slopes(H)[:, None, None] * dist.clamp(min=0).sqrt()  # [H, L, L]
    bias = bias.masked_fill(j > i, float("-inf"))
    h = sd["model.embed_tokens.weight"][torch.tensor(ids)]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        x = rms(h, sd[p + "input_layernorm.weight"], eps)
        q = (x @ sd[p + "self_attn.q_proj.weight"].T).view(L, H, D).transpose(0, 1)
        k = (x @ sd[p + "self_attn.k_proj.weight"].T).view(L, G, D).transpose(0, 1)
        v = (x @ sd[p + "self_attn.v_proj.weight"].T).view(L, G, D).transpose(0, 1)
        group_of_head = torch.arange(H) // (H // G)
        k, v = k[group_of_head], v[group_of_head]
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(D) + bias, dim=-1)
        o = (att @ v).transpose(0, 1).reshape(L, H * D)
        h = h + o @ sd[p + "self_attn.o_proj.weight"].T
        x = rms(h, sd[p + "post_attention_layernorm.weight"], eps)
        gate = x @ sd[p + "mlp.gate_proj.weight"].T
        up = x @ sd[p + "mlp.up_proj.weight"].T
        h = h + (torch.nn.functional.silu(gate) * up) @ sd[p + "mlp.down_proj.weight"].T
    h = rms(h, sd["model.norm.weight"], eps)
    return h @ sd["lm_head.weight"].T



@pytest.mark.parametrize("heads", [1, 6, 8, 12, 24, 48, 96])
def test_reference_slopes_are_the_engines(heads):
    from kernels.attention import alibi_slopes

    assert torch.equal(slopes(heads), alibi_slopes(heads))
