"""Timing on a shared machine: the interleaved timer ``optimize_for_inference`` chooses with.

The benchmark harness (``benchmarks/``) and ``fcnseg bench`` use the same timer.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["Timer", "time_interleaved"]


class Timer:
    """Wall-clock timing on CPU, CUDA events on GPU (milliseconds)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def time(self, fn: Callable[[], Any], warmup: int, repeat: int) -> list[float]:
        for _ in range(warmup):
            fn()
        self._sync()
        times = []
        for _ in range(repeat):
            if self.cuda:
                start, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return times

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def time_interleaved(
    cases: dict[str, Callable[[], Any]],
    rounds: int = 5,
    warmup: int = 1,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, float]]:
    """Time several callables in alternation (round robin, ``rounds`` timed calls each).

    On a shared machine the load changes during a run; interleaving spreads it evenly over
    the cases so their *ratios* stay meaningful. Returns ``{name: {"ms": median, "ms_min": min}}``.
    """
    timer = Timer(torch.device(device))
    for fn in cases.values():
        timer.time(fn, warmup, 0)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            times[name] += timer.time(fn, 0, 1)
    return {n: {"ms": statistics.median(t), "ms_min": min(t)} for n, t in times.items()}
