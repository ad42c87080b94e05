"""Generic weight loading: checkpoint tensors (HF names) -> each Parameter's weight_loader.

Safetensors files are memory-mapped and read one tensor at a time straight into the parameters, which were
allocated on the target device and dtype; the only extra copy alive at once is one tensor in flight.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from tqdm import tqdm

from lm_engine.layers.tp import tp_size

if TYPE_CHECKING:
    from lm_engine.models.decoder import DecoderForCausalLM

INDEX_NAME = "model.safetensors.index.json"
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointError(RuntimeError):
    """Missing files or tensors, or a tensor this model has no parameter for."""


def safetensors_files(path: Path) -> list[Path]:
    """The checkpoint's .safetensors files: from the index when sharded, else every *.safetensors file."""
    path = Path(path)
    index = path / INDEX_NAME
    if index.exists():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        files = [path / f for f in sorted(set(weight_map.values()))]
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no .safetensors files in {path}")
    for f in files:
        if not f.exists():
            raise CheckpointError(f"{f} is named in {INDEX_NAME} but missing")
    return files


@contextlib.contextmanager
def _reading(f: Path) -> Iterator[Any]:
    """safe_open(f), memory-mapped; a file it cannot read (a download cut short, another format) named in the
    error: safetensors' own message does not say which of a checkpoint's shards it was."""
    try:
        with safe_open(str(f), framework="pt", device="cpu") as h:
            yield h
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read {f} ({exc}): a download cut short? Its size is {_size(f)}") from exc


def _size(f: Path) -> str:
    try:
        return f"{f.stat().st_size:,} bytes"
    except OSError:
        return "unknown"


def iter_safetensors(path: Path, progress: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    files = safetensors_files(path)
    total = 0
    for f in files:
        with _reading(f) as h:
            total += len(list(h.keys()))
    bar = tqdm(total=total, desc=f"loading {Path(path).name}", unit="tensor", disable=not progress)
    for f in files:
        with _reading(f) as h:
            for name in h.keys():
                yield name, h.get_tensor(name)
                bar.update(1)
    bar.close()


def load_weights(model: DecoderForCausalLM, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Feeds (hf_name, tensor) pairs to the parameters; raises CheckpointError on unknown or missing names."""
    params = dict(model.named_parameters(remove_duplicate=False))
    packed = model.packed_modules_mapping
    tied = model.config.tie_word_embeddings
    loaded: set[str] = set()
    for name, tensor in tensors:
        if name.endswith(_IGNORED_SUFFIXES) or (tied and name == "lm_head.weight"):
            continue
        for src, (dst, shard) in packed.items():
            if f".{src}." in name:
                pname = name.replace(f".{src}.", f".{dst}.")
                param = _lookup(params, pname, name)
                _, rows = param.weight_loader.__self__.shard(shard)  # type: ignore[attr-defined]
                _check_shape(name, tensor, (rows, *param.shape[1:]))
                param.weight_loader(param, tensor.to(param.device), shard)  # type: ignore[attr-defined]
                loaded.add(f"{pname}:{shard}")
                break
        else:
            param = _lookup(params, name, name)
            _check_shape(name, tensor, tuple(param.shape))
            param.weight_loader(param, tensor.to(param.device))  # type: ignore[attr-defined]
            loaded.add(name)
    expected = _expected_names(params, packed, tied)
    missing = sorted(expected - loaded)
    if missing:
        names = sorted({_checkpoint_name(n, packed) for n in missing})
        raise CheckpointError(f"checkpoint lacks {len(names)} tensors, e.g. {names[:4]}: is one of its "
                              ".safetensors files missing?")


def _check_shape(name: str, tensor: torch.Tensor, local: tuple[int, ...]) -> None:
    """A tensor of its parameter's (or fused parameter part's) shape on this rank, or of that share times the ranks
    on one dimension. The loaders take their share with narrow(), which reads a larger tensor without a word: a
    config.json at odds with its weights (an edited vocab_size or head count, another model's config) would load
    part of them and fail at the first request, or answer nonsense."""
    full = tuple(tensor.shape)
    tp = tp_size()
    differ = [d for d, (f, n) in enumerate(zip(full, local)) if f != n]
    if len(full) != len(local) or len(differ) > 1 or any(full[d] != local[d] * tp for d in differ):
        want = [n * tp if d in differ else n for d, n in enumerate(local)]
        raise CheckpointError(f"checkpoint tensor {name!r} is {list(full)}, but config.json makes it {want}: is "
                              "config.json the one that came with these weights?")


def _checkpoint_name(expected: str, packed: dict[str, tuple[str, str | int]]) -> str:
    """An expected name as the checkpoint spells it: 'x.qkv_proj.weight:q' -> 'x.q_proj.weight'."""
    name, _, shard = expected.rpartition(":")
    if not name:
        return expected
    for src, (dst, s) in packed.items():
        if str(s) == shard and f".{dst}." in name:
            return name.replace(f".{dst}.", f".{src}.")
    return expected


def _lookup(params: dict[str, nn.Parameter], pname: str, ckpt_name: str) -> nn.Parameter:
    param = params.get(pname)
    if param is None:
        raise CheckpointError(f"checkpoint tensor {ckpt_name!r} has no parameter in this model")
    return param


def _expected_names(params: dict[str, nn.Parameter], packed: dict[str, tuple[str, str | int]],
                    tied: bool) -> set[str]:
    shards: dict[str, list[str | int]] = {}
    for _src, (dst, shard) in packed.items():
        shards.setdefault(dst, []).append(shard)
    out: set[str] = set()
    for name in params:
        if tied and name == "lm_head.weight":
            continue
        frag = next((d for d in shards if f".{d}." in name), None)
        if frag is None:
            out.add(name)
        else:
            out.update(f"{name}:{s}" for s in shards[frag])
    return out
