"""HiFT's signal-level pieces: the NSF sine source (over kernels.vocoder.sine_source) and the source STFT.

Sine source (HiFT SineGen + SourceModuleHnNSF, Step-Audio cosyvoice/hifigan/generator.py):
  phase_h(n) = 2*pi*frac(sum_{m<=n} f0(m) * (h+1) / sr) + phi_h      (phi_0 = 0, phi_h ~ U(-pi, pi) for h >= 1)
  uv(n) = f0(n) > voiced_threshold
  e_h(n) = amp * sin(phase_h(n)) * uv(n) + noise_h(n) * (uv * sigma + (1 - uv) * amp / 3)
  source(n) = tanh(l_linear(e(n)))
Upstream draws phi and the noise from the global RNG and sums phases in float32 over the whole utterance. We take
them from a counter-based hash indexed by absolute sample (so chunked == offline) and carry the running phase in
float64 (fractional cycles) across chunks, which also avoids upstream's float32 drift on long utterances.
"""
from __future__ import annotations

import math

import torch

from kernels import vocoder as KV
from speech_decoder.cosyvoice_noise import hash_uniform, hashed_normal


def harmonic_phase_offsets(seed: int | torch.Tensor, n_harmonics: int,
                           device: torch.device | None = None) -> torch.Tensor:
    """phi [H+1] float64: 0 for the fundamental, U(-pi, pi) for each overtone (fixed per session seed)."""
    u = hash_uniform(torch.arange(n_harmonics + 1, device=device, dtype=torch.int64) + (1 << 40), seed)
    phi = (u * 2.0 - 1.0) * math.pi
    phi[0].zero_()  # not `phi[0] = 0.0`: that copies a CPU scalar in, which a CUDA graph capture refuses
    return phi


def nsf_source(f0: torch.Tensor, start_cycles: torch.Tensor, first_sample: int | torch.Tensor, *,
               seed: int | torch.Tensor, sampling_rate: int,
               upsample: int, n_harmonics: int, sine_amp: float, noise_std: float, voiced_threshold: float,
               merge_weight: torch.Tensor, merge_bias: torch.Tensor,
               phase_offsets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The NSF source of one stretch of frames, through kernels.vocoder.sine_source (fused on CUDA).

    Args:
        f0: [T] Hz per mel frame (repeated `upsample` times per sample, as nn.Upsample(nearest)).
        start_cycles: [H+1] float64 fractional cycles accumulated before this stretch (zeros at utterance start).
        first_sample: absolute index of the stretch's first sample in the utterance (indexes the noise).
        first_sample and seed may be int64 device scalars (a CUDA graph then reads them at replay).
        merge_weight [H+1], merge_bias [1]: SourceModuleHnNSF's l_linear (then tanh).
        phase_offsets: harmonic_phase_offsets(seed, n_harmonics), when the caller keeps it (a stream's windows
            share it; computing it is ~17 small ops).
    Returns:
        source [T * upsample] float32 and the cycles after the stretch [H+1] float64 (pass to the next call).
    """
    nh = n_harmonics + 1
    dev = f0.device
    samples = torch.arange(f0.numel() * upsample, device=dev, dtype=torch.int64) + first_sample
    noise = hashed_normal(seed, samples[None, :] * nh + torch.arange(nh, device=dev)[:, None])  # [H+1, n]
    mult = torch.arange(1, nh + 1, device=dev, dtype=torch.float64)
    # sin is 2 pi periodic: the cycles so far enter as a phase offset, the kernel's running sum starts at zero.
    if phase_offsets is None:
        phase_offsets = harmonic_phase_offsets(seed, n_harmonics, dev)
    phase = torch.remainder(phase_offsets + 2.0 * math.pi * start_cycles, 2.0 * math.pi)
    source = KV.sine_source(f0[None].float(), noise[None], phase[None], upsample=upsample,
                            sampling_rate=float(sampling_rate), sine_amp=sine_amp, noise_std=noise_std,
                            voiced_threshold=voiced_threshold, merge_weight=merge_weight, merge_bias=merge_bias)
    end = torch.remainder(start_cycles + f0.double().sum() * upsample / sampling_rate * mult, 1.0)
    return source[0, 0], end


def stft_window(n_fft: int, device: torch.device | None = None) -> torch.Tensor:
    """scipy get_window('hann', n_fft, fftbins=True): the periodic Hann window."""
    return torch.hann_window(n_fft, periodic=True, device=device, dtype=torch.float32)


def source_stft(source: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """[B, T] source -> [B, n_fft + 2, T / hop + 1] = [real | imag] bins (torch.stft, center=True, reflect)."""
    spec = torch.stft(source.float(), n_fft, hop, n_fft, window=stft_window(n_fft, source.device),
                      return_complex=True)
    return torch.cat([spec.real, spec.imag], dim=1)
