"""HiFTGenerator (NSF + iSTFTNet) at 22050 Hz, with the parameter names hift.pt uses.

Step-Audio's cosyvoice/hifigan/generator.py wraps convs in the legacy torch.nn.utils.weight_norm and loads hift.pt
with a strict load_state_dict, so the file stores `weight_g` / `weight_v` (g: [out, 1, 1], dim 0) for conv_pre,
ups.*, resblocks.*.convs{1,2}.*, source_resblocks.*, conv_post and f0_predictor.condnet.{0,2,4,6,8}; source_downs.*
are plain convs. ResBlocks use Snake (`activations{1,2}.{i}.alpha`, linear scale), not leaky ReLU.
`load_hift_state_dict` also accepts the newer parametrizations names (`parametrizations.weight.original0/1`) and a
`generator.` prefix, which later CosyVoice checkpoints use.

Shapes for a mel of L frames (real model): conv_pre -> [512, L]; ups[0] (k16 s8 p4) -> [256, 8L];
ups[1] -> [128, 64L]; reflection pad (1, 0) -> 64L + 1 = the source STFT frame count (n_fft 16, hop 4, centered,
256L samples); conv_post -> [18, 64L + 1]; iSTFT -> 256L samples.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from kernels import vocoder as KV
from speech_decoder.cosyvoice_config import HiFTConfig
from speech_decoder.hift.source import nsf_source, source_stft
from speech_decoder.typed_children import child


class WNConv1d(nn.Module):
    """Conv1d with legacy weight-norm parameters (weight = g * v / ||v||, norm over all dims but 0).

    Upstream's weight_norm hook recomputes the weight at every call (four kernels per conv, ~60 convs per HiFT
    call); without autograd we keep it until g or v change (their version counters, bumped by load_state_dict and
    any in-place update, and their storage, replaced by .to()).
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                 transpose: bool = False) -> None:
        super().__init__()
        shape = (cin, cout, k) if transpose else (cout, cin, k)
        self.weight_v = nn.Parameter(torch.randn(shape) * 0.01)  # upstream init_weights: N(0, 0.01)
        self.weight_g = nn.Parameter(self.weight_v.detach().flatten(1).norm(dim=1).view(-1, 1, 1).clone())
        self.bias = nn.Parameter(torch.zeros(cout))
        self.stride, self.padding, self.dilation, self.transpose = stride, padding, dilation, transpose
        self._cached: tuple[tuple[int, ...], torch.Tensor] | None = None

    def weight(self) -> torch.Tensor:
        g, v = self.weight_g, self.weight_v
        if torch.is_grad_enabled():
            return v * (g / v.flatten(1).norm(dim=1).view(-1, 1, 1))
        key = (g._version, v._version, g.data_ptr(), v.data_ptr())
        if self._cached is None or self._cached[0] != key:
            if self._cached is not None and self._cached[1].is_cuda:
                # The convolutions queued on this stream may not have read the old weight yet, which may have been
                # made on another stream (a warm-up's, a capture's): freed unmarked, its memory would go at once to
                # the next allocation there and be overwritten before they read it.
                old = self._cached[1]
                old.record_stream(torch.cuda.current_stream(old.device))
            self._cached = (key, v * (g / v.flatten(1).norm(dim=1).view(-1, 1, 1)))
        return self._cached[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transpose:
            return F.conv_transpose1d(x, self.weight(), self.bias, self.stride, self.padding)
        return F.conv1d(x, self.weight(), self.bias, self.stride, self.padding, self.dilation)


class Snake(nn.Module):
    """x + sin^2(alpha x) / (alpha + 1e-9), alpha per channel (linear scale): kernels.vocoder.snake."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return KV.snake(x, self.alpha)


class ResBlock(nn.Module):
    def __init__(self, ch: int, k: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(WNConv1d(ch, ch, k, 1, d * (k - 1) // 2, d) for d in dilations)
        self.convs2 = nn.ModuleList(WNConv1d(ch, ch, k, 1, (k - 1) // 2, 1) for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(ch) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(ch) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + c2(a2(c1(a1(x)))) per dilation; each residual add runs fused with the next dilation's Snake."""
        act = self.activations1[0](x)
        n = len(self.convs1)
        for i in range(n):
            xt = self.convs2[i](self.activations2[i](self.convs1[i](act)))
            if i + 1 < n:
                x, act = KV.add_snake(x, xt, child(self.activations1, i + 1, Snake).alpha)
            else:
                x = x + xt
        return x


class ConvRNNF0Predictor(nn.Module):
    """5 x (weight-normed Conv k3 + ELU) then Linear -> |f0| per mel frame (despite the name, no RNN)."""

    def __init__(self, cfg: HiFTConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = cfg.f0_in_channels
        for _ in range(5):
            layers += [WNConv1d(cin, cfg.f0_cond_channels, 3, 1, 1), nn.ELU()]
            cin = cfg.f0_cond_channels
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cfg.f0_cond_channels, cfg.f0_num_class)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, 80, L] -> f0 [B, L] Hz."""
        return torch.abs(self.classifier(self.condnet(mel).transpose(1, 2)).squeeze(-1))


class _SourceModule(nn.Module):
    """Holds `m_source.l_linear` (merge of the H+1 harmonics), as named in hift.pt."""

    def __init__(self, n_harmonics: int) -> None:
        super().__init__()
        self.l_linear = nn.Linear(n_harmonics + 1, 1)


class HiFTGenerator(nn.Module):
    def __init__(self, cfg: HiFTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        base, n_stft = cfg.base_channels, cfg.n_fft + 2
        self.m_source = _SourceModule(cfg.nb_harmonics)
        self.conv_pre = WNConv1d(cfg.in_channels, base, 7, 1, 3)
        self.ups = nn.ModuleList(
            WNConv1d(base // 2**i, base // 2 ** (i + 1), k, u, (k - u) // 2, transpose=True)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)))
        down_rates = [1, *cfg.upsample_rates[::-1][:-1]]
        cum = [1]
        for r in down_rates[1:]:
            cum.append(cum[-1] * r)
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (u, k, d) in enumerate(zip(cum[::-1], cfg.source_resblock_kernel_sizes,
                                          cfg.source_resblock_dilation_sizes)):
            ch = base // 2 ** (i + 1)
            self.source_downs.append(nn.Conv1d(n_stft, ch, 1, 1) if u == 1 else nn.Conv1d(n_stft, ch, u * 2, u, u // 2))
            self.source_resblocks.append(ResBlock(ch, k, d))
        self.resblocks = nn.ModuleList(
            ResBlock(base // 2 ** (i + 1), k, d)
            for i in range(len(self.ups)) for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes))
        self.conv_post = WNConv1d(base // 2 ** len(self.ups), n_stft, 7, 1, 3)
        self.f0_predictor = ConvRNNF0Predictor(cfg)

    # ------------------------------------------------------------------ the three stages, usable separately
    def predict_f0(self, mel: torch.Tensor) -> torch.Tensor:
        return self.f0_predictor(mel.float())

    def make_source(self, f0: torch.Tensor, start_cycles: torch.Tensor, first_sample: int | torch.Tensor,
                    seed: int | torch.Tensor, phase_offsets: torch.Tensor | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """f0 [L] Hz per frame -> source [L * samples_per_frame] and the phase state after it (see nsf_source)."""
        c = self.cfg
        return nsf_source(f0, start_cycles, first_sample, seed=seed, sampling_rate=c.sampling_rate,
                          upsample=c.samples_per_frame, n_harmonics=c.nb_harmonics, sine_amp=c.nsf_alpha,
                          noise_std=c.nsf_sigma, voiced_threshold=c.nsf_voiced_threshold,
                          merge_weight=self.m_source.l_linear.weight[0], merge_bias=self.m_source.l_linear.bias,
                          phase_offsets=phase_offsets)

    def decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """mel [B, 80, L] + source [B, L * spf] -> audio [B, L * spf] (float32).

        Convolutions stay on cuDNN; the activations, residual adds, the head and the source run through
        kernels.vocoder (fused Triton kernels on CUDA, their torch references elsewhere)."""
        c = self.cfg
        s_stft = source_stft(source, c.n_fft, c.hop_len)
        x = self.conv_pre(mel.float())
        nk = len(c.resblock_kernel_sizes)
        last = len(self.ups) - 1
        for i, up in enumerate(self.ups):
            x = up(KV.leaky_relu(x, c.lrelu_slope))
            if i == last:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](s_stft))
            outs = [self.resblocks[i * nk + j](x) for j in range(nk)]
            if i < last:
                x = sum(outs[1:], outs[0]) / nk
            elif nk > 1:  # the ResBlocks' mean and the head's leaky ReLU (default slope 0.01, as upstream) in one pass
                x = KV.add_leaky_relu(sum(outs[1:-1], outs[0]), outs[-1], slope=0.01, scale=1.0 / nk)
            else:
                x = KV.leaky_relu(outs[0], 0.01)
        return KV.istft_head(self.conv_post(x), n_fft=c.n_fft, hop=c.hop_len, audio_limit=c.audio_limit)

    @torch.inference_mode()
    def inference(self, mel: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Offline vocoding of a whole utterance: mel [1, 80, L] -> audio [1, L * 256]."""
        f0 = self.predict_f0(mel)[0]
        start = torch.zeros(self.cfg.nb_harmonics + 1, dtype=torch.float64, device=mel.device)
        source, _ = self.make_source(f0, start, 0, seed)
        return self.decode(mel, source[None])


def normalize_hift_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a hift.pt state dict onto our names: strip `generator.`, parametrizations -> weight_g/weight_v."""
    out: dict[str, torch.Tensor] = {}
    for key, val in sd.items():
        k = key[len("generator."):] if key.startswith("generator.") else key
        k = k.replace("parametrizations.weight.original0", "weight_g")
        k = k.replace("parametrizations.weight.original1", "weight_v")
        out[k] = val
    return out
