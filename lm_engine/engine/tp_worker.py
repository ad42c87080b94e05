"""Tensor parallelism driver: rank 0 broadcasts each command, ranks > 0 follow in a loop.

Commands travel on a gloo group as (Command, payload) pickles; the tensors of the forward itself use the default
group (gloo on CPU, NCCL on GPU) inside the parallel layers.
"""
from __future__ import annotations

import enum
import os
from typing import Any

import torch
import torch.distributed as dist

from lm_engine.engine.model_runner import ModelRunner
from lm_engine.engine.scheduler import StepInput


class Command(enum.Enum):
    RUN = "run"
    EXIT = "exit"


def init_distributed(tp: int, device: torch.device, master_port: int) -> int:
    """Initialises torch.distributed for tp ranks (torchrun sets RANK/WORLD_SIZE); returns this rank."""
    if dist.is_initialized():
        return dist.get_rank()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != tp:
        raise RuntimeError(f"tp={tp} needs {tp} processes: launch with `torchrun --nproc-per-node {tp} ...` "
                           f"(WORLD_SIZE is {world})")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(master_port))
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=tp)
    return rank


class TPDriver:
    """Rank 0's view of the runners: run() first tells the followers to run the same step."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.group = dist.new_group(backend="gloo")

    def run(self, step: StepInput) -> torch.Tensor:
        dist.broadcast_object_list([Command.RUN, step], src=0, group=self.group)
        return self.runner.run(step)

    def shutdown(self) -> None:
        dist.broadcast_object_list([Command.EXIT, None], src=0, group=self.group)
        _leave()


def _leave() -> None:
    """Tear the process groups down before the process exits: left to interpreter shutdown, gloo's worker threads
    can be destroyed while still joinable, and the process aborts (std::terminate) instead of exiting 0."""
    if dist.is_initialized():
        dist.destroy_process_group()


def follow(runner: ModelRunner) -> None:
    """Ranks > 0: runs rank 0's steps until it sends EXIT."""
    group = dist.new_group(backend="gloo")
    while True:
        msg: list[Any] = [None, None]
        dist.broadcast_object_list(msg, src=0, group=group)
        if msg[0] is Command.EXIT:
            _leave()
            return
        with runner.on_stream():
            runner.run(msg[1])
