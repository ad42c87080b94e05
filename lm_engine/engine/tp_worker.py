"""Tensor parallelism driver: rank 0 broadcasts each command, ranks > 0 follow in a loop.

Commands travel on a gloo group as (Command, payload) pickles; the tensors of the forward itself use the default
group (gloo on CPU, NCCL on GPU) inside the parallel layers.

Timeouts: a step's collectives wait at most EngineConfig.tp_step_timeout_s for the other ranks; a follower waits for
rank 0's next command without limit (a server may sit idle for hours between replies). A step that fails on rank 0,
by that timeout or a rank gone, leaves the ranks out of step for good: every later step is refused (EngineDown).
"""
from __future__ import annotations

import enum
import logging
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from lm_engine.engine.llm_engine import EngineDown
from lm_engine.engine.model_runner import ModelRunner
from lm_engine.engine.scheduler import StepInput

logger = logging.getLogger(__name__)

# A follower's wait for the next command: unbounded in effect (gloo's default, 30 min, ended an idle server).
WAIT_FOR_COMMANDS = timedelta(days=365)


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


def _bound_steps(step_timeout_s: float) -> None:
    """The forward's collectives (default group) wait at most step_timeout_s from now on. Set once every rank has
    loaded: the loads may end minutes apart, under the default timeout.

    Under gloo a late collective raises, and TPDriver turns that into EngineDown. Under NCCL (torch's c10d
    sources) an eager step's collective that outlives the timeout is caught by the watchdog, which by default
    (TORCH_NCCL_ASYNC_ERROR_HANDLING=3) tears the process down after step_timeout_s rather than NCCL's default 10 min;
    collectives replayed from a CUDA graph (decode steps) are never handed to the watchdog, so this bounds them
    not at all: rank 0 waits for a hung rank for good (README, on torchrun)."""
    world = dist.group.WORLD
    if world is None:
        raise RuntimeError("no default process group: init_distributed comes first")
    world.set_timeout(timedelta(seconds=step_timeout_s))


class TPDriver:
    """Rank 0's view of the runners: run() first tells the followers to run the same step."""

    def __init__(self, runner: ModelRunner, step_timeout_s: float) -> None:
        self.runner = runner
        self.step_timeout_s = step_timeout_s
        self.group = dist.new_group(backend="gloo", timeout=timedelta(seconds=step_timeout_s))
        _bound_steps(step_timeout_s)
        self.down: str | None = None  # why no step can run any more

    def run(self, step: StepInput) -> torch.Tensor:
        if self.down is not None:
            raise EngineDown(self.down)
        try:
            dist.broadcast_object_list([Command.RUN, step], src=0, group=self.group)
            return self.runner.run(step)
        except Exception as exc:
            # Some rank may still wait inside this step's collectives: no later step would pair up with it.
            self.down = f"a tensor-parallel step failed (a rank hung for {self.step_timeout_s:g} s or exited)"
            logger.error("tensor-parallel step failed, refusing every later step: %s: %s", type(exc).__name__, exc)
            raise EngineDown(self.down) from exc

    def shutdown(self) -> None:
        try:
            if self.down is None:  # else no follower waits for a command: a hung one would hold the stop up
                dist.broadcast_object_list([Command.EXIT, None], src=0, group=self.group)
        finally:
            _leave()


def _leave() -> None:
    """Tear the process groups down before the process exits: left to interpreter shutdown, gloo's worker threads
    can be destroyed while still joinable, and the process aborts (std::terminate) instead of exiting 0."""
    if dist.is_initialized():
        dist.destroy_process_group()


def follow(runner: ModelRunner, step_timeout_s: float) -> None:
    """Ranks > 0: runs rank 0's steps until it sends EXIT, or until a step fails here (this rank hung past the step
    timeout and resumed, or rank 0 went away): rank 0 has then refused every step since (EngineDown), and this rank
    leaves without a traceback and with status 0, so that torchrun does not stop rank 0, which goes on answering
    /healthz with chat_lm_down until the server is restarted."""
    group = dist.new_group(backend="gloo", timeout=WAIT_FOR_COMMANDS)
    _bound_steps(step_timeout_s)
    try:
        while True:
            msg: list[Any] = [None, None]
            dist.broadcast_object_list(msg, src=0, group=group)
            if msg[0] is Command.EXIT:
                break
            with runner.on_stream():
                runner.run(msg[1])
    except Exception as exc:  # noqa: BLE001 - any failure of a collective: this rank is out of step for good
        first_line = next(iter(str(exc).splitlines()), "")
        logger.error("rank %d: left tensor parallelism after a failed step (%s: %s)", dist.get_rank(),
                     type(exc).__name__, first_line)
    _leave()
