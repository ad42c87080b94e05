"""Position-indexed noise for the speech decoder.

Noise is a pure function of (seed, absolute position) instead of a draw from a stateful generator, so a chunked
decode sees exactly the noise an offline decode sees at every mel frame and audio sample, on any device.
"""
from __future__ import annotations

import math

import torch


def hash_uniform(idx: torch.Tensor, seed: int | torch.Tensor) -> torch.Tensor:
    """Counter-based uniform (0, 1) from int64 indices (splitmix64 finaliser, 2^-24 resolution).

    Noise indexed by absolute position rather than drawn from a stateful generator, so any chunking of a sequence
    reproduces the same values per position on any device.
    """
    mask = (1 << 63) - 1
    x = (idx * 0x9E3779B1 + (seed * 0x632BE5AB + 0x5851F42D)) & mask
    x = ((x ^ (x >> 31)) * 0x5DEECE66D) & mask
    x = ((x ^ (x >> 29)) * 0x2545F491) & mask
    x = x ^ (x >> 32)
    return ((x & 0xFFFFFF).double() + 0.5) / float(1 << 24)


def hashed_normal(seed: int | torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Standard normal values (float32) for int64 `index` (any shape), Box-Muller over two hashed streams."""
    # streams 2i and 2i + 1 hashed in one pass (half the launches of two passes, the same values)
    u = hash_uniform(index[..., None] * 2 + torch.arange(2, device=index.device), seed)
    return (torch.sqrt(-2.0 * torch.log(u[..., 0])) * torch.cos(2.0 * math.pi * u[..., 1])).float()


def cfm_noise(seed: int, first_frame: int, n_frames: int, n_mels: int, device: torch.device | None = None,
              ) -> torch.Tensor:
    """CFM start noise for absolute mel frames [first_frame, first_frame + n_frames): [1, n_mels, n_frames].

    Prompt frames use negative indices (-mel_len1 .. -1) so they never collide with target frames.
    """
    frames = torch.arange(first_frame, first_frame + n_frames, device=device, dtype=torch.int64)
    idx = (frames[None, :] + (1 << 32)) * n_mels + torch.arange(n_mels, device=device, dtype=torch.int64)[:, None]
    return hashed_normal(seed, idx).unsqueeze(0)
