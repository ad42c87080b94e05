"""Triton kernels behind kernels.vocoder (imported only by its dispatchers and by tests).

All three are memory- or launch-bound at HiFT's sizes (22050 samples per second of audio): the point of fusing is
one launch and one pass over memory instead of the 6-10 eager ops each replaces.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

_TWO_PI = 2.0 * math.pi

# ------------------------------------------------------------------------------------------------ iSTFT head


@triton.jit
def _istft_head_kernel(
    X, Y, num_frames, out_len, stride_xb, stride_xc, stride_xt,
    mag_clip, audio_limit,
    N_FFT: tl.constexpr, HOP: tl.constexpr, BLOCK: tl.constexpr,
):
    """One program = BLOCK output samples of one batch row.

    Output sample m sits at p = m + N_FFT/2 in the un-trimmed overlap-add signal (center=True trims N_FFT/2 on
    each side). It receives sample n = p - t*HOP of the N_FFT/HOP frames t = p//HOP - j, j = 0..N_FFT/HOP-1 that
    exist. Each frame sample is the inverse real DFT evaluated at n directly (9 bins), times the periodic hann
    window; the sum is divided by the window-square envelope of the same frames, as torch.istft does.
    """
    BINS: tl.constexpr = N_FFT // 2 + 1
    b = tl.program_id(1)
    m = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m_ok = m < out_len
    p = m + N_FFT // 2
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    env = tl.zeros([BLOCK], dtype=tl.float32)
    xb = X + b.to(tl.int64) * stride_xb
    for j in tl.static_range(N_FFT // HOP):
        t = p // HOP - j
        n = p - t * HOP  # 0 <= n < N_FFT
        ok = m_ok & (t >= 0) & (t < num_frames)
        w = 0.5 - 0.5 * tl.cos(n.to(tl.float32) * (6.283185307179586 / N_FFT))
        frame = tl.zeros([BLOCK], dtype=tl.float32)
        for k in tl.static_range(BINS):
            logmag = tl.load(xb + k * stride_xc + t * stride_xt, mask=ok, other=0.0).to(tl.float32)
            ph_in = tl.load(xb + (BINS + k) * stride_xc + t * stride_xt, mask=ok, other=0.0).to(tl.float32)
            mag = tl.minimum(tl.exp(logmag), mag_clip)
            phase = tl.sin(ph_in)  # CosyVoice applies sin to the phase channels
            # angle of bin k at sample n; (k*n) mod N_FFT keeps the cos/sin argument small
            ang = ((k * n) % N_FFT).to(tl.float32) * (6.283185307179586 / N_FFT)
            if k == 0 or k == N_FFT // 2:
                # DC / Nyquist: C2R inverse uses only the real part, weight 1, sign (-1)^n for Nyquist
                frame += mag * tl.cos(phase) * tl.cos(ang)
            else:
                # 2 Re(X_k e^{i ang}) = 2 mag (cos(phase) cos(ang) - sin(phase) sin(ang)) = 2 mag cos(phase + ang)
                frame += 2.0 * mag * tl.cos(phase + ang)
        acc += tl.where(ok, w * frame * (1.0 / N_FFT), 0.0)
        env += tl.where(ok, w * w, 0.0)
    y = acc / tl.where(env > 1e-11, env, 1.0)
    y = tl.minimum(tl.maximum(y, -audio_limit), audio_limit)
    tl.store(Y + b.to(tl.int64) * out_len + m, y, mask=m_ok)


def istft_head_triton(x: Tensor, *, n_fft: int, hop: int, mag_clip: float, audio_limit: float) -> Tensor:
    batch, _, frames = x.shape
    out_len = hop * (frames - 1)
    y = torch.empty((batch, out_len), dtype=torch.float32, device=x.device)
    block = 256
    _istft_head_kernel[(triton.cdiv(out_len, block), batch)](
        x, y, frames, out_len, *x.stride(), float(mag_clip), float(audio_limit),
        N_FFT=n_fft, HOP=hop, BLOCK=block, num_warps=4,
    )
    return y


# ------------------------------------------------------------------------------------------------ activations


@triton.jit
def _act_kernel(
    X, Yin, ALPHA, S, A, numel, channels, length, slope, scale,
    HAS_Y: tl.constexpr, ACT: tl.constexpr, STORE_SUM: tl.constexpr, BLOCK: tl.constexpr,
):
    """s = (x [+ y]) * scale; a = leaky_relu(s, slope) (ACT 0) or snake(s, alpha[c]) (ACT 1). Contiguous [B, C, T]."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < numel
    s = tl.load(X + offs, mask=ok, other=0.0).to(tl.float32)
    if HAS_Y:
        s += tl.load(Yin + offs, mask=ok, other=0.0).to(tl.float32)
    s = s * scale
    if ACT == 0:
        a = tl.where(s >= 0, s, s * slope)
    else:
        c = (offs // length) % channels
        alpha = tl.load(ALPHA + c, mask=ok, other=1.0).to(tl.float32)
        sn = tl.sin(s * alpha)
        a = s + sn * sn / (alpha + 1e-9)
    if STORE_SUM:
        tl.store(S + offs, s.to(S.dtype.element_ty), mask=ok)
    tl.store(A + offs, a.to(A.dtype.element_ty), mask=ok)


def act_triton(x: Tensor, y: Tensor | None, alpha: Tensor | None, *, act: str, slope: float, scale: float,
               want_sum: bool) -> tuple[Tensor | None, Tensor]:
    x = x.contiguous()
    y = y.contiguous() if y is not None else None
    a = torch.empty_like(x)
    s = torch.empty_like(x) if want_sum else None
    numel = x.numel()
    if numel == 0:
        return s, a
    channels, length = (x.shape[1], x.shape[2]) if x.dim() == 3 else (1, numel)
    alpha_t = alpha.contiguous() if alpha is not None else x
    block = 1024
    _act_kernel[(triton.cdiv(numel, block),)](
        x, y if y is not None else x, alpha_t, s if s is not None else a, a, numel, channels, length,
        float(slope), float(scale),
        HAS_Y=y is not None, ACT=0 if act == "leaky" else 1, STORE_SUM=want_sum, BLOCK=block, num_warps=4,
    )
    return s, a


# ------------------------------------------------------------------------------------------------ sine source


@triton.jit
def _sine_source_kernel(
    F0, PREFIX, NOISE, PHASE, W, BIAS, OUT, num_frames, length,
    stride_fb, stride_nb, stride_nh, stride_pb, stride_ob, stride_oh,
    inv_sr, sine_amp, noise_std, voiced_threshold,
    UPSAMPLE: tl.constexpr, NUM_HARM: tl.constexpr, MERGE: tl.constexpr, BLOCK: tl.constexpr,
):
    """One program = BLOCK samples of one batch row, all harmonics.

    f0 is constant over each frame of UPSAMPLE samples, so the running phase sum at sample n = frame*U + r is
    PREFIX[frame] (fractional fundamental cycles before the frame, from an fp64 scan) + (r + 1) f0 / sr; harmonic h
    multiplies the whole by (h + 1). Only fractions are kept, so fp32 stays exact to ~1e-6 cycles.
    """
    b = tl.program_id(1)
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = n < length
    frame = n // UPSAMPLE
    r = n - frame * UPSAMPLE
    f0 = tl.load(F0 + b.to(tl.int64) * stride_fb + frame, mask=ok, other=0.0).to(tl.float32)
    base = tl.load(PREFIX + b.to(tl.int64) * num_frames + frame, mask=ok, other=0.0)
    cyc = base + (r + 1).to(tl.float32) * f0 * inv_sr
    voiced = f0 > voiced_threshold
    namp = tl.where(voiced, noise_std, sine_amp / 3.0)
    merged = tl.zeros([BLOCK], dtype=tl.float32)
    for h in tl.static_range(NUM_HARM):
        c = cyc * (h + 1)
        frac = c - tl.floor(c)
        phi = tl.load(PHASE + b * stride_pb + h).to(tl.float32)
        sine = sine_amp * tl.sin(frac * 6.283185307179586 + phi)
        nz = tl.load(NOISE + b.to(tl.int64) * stride_nb + h * stride_nh + n, mask=ok, other=0.0).to(tl.float32)
        val = tl.where(voiced, sine, 0.0) + namp * nz
        if MERGE:
            merged += tl.load(W + h).to(tl.float32) * val
        else:
            tl.store(OUT + b.to(tl.int64) * stride_ob + h * stride_oh + n, val, mask=ok)
    if MERGE:
        z = merged + tl.load(BIAS).to(tl.float32)
        # tanh(z) = 1 - 2 / (exp(2z) + 1), saturates correctly at +-inf
        tl.store(OUT + b.to(tl.int64) * stride_ob + n, 1.0 - 2.0 / (tl.exp(2.0 * z) + 1.0), mask=ok)


def sine_source_triton(f0: Tensor, noise: Tensor, phase_offsets: Tensor, *, upsample: int, sampling_rate: float,
                       sine_amp: float, noise_std: float, voiced_threshold: float,
                       merge_weight: Tensor | None, merge_bias: Tensor | None) -> Tensor:
    batch, frames = f0.shape
    num_harm, length = noise.shape[1], noise.shape[2]
    # exclusive prefix of whole-frame fundamental cycles, in fp64, reduced to its fraction
    per_frame = f0.double() * (upsample / sampling_rate)
    prefix = torch.frac(torch.cumsum(per_frame, dim=1) - per_frame).float().contiguous()
    noise = noise if noise.stride(2) == 1 else noise.contiguous()
    merge = merge_weight is not None
    out = torch.empty((batch, 1 if merge else num_harm, length), dtype=torch.float32, device=f0.device)
    w = merge_weight.float().contiguous() if merge_weight is not None else out
    bias = merge_bias.float().reshape(1) if merge_bias is not None else torch.zeros(1, device=f0.device)
    f0 = f0.contiguous()
    phase_offsets = phase_offsets.float().contiguous()
    block = 512
    _sine_source_kernel[(triton.cdiv(length, block), batch)](
        f0, prefix, noise, phase_offsets, w, bias, out, frames, length,
        f0.stride(0), noise.stride(0), noise.stride(1), phase_offsets.stride(0), out.stride(0), out.stride(1),
        1.0 / sampling_rate, float(sine_amp), float(noise_std), float(voiced_threshold),
        UPSAMPLE=upsample, NUM_HARM=num_harm, MERGE=merge, BLOCK=block, num_warps=4,
    )
    return out
