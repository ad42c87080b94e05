"""Flow windows of many sessions run together.

Every StreamingDecoder window is one flow call: the conformer over prompt + window tokens, then 10 Euler steps of
the U-Net estimator (a CFG-doubled batch). At batch 1 a GPU runs these small kernels far below its capacity, so the
number of real-time streams is bound by how many windows run one after another. Windows of the same shape (prompt
length, prompt frames, window tokens and frames) stack into one batch exactly: no padding, so every row computes what
it would alone (the flow normalises over the whole sequence, which padding would change). Sessions speaking with
one voice at the same hop size, the common case on a busy server, share a shape.

`run_flow_jobs` is the pure part (jobs in, mels out); `FlowBatcher` is a thread that runs whatever jobs the
decoder threads queued meanwhile, as few batched calls as their shapes allow.
"""
from __future__ import annotations

import concurrent.futures
import queue
import threading
from dataclasses import dataclass

import torch

from speech_decoder.cosyvoice_model import CosyVoiceModel, SpeakerPrompt
from speech_decoder.flow.flow import window_noise


@dataclass(frozen=True, slots=True, eq=False)
class FlowJob:
    """One window of one session: flow over `tokens` with the voice `prompt` -> mel [80, mel_len2]."""

    model: CosyVoiceModel
    tokens: torch.Tensor  # [N] int64 flow ids
    prompt: SpeakerPrompt
    mel_len2: int
    seed: int
    first_frame: int  # absolute mel frame of the window's first target frame (indexes the CFM noise)

    def shape_key(self) -> tuple[int, int, int, int, int]:
        return (id(self.model), self.tokens.numel(), self.prompt.tokens.numel(), self.prompt.mel.size(0),
                self.mel_len2)


def run_flow_jobs(jobs: list[FlowJob]) -> list[torch.Tensor]:
    """Mel [80, mel_len2] float32 per job, in order; jobs of one shape run as one batch."""
    out: list[torch.Tensor | None] = [None] * len(jobs)
    for rows in _by_shape(jobs):
        for i, mel in zip(rows, _run_group([jobs[i] for i in rows])):
            out[i] = mel
    return out  # type: ignore[return-value]


def _by_shape(jobs: list[FlowJob]) -> list[list[int]]:
    """Indices of the jobs, grouped by shape, in order of first appearance."""
    groups: dict[tuple[int, int, int, int, int], list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(job.shape_key(), []).append(i)
    return list(groups.values())


@torch.inference_mode()
def _run_group(jobs: list[FlowJob]) -> list[torch.Tensor]:
    model = jobs[0].model
    dev, dt = model.device, model.flow.input_embedding.weight.dtype
    n_mels, mel_len1 = model.cfg.flow.output_size, jobs[0].prompt.mel.size(0)
    with model.on_stream():  # the mels are used on it too, by the decoder threads
        noise = torch.cat([window_noise(j.seed, mel_len1, j.first_frame, j.mel_len2, n_mels, dev) for j in jobs])
        infer = model.flow_graphs or model.flow.inference
        mel = infer(
            torch.stack([j.tokens for j in jobs]).to(dev),
            torch.stack([j.prompt.tokens for j in jobs]).to(dev),
            torch.stack([j.prompt.mel for j in jobs]).to(dev, dt),
            torch.stack([j.prompt.embedding for j in jobs]).to(dev),
            noise=noise, mel_len2=jobs[0].mel_len2)
        return list(mel.float().unbind(0))


class FlowBatcher:
    """Decoder threads call `run(job)` and block; one worker runs every job queued meanwhile in shape batches.

    No job waits for company: the worker takes what is queued when it becomes free, so a lone session runs at once
    and a busy server batches the windows that arrived during the previous batch.
    """

    def __init__(self, max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self.jobs_run = 0
        self.batches_run = 0  # flow calls: jobs_run / batches_run is the mean batch size
        self._queue: queue.SimpleQueue[tuple[FlowJob, concurrent.futures.Future[torch.Tensor]] | None] = (
            queue.SimpleQueue())
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="flow-batcher", daemon=True)
        self._worker.start()

    def run(self, job: FlowJob) -> torch.Tensor:
        """The job's mel [80, mel_len2] float32 (blocking; raises what the flow raised)."""
        if self._closed:
            raise RuntimeError("FlowBatcher is closed")
        future: concurrent.futures.Future[torch.Tensor] = concurrent.futures.Future()
        self._queue.put((job, future))
        return future.result()

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            batch = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run(batch)
            if stop:
                break
        while True:  # closed: fail whatever is still queued
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1].set_exception(RuntimeError("FlowBatcher is closed"))

    def _run(self, batch: list[tuple[FlowJob, concurrent.futures.Future[torch.Tensor]]]) -> None:
        jobs = [job for job, _ in batch]
        for rows in _by_shape(jobs):
            try:
                mels = _run_group([jobs[i] for i in rows])
            except BaseException as exc:  # a worker-thread root: the callers get the error, the worker goes on
                for i in rows:
                    batch[i][1].set_exception(exc)
                continue
            self.jobs_run += len(rows)
            self.batches_run += 1
            for i, mel in zip(rows, mels):
                batch[i][1].set_result(mel)
