"""Whole models through the Triton kernels: natively on CUDA, under the interpreter in CI (conftest.py).

The op tests check each kernel alone against its reference; these check how the models call them: strides and
dtypes of real activations, the engine's paged metadata (block tables, cumulative offsets, a cached prefix), the
NSF source's phase carried from one vocoder window to the next, the flow's broadcast time terms and conv outputs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kernels import reference_ops
from lm_engine.engine.config import EngineConfig
from lm_engine.engine_api import Engine
from speech_decoder.checkpoint import write_cosyvoice_folder
from speech_decoder.cosyvoice_model import CosyVoiceModel
from speech_decoder.hift.streaming import HiFTStream

sys.path.insert(0, str(Path(__file__).parents[1] / "lm_engine"))
from test_step1_reference import load_state, step1_logits  # noqa: E402


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got - ref).norm() / ref.norm())


def test_step1_engine_through_the_kernels_matches_the_eager_reference(triton_modules, tiny_ckpt) -> None:
    path = tiny_ckpt("h6g2")  # 6 query heads in 2 groups: non-power-of-two slopes, GQA 3
    cfg, sd = load_state(path)
    eng = Engine.from_pretrained(path, device=triton_modules.device, dtype=torch.float32, progress=False,
                                 config=EngineConfig(block_size=4, num_kv_blocks=64, max_num_batched_tokens=16,
                                                     enforce_eager=True))
    try:
        ids = torch.randint(5, cfg["vocab_size"], (27,), generator=torch.Generator().manual_seed(0)).tolist()
        ref = step1_logits(cfg, sd, ids)
        sid = eng.open(ids[:21])  # 21 tokens: two prefill chunks (16 + 5), a partly filled last block
        rows = [eng.next_logits(sid)]
        for t in ids[21:]:
            eng.extend(sid, [t])  # q_len 1: the paged decode kernel
            rows.append(eng.next_logits(sid))
        got = torch.stack(rows).cpu()
        assert _rel(got, ref[20:]) <= 1e-4
        assert torch.equal(got.argmax(-1), ref[20:].argmax(-1))
        eng.release(sid)
    finally:
        eng.close()


@pytest.fixture(scope="module")
def cosyvoice(triton_modules, tmp_path_factory) -> CosyVoiceModel:
    # fp32 flow on CUDA too (bf16 is its default there): the tests compare kernels with torch, not dtypes
    return CosyVoiceModel.load(write_cosyvoice_folder(tmp_path_factory.mktemp("cv"), "tiny"),
                               device=triton_modules.device, flow_dtype=torch.float32)


@pytest.fixture(scope="module")
def hift(cosyvoice):
    return cosyvoice.hift


def _mel(frames: int, device: str) -> torch.Tensor:
    return (torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(1)) * 2 - 5).to(device)


def test_hift_through_the_kernels_matches_its_reference_ops(triton_modules, hift) -> None:
    mel = _mel(24, triton_modules.device)
    fused = hift.inference(mel, seed=3)
    with reference_ops():
        eager = hift.inference(mel, seed=3)
    assert fused.shape == eager.shape == (1, 24 * 256)
    assert float(eager.std()) > 1e-4  # a silent model would make the comparison empty
    assert _rel(fused, eager) < 1e-4


def test_streamed_hift_through_the_kernels_equals_offline(triton_modules, hift) -> None:
    mel = _mel(30, triton_modules.device)
    offline = hift.inference(mel, seed=5)[0].cpu().numpy()
    stream = HiFTStream(hift, seed=5)
    audio = np.concatenate([stream.push_mel(mel[0, :, i:i + 10]) for i in range(0, 30, 10)] + [stream.finish()])
    assert audio.shape == offline.shape
    assert float(np.linalg.norm(audio - offline) / np.linalg.norm(offline)) < 1e-3


def test_flow_window_through_the_kernels_matches_its_reference_ops(triton_modules, cosyvoice, monkeypatch) -> None:
    """A CFG-doubled window (prompt + target) through the linear (GELU; add + LayerNorm) and group_norm_mish
    kernels, 10 Euler steps."""
    launches = []
    for name in ("linear_triton", "group_norm_mish_triton"):
        kernel = getattr(triton_modules.flow_ops, name)
        monkeypatch.setattr(triton_modules.flow_ops, name,
                            lambda *a, _k=kernel, _n=name, **kw: launches.append(_n) or _k(*a, **kw))
    g = torch.Generator().manual_seed(4)
    dev = triton_modules.device
    args = (torch.randint(0, 5120, (1, 9), generator=g).to(dev), torch.randint(0, 5120, (1, 6), generator=g).to(dev),
            (torch.randn(1, 12, 80, generator=g) - 5).to(dev), torch.randn(1, 192, generator=g).to(dev))
    fused = cosyvoice.flow.inference(*args, seed=2)
    assert {"linear_triton", "group_norm_mish_triton"} <= set(launches)
    with reference_ops():
        eager = cosyvoice.flow.inference(*args, seed=2)
    assert fused.shape == eager.shape and float(eager.std()) > 1e-3
    assert _rel(fused, eager) < 1e-4  # fp32 kernels vs torch: rounding differences only, through 10 steps
