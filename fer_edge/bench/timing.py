"""Latency at batch 1: warm-up, then a time-bounded series of timed calls, summarised by percentiles."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from fer_edge.bench.settings import default

# Fewer timed runs than this make p99 meaningless; a slow model still gets this many even past the budget.
MIN_RUNS = 20


@dataclass
class Latency:
    n_runs: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    fps: float                  # 1000 / p50: what a single-stream loop sustains at the median
    stopped_by: str             # "runs" (reached the asked number) or "time" (hit the time budget)

    def as_dict(self) -> dict:
        return asdict(self)


def summarise(samples_s: list[float] | np.ndarray, stopped_by: str = "runs") -> Latency:
    ms = np.asarray(samples_s, np.float64) * 1000.0
    if ms.size == 0:
        raise ValueError("no latency samples to summarise")
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return Latency(
        n_runs=int(ms.size), p50_ms=float(p50), p95_ms=float(p95), p99_ms=float(p99),
        mean_ms=float(ms.mean()), min_ms=float(ms.min()), max_ms=float(ms.max()), std_ms=float(ms.std()),
        fps=float(1000.0 / p50) if p50 > 0 else float("inf"), stopped_by=stopped_by,
    )


def measure(call: Callable[[], object], warmup: int = default("warmup"), runs: int = default("runs"),
            max_seconds: float = default("max_seconds")) -> Latency:
    """Time `call()` after `warmup` untimed calls.

    Stops after `runs` timed calls or once `max_seconds` of timed calls have passed, whichever
    comes first - but never before MIN_RUNS calls (or `runs`, if smaller), so a 100 ms Keras
    call still yields usable percentiles.
    """
    for _ in range(max(0, warmup)):
        call()
    floor = min(MIN_RUNS, max(1, runs))
    samples: list[float] = []
    clock = time.perf_counter
    start = clock()
    stopped_by = "runs"
    while len(samples) < runs:
        t0 = clock()
        call()
        t1 = clock()
        samples.append(t1 - t0)
        if t1 - start >= max_seconds and len(samples) >= floor:
            stopped_by = "time" if len(samples) < runs else "runs"
            break
    return summarise(samples, stopped_by)
