"""The flow estimator after its fusions (speech_decoder.flow.estimator): the same velocity as upstream's op order,
time conditioning computed ahead for all Euler steps equal to computing it per call, the length regulator's fused
(GroupNorm, Mish) equal to its nn.Sequential. CPU, fp32, the reference ops (kernels.flow_ops); the Triton kernels
run the whole flow in tests/kernels/test_models_through_kernels.py."""
from __future__ import annotations

import torch
from torch import nn

from speech_decoder.cosyvoice_config import CFMConfig, EstimatorConfig, LengthRegulatorConfig
from speech_decoder.flow.estimator import ConditionalDecoder, timestep_embedding
from speech_decoder.flow.flow import ConditionalCFM, InterpolateRegulator

CFG = EstimatorConfig(channels=(32, 32), attention_head_dim=8, n_blocks=2, num_mid_blocks=2, num_heads=2)


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got - ref).norm() / ref.norm())


def _randomised(module: nn.Module) -> nn.Module:
    """Norm affines away from (1, 0), so that a dropped or misplaced weight, bias or add shows."""
    g = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            m.weight.data = 1 + 0.3 * torch.randn(m.weight.shape, generator=g)
            m.bias.data = 0.3 * torch.randn(m.bias.shape, generator=g)
    return module.eval()


def _inputs(b: int = 2, t: int = 13) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(b, 80, t, generator=g), torch.randn(b, 80, t, generator=g),
            torch.rand(b, generator=g), torch.randn(b, 80, generator=g), torch.randn(b, 80, t, generator=g))


def _upstream(est: ConditionalDecoder, x, mu, t, spks, cond) -> torch.Tensor:  # noqa: ANN001
    """CosyVoice's ConditionalDecoder.forward op by op with nn modules (mask all ones), the spec of the fused one."""
    t_emb = est.time_mlp(timestep_embedding(t, est.cfg.in_channels))

    def block(b, h):  # noqa: ANN001, ANN202
        return b.block(h)  # Conv1d, GroupNorm, Mish

    def resnet(r, h):  # noqa: ANN001, ANN202
        return block(r.block2, block(r.block1, h) + r.mlp(t_emb).unsqueeze(-1)) + r.res_conv(h)

    def transformers(blocks, h):  # noqa: ANN001, ANN202
        h = h.transpose(1, 2)
        for blk in blocks:
            h = h + blk.attn1(blk.norm1(h))
            h = h + blk.ff.net[2](blk.ff.net[0](blk.norm3(h)))
        return h.transpose(1, 2)

    h = torch.cat([x, mu, spks[:, :, None].expand(-1, -1, x.size(-1)), cond], dim=1)
    skips = []
    for r, tb, down in est.down_blocks:
        h = transformers(tb, resnet(r, h))
        skips.append(h)
        h = down(h)
    for r, tb in est.mid_blocks:
        h = transformers(tb, resnet(r, h))
    for r, tb, up in est.up_blocks:
        skip = skips.pop()
        h = up(transformers(tb, resnet(r, torch.cat([h[:, :, : skip.size(-1)], skip], dim=1))))
    return est.final_proj(block(est.final_block, h))


@torch.inference_mode()
def test_estimator_equals_upstreams_op_order() -> None:
    est = _randomised(ConditionalDecoder(CFG))
    args = _inputs()
    want = _upstream(est, *args)
    assert _rel(est(*args), want) <= 1e-5
    assert _rel(est(*_inputs(t=1)), _upstream(est, *_inputs(t=1))) <= 1e-5


@torch.inference_mode()
def test_time_terms_computed_ahead_give_the_per_call_velocity() -> None:
    est = _randomised(ConditionalDecoder(CFG))
    x, mu, _, spks, cond = _inputs()
    steps = torch.tensor([0.0, 0.1, 0.45, 0.9])
    terms = est.time_terms(steps, torch.float32)
    assert [tuple(term.shape) for term in terms] == [(4, 32)] * (len(CFG.channels) * 2 + CFG.num_mid_blocks)
    for k, t in enumerate(steps):
        ahead = est(x, mu, t.expand(2), spks, cond, [term[k: k + 1] for term in terms])
        per_call = est(x, mu, t.expand(2), spks, cond)
        assert _rel(ahead, per_call) <= 1e-6
        other = est(x, mu, t.expand(2), spks, cond, [term[k - 1: k] for term in terms]) if k else None
        assert other is None or _rel(other, per_call) > 1e-4  # the terms are what carries t


@torch.inference_mode()
def test_cfm_hands_each_euler_step_its_own_time_terms() -> None:
    est = _randomised(ConditionalDecoder(CFG))
    cfm = ConditionalCFM(CFMConfig(), est)
    noise, mu, _, spks, cond = (a[:1] for a in _inputs())
    got = cfm(noise, mu, spks, cond, n_timesteps=4)
    # the Euler loop with CFG as before the hoist: the estimator computes its time terms from t in every call
    t_span, x, r = cfm.time_span(4, mu.device, mu.dtype), noise.clone(), CFMConfig().inference_cfg_rate
    for step in range(1, len(t_span)):
        t = t_span[step - 1]
        v2 = est(torch.cat([x, x]), torch.cat([mu, 0 * mu]), t.expand(2), torch.cat([spks, 0 * spks]),
                 torch.cat([cond, 0 * cond]))
        x = x + (t_span[step] - t) * ((1 + r) * v2[:1] - r * v2[1:])
    assert _rel(got, x) <= 1e-6


@torch.inference_mode()
def test_length_regulator_equals_its_sequential() -> None:
    reg = _randomised(InterpolateRegulator(LengthRegulatorConfig(channels=16, sampling_ratios=(1, 1), groups=1)))
    g = torch.Generator().manual_seed(2)
    hp, ht = torch.randn(1, 5, 16, generator=g), torch.randn(1, 7, 16, generator=g)
    want = reg.model(torch.cat([nn.functional.interpolate(hp.transpose(1, 2), size=9, mode="linear"),
                                nn.functional.interpolate(ht.transpose(1, 2), size=11, mode="linear")], dim=2))
    assert torch.equal(reg(hp, ht, 9, 11), want.transpose(1, 2))


def test_convolution_weights_stay_channels_last_through_loading_and_moves() -> None:
    """Every convolution weight is [C_out, K, C_in] memory (the layout cuDNN runs the estimator in) after a
    flow.pt-style load_state_dict and a dtype move, and the convolutions see channels-last activations: the
    velocity is upstream's."""
    est = _randomised(ConditionalDecoder(CFG))
    plain = {k: v.contiguous() for k, v in est.state_dict().items()}  # as a checkpoint stores them
    est.load_state_dict(plain)
    est = est.double().float()
    convs = [m for m in est.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]
    assert len(convs) == 24  # 6 ResNet blocks x 3, their down and up convolutions, the final block and proj
    for m in convs:
        assert m.weight.transpose(1, 2).is_contiguous(), (m, m.weight.stride())
    seen = []

    def spy(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:  # noqa: ANN002, ANN003
        seen.append(x.stride(1) == 1)
        return conv1d(x, *args, **kwargs)

    conv1d, torch.nn.functional.conv1d = torch.nn.functional.conv1d, spy
    try:
        with torch.inference_mode():
            got = est(*_inputs())
    finally:
        torch.nn.functional.conv1d = conv1d
    assert seen and seen[0], "the first convolution's input is channels-last"
    with torch.inference_mode():
        assert _rel(got, _upstream(est, *_inputs())) < 1e-5
