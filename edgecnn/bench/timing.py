"""Timing like the tools people trust.

The loop follows TFLite's `benchmark_model` (warm-up bounded by a count and a minimum time, then timed
runs bounded by a count, a minimum time and a maximum time) and times each run exactly as LiteRT's
`tools/benchmark_litert_model.py` does: `time.perf_counter()` around one call, nothing else inside.
"""
from __future__ import annotations

import time
from typing import Callable

from edgecnn.script.edgecnn_infer import latency_stats

__all__ = ["time_runs", "timed_stats", "latency_stats"]


def time_runs(fn: Callable[[], object], *, warmup_runs: int = 1, warmup_min_s: float = 0.5, runs: int = 50,
              min_s: float = 1.0, max_s: float = 30.0) -> list:
    """Call `fn` for warm-up, then time each call; returns the per-call seconds of the timed runs.

    Timed runs continue until both `runs` calls and `min_s` seconds are done, and stop at `max_s`
    seconds even when fewer than `runs` calls were made (at least one call is always timed).
    """
    clock = time.perf_counter
    start, n = clock(), 0
    while n < warmup_runs or clock() - start < warmup_min_s:
        fn()
        n += 1
        if clock() - start >= max_s:
            break
    times = []
    start = clock()
    while True:
        t0 = clock()
        fn()
        times.append(clock() - t0)
        elapsed = clock() - start
        if (len(times) >= runs and elapsed >= min_s) or elapsed >= max_s:
            return times


def timed_stats(fn: Callable[[], object], cfg) -> dict:
    """`latency_stats` of `time_runs(fn)` with the plan of a `BenchConfig`."""
    return latency_stats(time_runs(fn, warmup_runs=cfg.warmup_runs, warmup_min_s=cfg.warmup_min_s, runs=cfg.runs,
                                   min_s=cfg.min_s, max_s=cfg.max_s))
