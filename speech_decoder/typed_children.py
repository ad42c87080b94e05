"""Typed reads of a container's children.

torch types `seq[i]` of an nn.Sequential / nn.ModuleList as a bare Module, so a forward pass that reads a Conv1d's
weight from `self.block[0]` is unchecked by mypy. The containers stay as they are (their indices are the checkpoint's
key names, e.g. `block.0.weight`); what is read from them is checked here instead, once per read."""

from __future__ import annotations

from typing import TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)


def child(container: nn.Sequential | nn.ModuleList, index: int, kind: type[M]) -> M:
    """container[index], which must be a `kind`."""
    module = container[index]
    if not isinstance(module, kind):
        raise TypeError(f"{type(container).__name__}[{index}] is a {type(module).__name__}, not a {kind.__name__}")
    return module
