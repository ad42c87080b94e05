"""Flow (MaskedDiffWithXvec) on the tiny profile: lengths, CFM maths, noise indexing, offline audio."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from speech_decoder.cosyvoice_config import CFMConfig
from speech_decoder.cosyvoice_model import SpeakerPrompt
from speech_decoder.cosyvoice_noise import cfm_noise, hash_uniform, hashed_normal
from speech_decoder.flow.encoder import rel_position_embedding, rel_shift
from speech_decoder.flow.flow import ConditionalCFM


def _prompt(seed: int = 0) -> SpeakerPrompt:
    g = torch.Generator().manual_seed(seed)
    return SpeakerPrompt(torch.randint(0, 5120, (30,), generator=g), torch.randn(62, 80, generator=g) - 5.0,
                         torch.randn(192, generator=g))


def test_rel_shift_puts_relative_position_i_minus_j() -> None:
    t, d = 5, 8
    pe = rel_position_embedding(t, d, torch.device("cpu"), torch.float32)[0]  # row n = position t-1-n
    for n in range(2 * t - 1):
        p = t - 1 - n
        assert torch.allclose(pe[n, 0::2], torch.sin(p * torch.exp(torch.arange(0, d, 2) * -(math.log(1e4) / d))))
    scores = torch.arange(2 * t - 1, dtype=torch.float32).expand(1, 1, t, 2 * t - 1)  # score = PE row
    shifted = rel_shift(scores)[0, 0]
    i, j = torch.meshgrid(torch.arange(t), torch.arange(t), indexing="ij")
    assert torch.equal(shifted, (t - 1 - (i - j)).float())


class _ConstVelocity(nn.Module):
    """v = mu (conditional) / 0 (unconditional): isolates the solver and the guidance formula."""

    def time_terms(self, t, dtype):  # noqa: ANN001, D102
        return []

    def forward(self, x, mu, t, spks, cond, time_terms=None):  # noqa: ANN001, D102
        return mu.clone()


def test_cfm_euler_cosine_schedule_and_guidance() -> None:
    cfm = ConditionalCFM(CFMConfig(), _ConstVelocity())  # type: ignore[arg-type]
    t = cfm.time_span(10, torch.device("cpu"), torch.float32)
    assert torch.allclose(t, 1 - torch.cos(torch.linspace(0, 1, 11) * math.pi / 2))
    noise, mu = torch.randn(1, 80, 7), torch.randn(1, 80, 7)
    out = cfm(noise, mu, torch.zeros(1, 80), torch.zeros(1, 80, 7), 10)
    # sum(dt) = 1, v = (1 + 0.7) * mu - 0.7 * 0
    assert torch.allclose(out, noise + 1.7 * mu, atol=1e-5)


def test_cfm_noise_is_indexed_by_absolute_frame() -> None:
    whole = cfm_noise(3, -10, 50, 80)
    parts = torch.cat([cfm_noise(3, -10, 17, 80), cfm_noise(3, 7, 33, 80)], dim=2)
    assert torch.equal(whole, parts)
    assert abs(whole.mean().item()) < 0.05 and abs(whole.std().item() - 1) < 0.05
    assert not torch.equal(cfm_noise(4, 0, 10, 80), cfm_noise(3, 0, 10, 80))


def test_hashed_normal_is_box_muller_over_the_even_and_odd_hash_streams() -> None:
    """The noise's definition (what every seed's audio depends on): u1 from stream 2i, u2 from stream 2i + 1."""
    idx = torch.arange(-3000, 9000, dtype=torch.int64).reshape(3, -1)
    u1, u2 = hash_uniform(idx * 2, 11), hash_uniform(idx * 2 + 1, 11)
    want = (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).float()
    assert torch.equal(hashed_normal(11, idx), want)


@pytest.mark.parametrize("n_tokens", [5, 41, 125])
def test_offline_audio_length_and_values(model, n_tokens) -> None:
    tokens = torch.randint(0, 5120, (n_tokens,), generator=torch.Generator().manual_seed(n_tokens))
    audio = model.token2wav(tokens, _prompt(), seed=1)
    expect = n_tokens / 41.667 * 22050
    assert audio.dtype == np.float32
    assert audio.size == model.cfg.flow.mel_frames(n_tokens) * 256
    assert abs(audio.size - expect) < 256  # within one mel frame of tokens / 41.667 s
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 0.99 and audio.std() > 0


def test_offline_is_deterministic_per_seed(model) -> None:
    tokens = torch.randint(0, 5120, (30,), generator=torch.Generator().manual_seed(0))
    a = model.token2wav(tokens, _prompt(), seed=5)
    assert np.array_equal(a, model.token2wav(tokens, _prompt(), seed=5))
    assert not np.array_equal(a, model.token2wav(tokens, _prompt(), seed=6))


def test_prompt_conditions_the_output(model) -> None:
    tokens = torch.randint(0, 5120, (30,), generator=torch.Generator().manual_seed(0))
    mel_a = model.token2mel(tokens, _prompt(0))
    mel_b = model.token2mel(tokens, _prompt(1))
    mel_none = model.token2mel(tokens, SpeakerPrompt.empty())
    assert mel_a.shape == mel_b.shape == mel_none.shape == (1, 80, model.cfg.flow.mel_frames(30))
    assert not torch.allclose(mel_a, mel_b)


def test_the_estimator_fuses_q_k_v_without_changing_its_file_layout_or_going_stale() -> None:
    """One GEMM for q, k and v (speech_decoder.flow.estimator._Attention) reads the weights upstream's file keeps
    as to_q, to_k and to_v: the state dict keeps those keys, and weights loaded after the fusion (in place) are
    the ones used, not the fused copy of the old ones."""
    from speech_decoder.flow.estimator import _Attention

    torch.manual_seed(0)
    attn, other = _Attention(32, 2, 8).eval(), _Attention(32, 2, 8).eval()
    x = torch.randn(2, 5, 32)
    with torch.inference_mode():  # as the flow runs
        attn(x)  # fuses
    with torch.no_grad():
        assert {"to_q.weight", "to_k.weight", "to_v.weight"} <= set(attn.state_dict())
        assert "_qkv" not in "".join(attn.state_dict())
        attn.load_state_dict(other.state_dict())
        torch.testing.assert_close(attn(x), other(x), rtol=0, atol=1e-6)
        q, k, v = (m(x).view(2, 5, 2, 8).transpose(1, 2) for m in (other.to_q, other.to_k, other.to_v))
        want = other.to_out[0](F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 5, 16))
        torch.testing.assert_close(attn(x), want, rtol=0, atol=1e-6)
