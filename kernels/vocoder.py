"""Fused ops for the HiFT vocoder (CosyVoice-300M-25Hz, 22050 Hz): iSTFT head, activations fused with the residual
adds, and the NSF sine source. Each op: `<op>_ref` (PyTorch, the spec), Triton kernel (kernels._vocoder_triton),
dispatcher `<op>` (CUDA -> Triton, otherwise the reference).

Where each op sits in HiFT (CosyVoice hifigan/generator.py; convolutions stay on cuDNN):

    source:   f0 [B, T] -> nearest x256 -> SineGen (9 harmonics) -> Linear(9, 1) -> tanh     sine_source(...)
    per stage i: x = leaky_relu(x, 0.1); x = ups[i](x); x = x + source_branch
                 ResBlock (Snake activations, per-channel alpha):
                     for each dilation: xt = conv2(snake(conv1(snake(x)))); x = x + xt   add_snake(x, xt, alpha)
                 x = (rb1 + rb2 + rb3) / 3
    head:     x = leaky_relu(x, 0.01); x = conv_post(x)  [B, 18, T]                           add_leaky_relu(...)
              mag = min(exp(x[:, :9]), 1e2); phase = sin(x[:, 9:]); istft(n_fft 16, hop 4, hann) -> clamp +-0.99
                                                                                               istft_head(...)
Note: the ResBlocks of CosyVoice's HiFT use Snake (x + sin^2(alpha x) / alpha), not leaky ReLU; leaky ReLU (0.1)
precedes each upsampling conv and leaky ReLU with torch's default slope 0.01 precedes conv_post.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from kernels._dispatch import reference_ops, triton_module  # noqa: F401  (reference_ops: public here too)

_SNAKE_EPS = 1e-9  # CosyVoice's Snake: 1 / (alpha + 1e-9)
_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


def _triton_for(t: Tensor):  # -> kernels._vocoder_triton | None
    return triton_module("_vocoder_triton", t)


# ----------------------------------------------------------------------------------------------- iSTFT head

def istft_head_ref(x: Tensor, *, n_fft: int = 16, hop: int = 4, mag_clip: float = 1e2,
                   audio_limit: float = 0.99) -> Tensor:
    """conv_post output [B, n_fft + 2, T] -> waveform [B, hop * (T - 1)] fp32, exactly as CosyVoice's HiFT:
    magnitude = clip(exp(x[:, :n_fft/2+1]), max=mag_clip), phase = sin(x[:, n_fft/2+1:]),
    torch.istft(mag * e^{i phase}, n_fft, hop, win_length n_fft, periodic hann, center=True), clamp +-audio_limit."""
    bins = n_fft // 2 + 1
    x = x.float()
    mag = torch.clamp(torch.exp(x[:, :bins]), max=mag_clip)
    phase = torch.sin(x[:, bins:])
    spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float32, device=x.device)
    y = torch.istft(spec, n_fft, hop, n_fft, window=window, center=True)
    return torch.clamp(y, -audio_limit, audio_limit)


def istft_head(x: Tensor, *, n_fft: int = 16, hop: int = 4, mag_clip: float = 1e2, audio_limit: float = 0.99) -> Tensor:
    """Fused HiFT head (see istft_head_ref). x: [B, n_fft + 2, T] fp32/fp16/bf16. Returns [B, hop * (T - 1)] fp32."""
    if x.dim() != 3 or x.shape[1] != n_fft + 2:
        raise ValueError(f"x must be [B, n_fft + 2 = {n_fft + 2}, T], got {tuple(x.shape)}")
    if n_fft % 2 or n_fft % hop or hop < 1:
        raise ValueError(f"need an even n_fft that is a multiple of hop, got n_fft {n_fft}, hop {hop}")
    if x.shape[2] < 2:
        raise ValueError(f"need at least 2 frames, got {x.shape[2]}")
    if x.dtype not in _FLOATS:
        raise ValueError(f"x must be floating point, got {x.dtype}")
    tri = _triton_for(x)
    if tri is not None:
        return tri.istft_head_triton(x, n_fft=n_fft, hop=hop, mag_clip=mag_clip, audio_limit=audio_limit)
    return istft_head_ref(x, n_fft=n_fft, hop=hop, mag_clip=mag_clip, audio_limit=audio_limit)


# ----------------------------------------------------------------------------------------------- activations

def leaky_relu_ref(x: Tensor, slope: float) -> Tensor:
    return torch.nn.functional.leaky_relu(x.float(), slope).to(x.dtype)


def add_leaky_relu_ref(x: Tensor, y: Tensor, *, slope: float, scale: float = 1.0) -> Tensor:
    """leaky_relu((x + y) * scale, slope), e.g. the mean of the last two ResBlock sums followed by the head's
    leaky ReLU: add_leaky_relu(rb1 + rb2, rb3, slope=0.01, scale=1/3)."""
    return torch.nn.functional.leaky_relu((x.float() + y.float()) * scale, slope).to(x.dtype)


def snake_ref(x: Tensor, alpha: Tensor) -> Tensor:
    """Snake(x) = x + sin(alpha x)^2 / (alpha + 1e-9), alpha per channel: x [B, C, T], alpha [C]."""
    a = alpha.float()[None, :, None]
    xf = x.float()
    return (xf + torch.sin(xf * a) ** 2 / (a + _SNAKE_EPS)).to(x.dtype)


def add_snake_ref(x: Tensor, y: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
    """(s, snake(s)) with s = x + y: a ResBlock's residual add and the next dilation's first activation."""
    s = (x.float() + y.float()).to(x.dtype)
    return s, snake_ref(s, alpha)


def _check_pair(x: Tensor, y: Tensor | None) -> None:
    if x.dtype not in _FLOATS:
        raise ValueError(f"x must be floating point, got {x.dtype}")
    if y is not None and (y.shape != x.shape or y.dtype != x.dtype or y.device != x.device):
        raise ValueError(f"y must match x: {tuple(y.shape)} {y.dtype} {y.device} vs {tuple(x.shape)} {x.dtype} "
                         f"{x.device}")


def _check_alpha(x: Tensor, alpha: Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"x must be [B, C, T], got {tuple(x.shape)}")
    if alpha.shape != (x.shape[1],) or alpha.device != x.device:
        raise ValueError(f"alpha must be [C = {x.shape[1]}] on {x.device}, got {tuple(alpha.shape)} {alpha.device}")


def leaky_relu(x: Tensor, slope: float) -> Tensor:
    _check_pair(x, None)
    tri = _triton_for(x)
    if tri is not None:
        return tri.act_triton(x, None, None, act="leaky", slope=slope, scale=1.0, want_sum=False)[1]
    return leaky_relu_ref(x, slope)


def add_leaky_relu(x: Tensor, y: Tensor, *, slope: float, scale: float = 1.0) -> Tensor:
    _check_pair(x, y)
    tri = _triton_for(x)
    if tri is not None:
        return tri.act_triton(x, y, None, act="leaky", slope=slope, scale=scale, want_sum=False)[1]
    return add_leaky_relu_ref(x, y, slope=slope, scale=scale)


def snake(x: Tensor, alpha: Tensor) -> Tensor:
    _check_pair(x, None)
    _check_alpha(x, alpha)
    tri = _triton_for(x)
    if tri is not None:
        return tri.act_triton(x, None, alpha, act="snake", slope=0.0, scale=1.0, want_sum=False)[1]
    return snake_ref(x, alpha)


def add_snake(x: Tensor, y: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
    _check_pair(x, y)
    _check_alpha(x, alpha)
    tri = _triton_for(x)
    if tri is not None:
        s, a = tri.act_triton(x, y, alpha, act="snake", slope=0.0, scale=1.0, want_sum=True)
        assert s is not None
        return s, a
    return add_snake_ref(x, y, alpha)


# ----------------------------------------------------------------------------------------------- sine source

def sine_source_ref(f0: Tensor, noise: Tensor, phase_offsets: Tensor, *, upsample: int, sampling_rate: float,
                    sine_amp: float = 0.1, noise_std: float = 0.003, voiced_threshold: float = 10.0,
                    merge_weight: Tensor | None = None, merge_bias: Tensor | None = None) -> Tensor:
    """HiFT's NSF source (SineGen with H = noise.shape[1] - 1 harmonics), noise and initial phases given.

    f0 [B, T] Hz at frame rate is upsampled by repetition (nn.Upsample, nearest) to L = T * upsample samples.
    For harmonic h (0 = fundamental): phase_h[n] = 2 pi frac(sum_{m<=n} (h+1) f0[m] / sr) + phase_offsets[b, h];
    sine = sine_amp * sin(phase); uv = f0 > voiced_threshold;
    out = sine * uv + (uv ? noise_std : sine_amp / 3) * noise.
    Upstream keeps the running sum in fp32, which drifts by ~1e-2 rad after 10 s; the spec keeps it in fp64.

    Args:
        noise: [B, H + 1, L] standard normal. phase_offsets: [B, H + 1] radians (upstream: 0 for h = 0, U(-pi, pi)).
        merge_weight [H + 1], merge_bias [1] (SourceModuleHnNSF's Linear(H + 1, 1)): if given, returns
        tanh(merge_weight . out + merge_bias) [B, 1, L], else out [B, H + 1, L] (fp32).
    """
    nh = noise.shape[1]
    f0_up = f0.double().repeat_interleave(upsample, dim=-1)  # [B, L]
    harm = torch.arange(1, nh + 1, dtype=torch.float64, device=f0.device)
    cycles = torch.cumsum(f0_up / sampling_rate, dim=-1)[:, None, :] * harm[None, :, None]  # [B, H+1, L]
    theta = 2 * math.pi * torch.frac(cycles)
    sine = sine_amp * torch.sin(theta + phase_offsets.double()[..., None])
    uv = (f0_up > voiced_threshold).double()[:, None, :]
    out = sine * uv + (uv * noise_std + (1 - uv) * sine_amp / 3) * noise.double()
    if merge_weight is not None:
        bias = merge_bias.double() if merge_bias is not None else torch.zeros(1, dtype=torch.float64, device=f0.device)
        out = torch.tanh(torch.einsum("bhl,h->bl", out, merge_weight.double()) + bias)[:, None, :]
    return out.float()


def sine_source(f0: Tensor, noise: Tensor, phase_offsets: Tensor, *, upsample: int, sampling_rate: float,
                sine_amp: float = 0.1, noise_std: float = 0.003, voiced_threshold: float = 10.0,
                merge_weight: Tensor | None = None, merge_bias: Tensor | None = None) -> Tensor:
    """Fused NSF sine source; see sine_source_ref for the semantics and shapes."""
    if f0.dim() != 2:
        raise ValueError(f"f0 must be [B, T], got {tuple(f0.shape)}")
    b, t = f0.shape
    if noise.dim() != 3 or noise.shape[0] != b or noise.shape[2] != t * upsample:
        raise ValueError(f"noise must be [B = {b}, H + 1, T * upsample = {t * upsample}], got {tuple(noise.shape)}")
    nh = noise.shape[1]
    if phase_offsets.shape != (b, nh):
        raise ValueError(f"phase_offsets must be [{b}, {nh}], got {tuple(phase_offsets.shape)}")
    if merge_weight is not None and merge_weight.shape != (nh,):
        raise ValueError(f"merge_weight must be [{nh}], got {tuple(merge_weight.shape)}")
    if merge_bias is not None and (merge_weight is None or merge_bias.numel() != 1):
        raise ValueError("merge_bias needs merge_weight and must hold one value")
    if upsample < 1 or sampling_rate <= 0:
        raise ValueError(f"bad upsample {upsample} / sampling_rate {sampling_rate}")
    if len({x.device for x in (f0, noise, phase_offsets)}) != 1:
        raise ValueError("f0, noise and phase_offsets must be on one device")
    tri = _triton_for(f0)
    if tri is not None:
        return tri.sine_source_triton(f0, noise, phase_offsets, upsample=upsample, sampling_rate=sampling_rate,
                                      sine_amp=sine_amp, noise_std=noise_std, voiced_threshold=voiced_threshold,
                                      merge_weight=merge_weight, merge_bias=merge_bias)
    return sine_source_ref(f0, noise, phase_offsets, upsample=upsample, sampling_rate=sampling_rate,
                           sine_amp=sine_amp, noise_std=noise_std, voiced_threshold=voiced_threshold,
                           merge_weight=merge_weight, merge_bias=merge_bias)
