"""kernels.vocoder: references vs independent eager formulations (CosyVoice's HiFT code paths), Triton kernels vs
the references (natively on CUDA, else in the interpreter child, see conftest.py)."""
from __future__ import annotations

import math

import pytest
import torch

from kernels import vocoder as V


def _upstream_istft(x: torch.Tensor) -> torch.Tensor:
    """Independent: irfft per frame, periodic hann, explicit overlap-add and window-square envelope, center trim."""
    mag = torch.exp(x[:, :9]).clamp(max=1e2)
    ph = torch.sin(x[:, 9:])
    frames = torch.fft.irfft(torch.complex(mag * torch.cos(ph), mag * torch.sin(ph)).transpose(1, 2), n=16)
    w = torch.tensor([0.5 - 0.5 * math.cos(2 * math.pi * n / 16) for n in range(16)])
    b, t = x.shape[0], x.shape[2]
    full = torch.zeros(b, 16 + 4 * (t - 1))
    env = torch.zeros(16 + 4 * (t - 1))
    for i in range(t):
        full[:, 4 * i: 4 * i + 16] += frames[:, i] * w
        env[4 * i: 4 * i + 16] += w * w
    return (full / env)[:, 8:-8].clamp(-0.99, 0.99)


def _upstream_sine(f0, noise, phase, up, sr, amp=0.1, std=0.003, thr=10.0):  # type: ignore[no-untyped-def]
    """CosyVoice SineGen as written upstream (fp32 running sum)."""
    f0_up = torch.nn.functional.interpolate(f0[:, None], scale_factor=up, mode="nearest")  # [B, 1, L]
    fmat = torch.cat([f0_up * (i + 1) / sr for i in range(noise.shape[1])], dim=1)
    theta = 2 * math.pi * (torch.cumsum(fmat, dim=-1) % 1)
    sine = amp * torch.sin(theta + phase[..., None])
    uv = (f0_up > thr).float()
    return sine * uv + (uv * std + (1 - uv) * amp / 3) * noise


def test_istft_reference_matches_independent_overlap_add() -> None:
    x = torch.randn(2, 18, 23, generator=torch.Generator().manual_seed(0)) * 1.5 - 0.5
    torch.testing.assert_close(V.istft_head_ref(x), _upstream_istft(x), rtol=0, atol=2e-6)
    assert V.istft_head_ref(x).shape == (2, 4 * 22)


def test_sine_reference_matches_upstream_formula() -> None:
    g = torch.Generator().manual_seed(0)
    f0 = torch.rand(2, 6, generator=g) * 300
    f0[0, 1] = 0.0
    noise = torch.randn(2, 9, 6 * 256, generator=g)
    phase = (torch.rand(2, 9, generator=g) * 2 - 1) * math.pi
    phase[:, 0] = 0
    got = V.sine_source_ref(f0, noise, phase, upsample=256, sampling_rate=22050)
    # fp32 running sum upstream vs fp64 here: equal to ~1e-4 over 1536 samples
    torch.testing.assert_close(got, _upstream_sine(f0, noise, phase, 256, 22050), rtol=0, atol=2e-4)


def test_activation_references() -> None:
    x, y = torch.randn(2, 3, 10), torch.randn(2, 3, 10)
    alpha = torch.tensor([0.5, 1.0, 2.0])
    s, a = V.add_snake_ref(x, y, alpha)
    torch.testing.assert_close(s, x + y)
    torch.testing.assert_close(a, s + torch.sin(s * alpha[:, None]) ** 2 / (alpha[:, None] + 1e-9))
    torch.testing.assert_close(V.add_leaky_relu_ref(x, y, slope=0.01, scale=0.5),
                               torch.nn.functional.leaky_relu((x + y) / 2, 0.01))


def test_dispatchers_validate_and_fall_back_on_cpu() -> None:
    with pytest.raises(ValueError):
        V.istft_head(torch.zeros(1, 17, 5))
    with pytest.raises(ValueError):
        V.snake(torch.zeros(1, 3, 5), torch.ones(4))
    with pytest.raises(ValueError):
        V.add_leaky_relu(torch.zeros(2, 3), torch.zeros(3, 2), slope=0.1)
    with pytest.raises(ValueError):
        V.sine_source(torch.zeros(1, 2), torch.zeros(1, 9, 10), torch.zeros(1, 9), upsample=4, sampling_rate=8000)
    x = torch.randn(1, 18, 6)
    torch.testing.assert_close(V.istft_head(x), V.istft_head_ref(x))


# ------------------------------------------------------------------------------------------- Triton

@pytest.mark.parametrize("batch,frames", [(1, 2), (1, 9), (3, 37)])
def test_triton_istft_head(triton_modules, batch: int, frames: int) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(frames)
    x = torch.randn(batch, 18, frames, generator=g) * 2.0
    x[0, 3, 0] = 8.0  # exp -> 2981: exercises the 1e2 magnitude clip and the audio clamp
    x = x.to(triton_modules.device)
    got = triton_modules.vocoder.istft_head_triton(x, n_fft=16, hop=4, mag_clip=1e2, audio_limit=0.99)
    torch.testing.assert_close(got, V.istft_head_ref(x), rtol=0, atol=1e-5)
    quiet = (x * 0.3 - 1.0)  # unclamped regime
    got = triton_modules.vocoder.istft_head_triton(quiet, n_fft=16, hop=4, mag_clip=1e2, audio_limit=0.99)
    torch.testing.assert_close(got, V.istft_head_ref(quiet), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_activations(triton_modules, dtype) -> None:  # type: ignore[no-untyped-def]
    dev, tri = triton_modules.device, triton_modules.vocoder
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 300, generator=g).to(dtype).to(dev)
    y = torch.randn(2, 5, 300, generator=g).to(dtype).to(dev)
    alpha = (torch.rand(5, generator=g) + 0.1).to(dev)
    tol = 1e-6 if dtype == torch.float32 else 8e-3  # fp16: 1 ulp at |x| ~ 4-8 (the ref rounds the sum first)
    s, a = tri.act_triton(x, y, alpha, act="snake", slope=0.0, scale=1.0, want_sum=True)
    rs, ra = V.add_snake_ref(x, y, alpha)
    torch.testing.assert_close(s.float(), rs.float(), rtol=0, atol=tol)
    torch.testing.assert_close(a.float(), ra.float(), rtol=0, atol=tol)
    _, a = tri.act_triton(x, None, alpha, act="snake", slope=0.0, scale=1.0, want_sum=False)
    torch.testing.assert_close(a.float(), V.snake_ref(x, alpha).float(), rtol=0, atol=tol)
    _, a = tri.act_triton(x, y, None, act="leaky", slope=0.01, scale=1 / 3, want_sum=False)
    torch.testing.assert_close(a.float(), V.add_leaky_relu_ref(x, y, slope=0.01, scale=1 / 3).float(),
                               rtol=0, atol=tol)
    _, a = tri.act_triton(x, None, None, act="leaky", slope=0.1, scale=1.0, want_sum=False)
    torch.testing.assert_close(a.float(), V.leaky_relu_ref(x, 0.1).float(), rtol=0, atol=tol)


@pytest.mark.parametrize("merge", [False, True])
def test_triton_sine_source(triton_modules, merge: bool) -> None:  # type: ignore[no-untyped-def]
    dev = triton_modules.device
    g = torch.Generator().manual_seed(3)
    f0 = torch.rand(2, 9, generator=g) * 400
    f0[0, 2] = 0.0   # unvoiced frame
    f0[1, 5] = 9.5   # just under the voiced threshold (10 Hz)
    noise = torch.randn(2, 9, 9 * 256, generator=g)
    phase = (torch.rand(2, 9, generator=g) * 2 - 1) * math.pi
    phase[:, 0] = 0
    w = torch.randn(9, generator=g) if merge else None
    bias = torch.randn(1, generator=g) if merge else None
    args = [t.to(dev) if t is not None else None for t in (f0, noise, phase, w, bias)]
    got = triton_modules.vocoder.sine_source_triton(
        args[0], args[1], args[2], upsample=256, sampling_rate=22050, sine_amp=0.1, noise_std=0.003,
        voiced_threshold=10.0, merge_weight=args[3], merge_bias=args[4])
    want = V.sine_source_ref(f0, noise, phase, upsample=256, sampling_rate=22050, merge_weight=w, merge_bias=bias)
    assert got.shape == ((2, 1, 2304) if merge else (2, 9, 2304))
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------- GPU, real shapes

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_vocoder_ops_ten_seconds() -> None:
    frames = 862  # 10 s of mel frames at 22050 / 256
    x = torch.randn(1, 18, frames * 64 + 1, device="cuda")  # conv_post runs at 64x the mel rate
    torch.testing.assert_close(V.istft_head(x), V.istft_head_ref(x), rtol=0, atol=1e-5)
    f0 = torch.rand(1, frames, device="cuda") * 300
    noise = torch.randn(1, 9, frames * 256, device="cuda")
    phase = torch.rand(1, 9, device="cuda")
    got = V.sine_source(f0, noise, phase, upsample=256, sampling_rate=22050)
    want = V.sine_source_ref(f0, noise, phase, upsample=256, sampling_rate=22050)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    h = torch.randn(1, 128, frames * 64, device="cuda")
    alpha = torch.rand(128, device="cuda") + 0.1
    for got_t, want_t in zip(V.add_snake(h, h.flip(-1), alpha), V.add_snake_ref(h, h.flip(-1), alpha)):
        torch.testing.assert_close(got_t, want_t, rtol=0, atol=1e-5)
