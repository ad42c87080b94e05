"""Where a benchmark's time goes: device time by kernel (CUPTI sees the kernels inside CUDA graph replays), or self
CPU time by op on the CPU, as rows for the JSON."""
from __future__ import annotations

from torch.profiler import ProfilerActivity, profile


def profiler(cuda: bool) -> profile:
    return profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU])


def kernel_table(prof: profile, cuda: bool, per: int, top: int = 25) -> list[dict]:
    """The `top` kernels (ops) by time, each per one of `per` units (steps, rounds) and as a share of all."""
    def us(e) -> float:  # type: ignore[no-untyped-def]
        return e.device_time_total if cuda else e.self_cpu_time_total

    events = sorted((e for e in prof.key_averages() if us(e) > 0), key=us, reverse=True)
    total = sum(us(e) for e in events)
    return [{"kernel": e.key[:120], "us_per_step": us(e) / per, "calls_per_step": e.count / per,
             "share": us(e) / total} for e in events[:top]]


def busy_us(prof: profile, cuda: bool) -> float:
    """All kernel (op) time seen, summed: against the wall time, how busy the device was (kernels on several
    streams may overlap, so it can exceed the wall time)."""
    return sum(e.device_time_total if cuda else e.self_cpu_time_total for e in prof.key_averages())
