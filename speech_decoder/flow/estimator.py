"""The CFM velocity estimator: CosyVoice's ConditionalDecoder, a 1-D U-Net with transformer blocks.

Input channels are [x | mu | spk (broadcast over time) | cond] = 80+80+80+80 = 320. With channels (256, 256) there is
one stride-2 down/up pair: down_blocks.0 ends in Downsample1D (`.2.conv`, k3 s2), down_blocks.1 in a plain k3 conv
(`.2`), up_blocks.0 in Upsample1D (`.2.conv`, ConvTranspose k4 s2), up_blocks.1 in a plain conv.
Transformer blocks are diffusers' BasicTransformerBlock without cross-attention; names kept for flow.pt:
  norm1, attn1.{to_q,to_k,to_v} (no bias; heads*head_dim wide), attn1.to_out.0 (bias), norm3,
  ff.net.0.proj (Linear dim->4dim, GELU), ff.net.2 (Linear 4dim->dim).
Every GroupNorm and attention spans the whole sequence, so the estimator is non-causal and not local in time.
Upstream multiplies by a sequence mask around every convolution; in inference the mask is all ones (a window is never
padded), so those ~90 multiplies per call (of ~1000 kernels, 10 calls per window) are left out: the same values.

A first streaming window is launch-bound, so the estimator saves kernels where the values allow:
* the time conditioning (sinusoidal embedding -> time_mlp -> each ResnetBlock1D's `mlp`) depends only on t, so
  ConditionalCFM computes it for all Euler steps at once (`time_terms`) and passes each step its rows;
* each residual add of a transformer block, with the LayerNorm after it, is the epilogue of the projection before
  it (kernels.flow_ops.linear_add_layer_norm: attn1.to_out.0 with norm3, ff.net.2 with the next block's norm1;
  the last block's add, with no norm after it: linear_add), and the GELU that of ff.net.0.proj (linear_gelu):
  5 launches a block instead of 8;
* each GroupNorm is fused into the Mish and the add after it (kernels.flow_ops.group_norm_mish), which also adds
  the biases of the convolutions before and beside it (conv_group_norm_mish).
The nn.GroupNorm / nn.Mish / nn.LayerNorm modules stay as the holders of the parameters (flow.pt's names).
Activations are [B, C, T] views of time-major [B, T, C] memory ("channels last"), and the convolutions' weights are
stored the same way ([C_out, K, C_in] memory): cuDNN's bf16 convolutions run in that layout, and fed [B, C, T]
contiguous tensors they converted input and weight to it and the output back at every call (H100 run5: ~1,400
layout kernels, 3.6 of a first window's 31 ms), while the transformer blocks read the same memory as [B, T, C]
without a copy. Concatenations are done time-major to keep the layout.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kernels.flow_ops import group_norm_mish, linear_add, linear_add_layer_norm, linear_gelu
from speech_decoder.cosyvoice_config import EstimatorConfig
from speech_decoder.typed_children import child


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Matcha SinusoidalPosEmb: t [B] -> [B, dim] = [sin(scale*t*f_k) | cos(scale*t*f_k)]."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    arg = scale * t.float()[:, None] * freqs[None, :]
    return torch.cat([arg.sin(), arg.cos()], dim=-1)


def conv_group_norm_mish(conv: nn.Conv1d, gn: nn.GroupNorm, x: torch.Tensor, add: torch.Tensor | None = None,
                         add_bias: torch.Tensor | None = None) -> torch.Tensor:
    """mish(gn(conv(x))) (+ add + add_bias) with the convolution run without its bias, which the fused op adds
    before the statistics: on CUDA a convolution's bias add is a kernel of its own."""
    y = F.conv1d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return group_norm_mish(y, gn.weight, gn.bias, gn.num_groups, gn.eps, add, x_bias=conv.bias, add_bias=add_bias)


class Block1D(nn.Module):
    def __init__(self, dim: int, dim_out: int, groups: int = 8) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(dim, dim_out, 3, padding=1), nn.GroupNorm(groups, dim_out), nn.Mish())

    def forward(self, x: torch.Tensor, add: torch.Tensor | None = None,
                add_bias: torch.Tensor | None = None) -> torch.Tensor:
        """mish(group_norm(conv(x))) (+ add + add_bias, broadcast to [B, C, T]); the Mish module holds nothing."""
        conv, norm = child(self.block, 0, nn.Conv1d), child(self.block, 1, nn.GroupNorm)
        return conv_group_norm_mish(conv, norm, x, add, add_bias)


class ResnetBlock1D(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_emb_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = Block1D(dim, dim_out)
        self.block2 = Block1D(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: torch.Tensor, time_term: torch.Tensor) -> torch.Tensor:
        """x [B, C_in, T]; time_term [B or 1, C] = self.mlp(t_emb), computed ahead (ConditionalDecoder.time_terms)."""
        h = self.block1(x, time_term.unsqueeze(-1))
        return self.block2(h, F.conv1d(x, self.res_conv.weight), self.res_conv.bias)  # bias added in block2's op


class _Downsample1D(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Upsample1D(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _TimestepMLP(nn.Module):
    def __init__(self, in_ch: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_ch, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])
        self._qkv: torch.Tensor | None = None  # not state: upstream's file keeps to_q, to_k, to_v

    def _fused_qkv(self) -> torch.Tensor:
        """to_q, to_k and to_v's weights as one [3 * inner, dim] matrix, so a block runs one GEMM instead of three
        (in a launch-bound streaming window every kernel counts). The three Parameters are re-pointed into it, so
        nothing is stored twice and load_state_dict, which copies into them in place, updates it too; a move
        (.to()) gives them new storage, and the next call fuses again."""
        ws = [m.weight for m in (self.to_q, self.to_k, self.to_v)]
        w = self._qkv
        if w is None or w.device != ws[0].device or any(p.data_ptr() != w[i].data_ptr()
                                                         for i, p in enumerate(ws)):
            w = torch.stack([p.detach() for p in ws])  # [3, inner, dim]: row block i is weight i
            for i, p in enumerate(ws):
                if p.is_cuda:
                    # The stack just queued on this stream (the speech path's) may not have read the old weight
                    # yet, which was made on the loading stream: freed unmarked, its memory would go at once to the
                    # next allocation there (another thread launching on it) and be overwritten before it is read.
                    p.data.record_stream(torch.cuda.current_stream(p.device))
                p.data = w[i]
            self._qkv = w
        return w.view(-1, w.shape[-1])

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, dim] -> the heads' outputs side by side [B, T, heads * head_dim], before to_out."""
        b, t, _ = x.shape
        qkv = F.linear(x, self._fused_qkv()).view(b, t, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, T, head_dim]
        out = F.scaled_dot_product_attention(q, k, v)  # full attention, no mask (upstream passes none)
        return out.transpose(1, 2).reshape(b, t, -1)

    @property
    def out_proj(self) -> nn.Linear:
        return child(self.to_out, 0, nn.Linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upstream's attn1(x). The estimator's blocks apply to_out themselves, fused with what follows it."""
        return self.out_proj(self.attend(x))


class _GELUProj(nn.Module):
    def __init__(self, dim: int, inner: int, approximate: str) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_gelu(x, self.proj.weight, self.proj.bias, self.approximate)


class _FeedForward(nn.Module):
    """Holds upstream's ff.net.0.proj and ff.net.2 (net.1 is a Dropout: a no-op in inference); TransformerBlock runs
    them, fused with the residual add and LayerNorm that follow."""

    def __init__(self, dim: int, approximate: str) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GELUProj(dim, 4 * dim, approximate), nn.Dropout(0.0), nn.Linear(4 * dim, dim)])

    @property
    def proj(self) -> _GELUProj:
        return child(self.net, 0, _GELUProj)

    @property
    def down(self) -> nn.Linear:
        return child(self.net, 2, nn.Linear)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, act_fn: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = _Attention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        approx = "tanh" if act_fn == "gelu-approximate" else "none"
        self.ff = _FeedForward(dim, approx)

    def forward(self, h: torch.Tensor, residual: torch.Tensor, next_norm: nn.LayerNorm | None,
                ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """h = norm1(residual), the residual stream [B, T, dim]. Returns (next_norm of the new stream, or None
        without one; the new stream): upstream's x = x + attn(norm1(x)); x = x + ff(norm3(x)), each add done in
        the epilogue of the projection before it together with the LayerNorm after it."""
        out = self.attn1.out_proj
        h, residual = linear_add_layer_norm(self.attn1.attend(h), out.weight, out.bias, residual, self.norm3.weight,
                                            self.norm3.bias, self.norm3.eps)
        down = self.ff.down
        h = self.ff.proj(h)
        if next_norm is None:
            return None, linear_add(h, down.weight, down.bias, residual)
        return linear_add_layer_norm(h, down.weight, down.bias, residual, next_norm.weight, next_norm.bias,
                                     next_norm.eps)


def _channels_cat(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """torch.cat(parts, dim=1) of [B, C_i, T] tensors, as a [B, sum C_i, T] view of time-major memory."""
    return torch.cat([p.transpose(1, 2) for p in parts], dim=2).transpose(1, 2)


def _run_blocks(blocks: Sequence[TransformerBlock], x: torch.Tensor) -> torch.Tensor:
    # [B, C, T] -> [B, T, C]: already contiguous for the channels-last activations (module docstring); made
    # contiguous here otherwise, once: a transposed view stays transposed through every residual add, so each
    # LayerNorm and reshape of each block copied it again (~170 copy kernels per estimator call).
    if len(blocks) == 0:
        return x
    residual = x.transpose(1, 2).contiguous()
    h = blocks[0].norm1(residual)
    for blk, next_norm in zip(blocks, [*(b.norm1 for b in blocks[1:]), None]):
        h, residual = blk(h, residual, next_norm)
    return residual.transpose(1, 2)


def _levels(stages: nn.ModuleList) -> Iterator[tuple[ResnetBlock1D, list[TransformerBlock], nn.Module]]:
    """Each U-Net level of down_blocks, mid_blocks or up_blocks as upstream's keys number it: its ResnetBlock1D,
    its TransformerBlocks and its down/up sampler (a middle level has none: an identity stands in)."""
    for i in range(len(stages)):
        stage = child(stages, i, nn.ModuleList)
        tblocks = child(stage, 1, nn.ModuleList)
        sampler = stage[2] if len(stage) > 2 else _NO_SAMPLER
        yield (child(stage, 0, ResnetBlock1D), [child(tblocks, j, TransformerBlock) for j in range(len(tblocks))],
               sampler)


_NO_SAMPLER = nn.Identity()


class ConditionalDecoder(nn.Module):
    def __init__(self, cfg: EstimatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = tuple(cfg.channels)
        t_dim = ch[0] * 4
        self.time_mlp = _TimestepMLP(cfg.in_channels, t_dim)

        def blocks(dim: int) -> nn.ModuleList:
            return nn.ModuleList(TransformerBlock(dim, cfg.num_heads, cfg.attention_head_dim, cfg.act_fn)
                                 for _ in range(cfg.n_blocks))

        self.down_blocks = nn.ModuleList()
        out_c = cfg.in_channels
        for i, c in enumerate(ch):
            in_c, out_c = out_c, c
            last = i == len(ch) - 1
            down: nn.Module = nn.Conv1d(out_c, out_c, 3, padding=1) if last else _Downsample1D(out_c)
            self.down_blocks.append(nn.ModuleList([ResnetBlock1D(in_c, out_c, t_dim), blocks(out_c), down]))
        self.mid_blocks = nn.ModuleList(nn.ModuleList([ResnetBlock1D(ch[-1], ch[-1], t_dim), blocks(ch[-1])])
                                        for _ in range(cfg.num_mid_blocks))
        up_ch = ch[::-1] + (ch[0],)
        self.up_blocks = nn.ModuleList()
        for i in range(len(up_ch) - 1):
            out_c = up_ch[i + 1]
            last = i == len(up_ch) - 2
            up: nn.Module = nn.Conv1d(out_c, out_c, 3, padding=1) if last else _Upsample1D(out_c)
            self.up_blocks.append(nn.ModuleList([ResnetBlock1D(up_ch[i] * 2, out_c, t_dim), blocks(out_c), up]))
        self.final_block = Block1D(up_ch[-1], up_ch[-1])
        self.final_proj = nn.Conv1d(up_ch[-1], cfg.out_channels, 1)
        for m in self.modules():  # channels-last weights (module docstring); loading and .to() keep the layout
            if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
                m.weight.data = m.weight.data.transpose(1, 2).contiguous().transpose(1, 2)

    def _resnets(self) -> Iterator[ResnetBlock1D]:
        """The ResNet blocks in the order forward() runs them."""
        for stages in (self.down_blocks, self.mid_blocks, self.up_blocks):
            for resnet, _, _ in _levels(stages):
                yield resnet

    def time_terms(self, t: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
        """t [N] -> for each ResNet block, in forward()'s order, its time term mlp(time_mlp(embedding(t))) [N, C].

        They depend on t alone, so a sampler computes all its steps' terms in one pass (N = steps) and hands each
        forward() its rows. Every block's mlp is Sequential(Mish, Linear) on the same t_emb: Mish runs once."""
        t_emb = self.time_mlp(timestep_embedding(t, self.cfg.in_channels).to(dtype))
        m = F.mish(t_emb)
        return [resnet.mlp[1](m) for resnet in self._resnets()]

    def forward(self, x: torch.Tensor, mu: torch.Tensor, t: torch.Tensor, spks: torch.Tensor,
                cond: torch.Tensor, time_terms: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """x, mu, cond: [B, 80, T]; t: [B]; spks: [B, 80] -> velocity [B, 80, T].

        time_terms: this step's `time_terms(t)` rows, each [B or 1, C], if computed ahead; t is then not read."""
        terms = iter(self.time_terms(t, x.dtype) if time_terms is None else time_terms)
        h = _channels_cat([x, mu, spks[:, :, None].expand(-1, -1, x.size(-1)), cond])
        skips = []
        for resnet, tblocks, down in _levels(self.down_blocks):
            h = _run_blocks(tblocks, resnet(h, next(terms)))
            skips.append(h)
            h = down(h)
        for resnet, tblocks, _ in _levels(self.mid_blocks):
            h = _run_blocks(tblocks, resnet(h, next(terms)))
        for resnet, tblocks, up in _levels(self.up_blocks):
            skip = skips.pop()
            h = _channels_cat([h[:, :, : skip.size(-1)], skip])
            h = up(_run_blocks(tblocks, resnet(h, next(terms))))
        return self.final_proj(self.final_block(h))
