"""MaskedDiffWithXvec: speech tokens (+ prompt tokens, prompt mel, x-vector) -> 80-bin mel at 22050/256 Hz.

Pipeline (as Step-Audio cosyvoice/flow/flow.py inference()):
  spk = Linear(192->80)(l2norm(xvector)); h = encoder_proj(Conformer(Embedding(clamp(tokens, 0))))
  mu = InterpolateRegulator(h_prompt -> mel_len1 frames, h_target -> mel_len2 frames)
  mel = ConditionalCFM(mu, spk, cond = prompt mel in the first mel_len1 frames, zeros after)[:, :, mel_len1:]
ConditionalCFM: Euler over t = 1 - cos(pi/2 * linspace(0, 1, n+1)), classifier-free guidance
  v = (1 + r) v(x | mu, spk, cond) - r v(x | 0, 0, 0) with r = inference_cfg_rate (0.7).
The starting noise is an argument (`noise`) so callers choose how it is drawn; `cfm_noise()` gives noise indexed by
absolute mel frame so that a chunked decode sees the same noise per frame as an offline one.
State-dict names as flow.pt: input_embedding, spk_embed_affine_layer, encoder.*, encoder_proj,
length_regulator.model.{0,1,3,4,6,7,9,10,12}, decoder.estimator.*.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speech_decoder.cosyvoice_config import CFMConfig, FlowConfig, LengthRegulatorConfig
from speech_decoder.cosyvoice_noise import cfm_noise
from speech_decoder.flow.encoder import ConformerEncoder
from speech_decoder.flow.estimator import ConditionalDecoder, conv_group_norm_mish
from speech_decoder.typed_children import child


def window_noise(seed: int, mel_len1: int, first_frame: int, mel_len2: int, n_mels: int,
                 device: torch.device | None = None) -> torch.Tensor:
    """CFM start noise of one window, [1, n_mels, mel_len1 + mel_len2]: the prompt at negative frames, the target
    from absolute frame `first_frame`."""
    return torch.cat([cfm_noise(seed, -mel_len1, mel_len1, n_mels, device),
                      cfm_noise(seed, first_frame, mel_len2, n_mels, device)], dim=2)


class InterpolateRegulator(nn.Module):
    """Linear interpolation to the mel length, then (Conv k3, GroupNorm, Mish) x len(ratios) and a 1x1 conv."""

    def __init__(self, cfg: LengthRegulatorConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in cfg.sampling_ratios:
            layers += [nn.Conv1d(cfg.channels, cfg.channels, 3, 1, 1), nn.GroupNorm(cfg.groups, cfg.channels),
                       nn.Mish()]
        layers.append(nn.Conv1d(cfg.channels, cfg.out_channels or cfg.channels, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, h_prompt: torch.Tensor, h_target: torch.Tensor, mel_len1: int, mel_len2: int) -> torch.Tensor:
        """h_*: [B, T, C] -> [B, mel_len1 + mel_len2, C]; prompt and target are stretched separately (upstream)."""
        parts = []
        if h_prompt.size(1) > 0 and mel_len1 > 0:
            parts.append(F.interpolate(h_prompt.transpose(1, 2), size=mel_len1, mode="linear"))
        parts.append(F.interpolate(h_target.transpose(1, 2), size=mel_len2, mode="linear"))
        h = torch.cat(parts, dim=2)
        layers = self.model
        for i in range(0, len(layers) - 1, 3):  # (Conv, GroupNorm, Mish): the Mish holds nothing, fused below
            h = conv_group_norm_mish(child(layers, i, nn.Conv1d), child(layers, i + 1, nn.GroupNorm), h)
        return layers[-1](h).transpose(1, 2)


class ConditionalCFM(nn.Module):
    def __init__(self, cfg: CFMConfig, estimator: ConditionalDecoder) -> None:
        super().__init__()
        self.cfg = cfg
        self.estimator = estimator

    def time_span(self, n_timesteps: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        t = torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=dtype)
        if self.cfg.t_scheduler == "cosine":
            t = 1 - torch.cos(t * 0.5 * torch.pi)
        return t

    def forward(self, noise: torch.Tensor, mu: torch.Tensor, spks: torch.Tensor, cond: torch.Tensor,
                n_timesteps: int = 10) -> torch.Tensor:
        """noise, mu, cond: [B, 80, T]; spks: [B, 80] -> mel [B, 80, T] (Euler, CFG doubled batch)."""
        t_span = self.time_span(n_timesteps, mu.device, mu.dtype)
        x = noise.to(mu.dtype)
        b = x.size(0)
        mu2 = torch.cat([mu, torch.zeros_like(mu)])
        spk2 = torch.cat([spks, torch.zeros_like(spks)])
        cond2 = torch.cat([cond, torch.zeros_like(cond)])
        r = self.cfg.inference_cfg_rate
        # the time conditioning of every step in one pass, [n_timesteps, C] per ResNet block: it depends on t alone
        terms = self.estimator.time_terms(t_span[:-1], x.dtype)
        for step in range(1, len(t_span)):
            t, dt = t_span[step - 1], t_span[step] - t_span[step - 1]
            step_terms = [term[step - 1: step] for term in terms]  # [1, C] each, broadcast over the batch
            if r > 0:
                v2 = self.estimator(torch.cat([x, x]), mu2, t.expand(2 * b), spk2, cond2, step_terms)
                v_cond, v_uncond = v2[:b], v2[b:]
                v = (1.0 + r) * v_cond - r * v_uncond
            else:
                v = self.estimator(x, mu, t.expand(b), spks, cond, step_terms)
            x = x + dt * v
        return x


class MaskedDiffWithXvec(nn.Module):
    def __init__(self, cfg: FlowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = ConformerEncoder(cfg.encoder)
        self.encoder_proj = nn.Linear(cfg.encoder.output_size, cfg.output_size)
        self.length_regulator = InterpolateRegulator(cfg.length_regulator)
        self.decoder = ConditionalCFM(cfg.cfm, ConditionalDecoder(cfg.estimator))

    def project_speaker(self, embedding: torch.Tensor) -> torch.Tensor:
        """CAM++ x-vector [B, 192] -> [B, 80] (L2-normalised first, as upstream)."""
        return self.spk_embed_affine_layer(F.normalize(embedding.to(self.spk_embed_affine_layer.weight.dtype), dim=1))

    @torch.inference_mode()
    def inference(self, token: torch.Tensor, prompt_token: torch.Tensor, prompt_feat: torch.Tensor,
                  embedding: torch.Tensor, *, noise: torch.Tensor | None = None, mel_len2: int | None = None,
                  seed: int = 0, first_frame: int = 0) -> torch.Tensor:
        """Decode one window, or B windows of one shape at once (rows may differ in voice and noise).

        Args:
            token: [B, N] int target tokens (dual-codebook ids minus 65536, so 0..5119).
            prompt_token: [B, P] int; prompt_feat: [B, mel_len1, 80] prompt mel; embedding: [B, 192] x-vector.
            noise: [B, 80, mel_len1 + mel_len2] start noise; default `cfm_noise(seed, ...)` with the prompt at
                negative frames and the target from `first_frame` (the same for every row).
            mel_len2: target frames; default upstream's int(N / rate * sr / hop).
        Returns:
            mel [B, 80, mel_len2] in the model dtype.
        """
        dtype = self.input_embedding.weight.dtype
        spk = self.project_speaker(embedding)
        n1 = prompt_token.size(1)
        tokens = torch.cat([prompt_token, token], dim=1).long()
        h = self.encoder_proj(self.encoder(self.input_embedding(torch.clamp(tokens, min=0))))
        mel_len1 = prompt_feat.size(1)
        if mel_len2 is None:
            mel_len2 = self.cfg.mel_frames(token.size(1))
        mu = self.length_regulator(h[:, :n1], h[:, n1:], mel_len1, mel_len2)  # [B, T, 80]
        total = mel_len1 + mel_len2
        b = token.size(0)
        cond = torch.zeros(b, self.cfg.output_size, total, device=mu.device, dtype=dtype)
        cond[:, :, :mel_len1] = prompt_feat.transpose(1, 2).to(dtype)
        if noise is None:
            noise = window_noise(seed, mel_len1, first_frame, mel_len2, self.cfg.output_size, mu.device)
            noise = noise.expand(b, -1, -1)
        if noise.shape != (b, self.cfg.output_size, total):
            raise ValueError(f"noise must be [{b}, {self.cfg.output_size}, {total}], got {tuple(noise.shape)}")
        mel = self.decoder(noise, mu.transpose(1, 2).contiguous(), spk, cond, self.cfg.n_timesteps)
        return mel[:, :, mel_len1:]
