"""Linear layers split across tensor-parallel ranks; each weight Parameter carries its own weight_loader.

Column-parallel: the output features are split (rank r holds rows [r*n/tp, (r+1)*n/tp) of the HF [out, in] weight);
no communication. Row-parallel: the input features are split; partial products are summed with all_reduce.
A checkpoint tensor always arrives whole; the loader narrows it to this rank's shard.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kernels.gemv import gemv, rms_norm_gemv
from lm_engine.layers.norm import RMSNorm
from lm_engine.layers.tp import all_reduce, divide, tp_rank, tp_size


def _param(shape: tuple[int, ...], loader: Any) -> nn.Parameter:
    p = nn.Parameter(torch.empty(shape), requires_grad=False)
    p.weight_loader = loader  # type: ignore[attr-defined]
    return p


class ReplicatedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = _param((out_features, in_features), self.weight_loader)
        self.bias = _param((out_features,), self.weight_loader) if bias else None

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        param.data.copy_(loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gemv(x, self.weight, self.bias)


class ColumnParallelLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = tp_rank(), tp_size()
        out_local = divide(out_features, self.tp_size)
        self.weight = _param((out_local, in_features), self.weight_loader)
        self.bias = _param((out_local,), self.weight_loader) if bias else None

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        n = param.shape[0]
        param.data.copy_(loaded.narrow(0, self.tp_rank * n, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gemv(x, self.weight, self.bias)

    def forward_norm(self, x: torch.Tensor, residual: torch.Tensor | None, norm: RMSNorm,
                     swiglu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(this layer on norm(residual + x), residual + x), or on norm(x) and x without a residual: the pre-norm
        block's add and norm inside the product (kernels.gemv.rms_norm_gemv). swiglu: this layer is [gate | up]
        (MergedColumnParallelLinear) and its output silu(gate) * up."""
        return rms_norm_gemv(x, residual, norm.weight, norm.eps, self.weight, self.bias, swiglu)


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel outputs fused in one matmul (gate and up of SwiGLU): [gate_r | up_r] per rank."""

    def __init__(self, in_features: int, out_sizes: list[int], bias: bool = False) -> None:
        self.out_sizes = out_sizes
        super().__init__(in_features, sum(out_sizes), bias)

    def shard(self, shard_id: int) -> tuple[int, int]:
        """(first row, rows) of one fused output in this rank's weight."""
        local = [divide(s, self.tp_size) for s in self.out_sizes]
        return sum(local[:shard_id]), local[shard_id]

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: int) -> None:  # type: ignore[override]
        offset, n = self.shard(shard_id)
        param.data.narrow(0, offset, n).copy_(loaded.narrow(0, self.tp_rank * n, n))


class QKVParallelLinear(ColumnParallelLinear):
    """q, k, v projections fused; rank r holds query heads [r*H/tp, ...) and KV groups [r*G/tp, ...).

    Contiguous split keeps the GQA mapping local: query head h uses group h // (H/G) and both index ranges are split
    at the same ratio, so a rank's query heads only read its own KV groups.
    """

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int,
                 bias: bool = False) -> None:
        tp = tp_size()
        self.head_dim = head_dim
        self.num_heads = divide(num_heads, tp)
        self.num_kv_heads = divide(num_kv_heads, tp)
        super().__init__(hidden_size, (num_heads + 2 * num_kv_heads) * head_dim, bias)

    def shard(self, shard_id: str) -> tuple[int, int]:  # type: ignore[override]
        """(first row, rows) of q, k or v in this rank's weight."""
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        return {"q": (0, q), "k": (q, kv), "v": (q + kv, kv)}[shard_id]

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: str) -> None:  # type: ignore[override]
        offset, n = self.shard(shard_id)
        param.data.narrow(0, offset, n).copy_(loaded.narrow(0, self.tp_rank * n, n))


class RowParallelLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = tp_rank(), tp_size()
        self.weight = _param((out_features, divide(in_features, self.tp_size)), self.weight_loader)
        self.bias = _param((out_features,), self.bias_loader) if bias else None

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        n = param.shape[1]
        param.data.copy_(loaded.narrow(1, self.tp_rank * n, n))

    def bias_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        param.data.copy_(loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._reduce(gemv(x, self.weight, self._bias()))

    def _bias(self) -> torch.Tensor | None:
        # The bias is added once (rank 0) so that the all_reduce sums it exactly once.
        return self.bias if self.tp_rank == 0 else None

    def _reduce(self, y: torch.Tensor) -> torch.Tensor:
        # The size this layer was built for, not the process group's: a tp=1 model (the TTS LM) may share a
        # process with a sharded one (the Chat LM), and must not wait on ranks that never run it.
        return all_reduce(y) if self.tp_size > 1 else y
