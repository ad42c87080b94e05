"""Sampling as pure functions over a batch of logits rows [B, V] float32.

Order per row (as HF generate applies its processors): repetition penalty, Step-Audio's repetition-aware ban,
temperature, top-k, top-p, then draw.
"""
from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from lm_engine.engine.config import SamplingParams

REPETITION_WINDOW = 10


def apply_repetition_penalty(logits: torch.Tensor, history: Seq[int], penalty: float) -> None:
    """CTRL / HF rule, in place on one row [V]: for every token t already seen,
    logit_t <- logit_t / p if logit_t > 0 else logit_t * p  (p > 1 makes repeats less likely)."""
    if penalty == 1.0 or not history:
        return
    idx = torch.tensor(sorted(set(history)), device=logits.device, dtype=torch.long)
    seen = logits[idx]
    logits[idx] = torch.where(seen > 0, seen / penalty, seen * penalty)


def repetition_aware_banned(history: Seq[int]) -> int | None:
    """Step-Audio TTS rule: with w = the last 10 tokens (only once 10 exist), if the last token occurs more than
    once in w (ratio > 0.1), it may not be generated again now. Returns that token, or None."""
    if len(history) < REPETITION_WINDOW:
        return None
    window = history[-REPETITION_WINDOW:]
    return window[-1] if window.count(window[-1]) > 1 else None


def top_k_top_p_mask(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Masks [B, V] logits outside each row's top-k and nucleus (top-p) sets with -inf.

    top_k: [B] int64 (0 = off); top_p: [B] float32 (1 = off). With the row sorted descending (s_1 >= s_2 ...):
    keep rank r < k, and keep r while the probability mass strictly before it, sum_{i<r} p_i, is < top_p (so the
    token that crosses top_p is kept and at least one token always survives).
    """
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    ranks = torch.arange(logits.shape[-1], device=logits.device).expand_as(sorted_logits)
    k = torch.where(top_k > 0, top_k, logits.shape[-1]).unsqueeze(-1)
    drop = ranks >= k
    probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    drop |= mass_before >= top_p.unsqueeze(-1)
    drop[:, 0] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


def draw(logits: torch.Tensor, temperature: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """[B, V] logits, [B] temperatures -> [B] int64 tokens. Temperature 0 is greedy (argmax).

    Otherwise p = softmax(logits / T) and the token is argmax_i p_i / q_i with q_i ~ Exp(1) i.i.d.: P(i wins) = p_i
    (exponential race), which needs no CPU sync, unlike torch.multinomial.
    """
    greedy = logits.argmax(dim=-1)
    t = torch.where(temperature > 0, temperature, 1.0).unsqueeze(-1)
    probs = torch.softmax(logits / t, dim=-1)
    q = torch.empty_like(probs).exponential_(1.0, generator=generator)
    sampled = (probs / q).argmax(dim=-1)
    return torch.where(temperature > 0, sampled, greedy)


def sample(logits: torch.Tensor, params: Seq[SamplingParams], histories: Seq[Seq[int]],
           generator: torch.Generator | None = None) -> list[int]:
    """One token per row. logits [B, V] float32 (modified in place); histories: each row's tokens so far."""
    banned: list[tuple[int, int]] = []
    for row, (p, hist) in enumerate(zip(params, histories)):
        if p.repetition_penalty != 1.0:
            apply_repetition_penalty(logits[row], hist, p.repetition_penalty)
        if p.repetition_aware and (token := repetition_aware_banned(hist)) is not None:
            banned.append((row, token))
    if banned:  # one indexed write for the whole batch, not one launch per row
        rows, tokens = zip(*banned)
        logits[list(rows), list(tokens)] = float("-inf")
    dev = logits.device
    if all(p.temperature == 0 for p in params):
        return [int(t) for t in logits.argmax(dim=-1).tolist()]
    temperature = torch.tensor([p.temperature for p in params], device=dev, dtype=torch.float32)
    if any(p.temperature > 0 and (p.top_k > 0 or p.top_p < 1.0) for p in params):
        top_k = torch.tensor([p.top_k for p in params], device=dev, dtype=torch.long)
        top_p = torch.tensor([p.top_p for p in params], device=dev, dtype=torch.float32)
        logits = top_k_top_p_mask(logits, top_k, top_p)
    return [int(t) for t in draw(logits, temperature, generator).tolist()]
