"""HiFT's signal-level pieces as small functions: the NSF sine source and the iSTFT head.

These are the seams where kernels/vocoder.py (fused NSF source, fused iSTFT head) plug in later; the functions here
are the torch definitions our streaming code is tested against.

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
import torch.nn.functional as F

from speech_decoder.cosyvoice_noise import hash_uniform, hashed_normal


def harmonic_phase_offsets(seed: int, n_harmonics: int, device: torch.device | None = None) -> torch.Tensor:
    """phi [H+1] float64: 0 for the fundamental, U(-pi, pi) for each overtone (fixed per session seed)."""
    u = hash_uniform(torch.arange(n_harmonics + 1, device=device, dtype=torch.int64) + (1 << 40), seed)
    phi = (u * 2.0 - 1.0) * math.pi
    phi[0] = 0.0
    return phi


def sine_excitation(f0: torch.Tensor, start_cycles: torch.Tensor, first_sample: int, *, seed: int,
                    sampling_rate: int, n_harmonics: int, sine_amp: float, noise_std: float,
                    voiced_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NSF harmonic excitation for one stretch of samples.

    Args:
        f0: [T] float, Hz per output sample (already upsampled from frames).
        start_cycles: [H+1] float64 fractional cycles accumulated before this stretch (zeros at utterance start).
        first_sample: absolute index of f0[0] in the utterance (indexes the noise).
    Returns:
        excitation [T, H+1] float32 and the cycles after the stretch [H+1] float64 (pass to the next call).
    """
    mult = torch.arange(1, n_harmonics + 2, device=f0.device, dtype=torch.float64)
    inc = f0.double()[:, None] * mult[None, :] / sampling_rate  # [T, H+1] cycles per sample
    cycles = torch.remainder(torch.cumsum(inc, dim=0) + start_cycles[None, :], 1.0)
    phi = harmonic_phase_offsets(seed, n_harmonics, f0.device)
    sine = sine_amp * torch.sin(2.0 * math.pi * cycles + phi[None, :]).float()
    uv = (f0 > voiced_threshold).float()[:, None]
    samples = torch.arange(first_sample, first_sample + f0.numel(), device=f0.device, dtype=torch.int64)
    idx = samples[:, None] * (n_harmonics + 1) + torch.arange(n_harmonics + 1, device=f0.device)[None, :]
    noise = hashed_normal(seed, idx) * (uv * noise_std + (1.0 - uv) * sine_amp / 3.0)
    end = cycles[-1] if f0.numel() else start_cycles
    return sine * uv + noise, end


def merge_harmonics(excitation: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """SourceModuleHnNSF l_linear + tanh: [T, H+1] -> [T]."""
    return torch.tanh(F.linear(excitation, weight.float(), bias.float())).squeeze(-1)


def stft_window(n_fft: int, device: torch.device | None = None) -> torch.Tensor:
    """scipy get_window('hann', n_fft, fftbins=True): the periodic Hann window."""
    return torch.hann_window(n_fft, periodic=True, device=device, dtype=torch.float32)


def source_stft(source: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """[B, T] source -> [B, n_fft + 2, T / hop + 1] = [real | imag] bins (torch.stft, center=True, reflect)."""
    spec = torch.stft(source.float(), n_fft, hop, n_fft, window=stft_window(n_fft, source.device),
                      return_complex=True)
    return torch.cat([spec.real, spec.imag], dim=1)


def istft_head(x: torch.Tensor, n_fft: int, hop: int, audio_limit: float) -> torch.Tensor:
    """conv_post output [B, n_fft + 2, F] -> audio [B, hop * (F - 1)].

    magnitude = exp(x[:, :n_fft/2+1]) clipped at 1e2, phase = sin(x[:, n_fft/2+1:]) (upstream's "redundant" sin is
    kept: it changes the result), then iSTFT with the periodic Hann window and a clamp to +-audio_limit.
    """
    nb = n_fft // 2 + 1
    mag = torch.clip(torch.exp(x[:, :nb].float()), max=1e2)
    phase = torch.sin(x[:, nb:].float())
    spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
    audio = torch.istft(spec, n_fft, hop, n_fft, window=stft_window(n_fft, x.device))
    return torch.clamp(audio, -audio_limit, audio_limit)
