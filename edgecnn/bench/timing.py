"""Timing like the tools people trust.

The loop follows TFLite's `benchmark_model` (warm-up bounded by a count and a minimum time, then timed
runs bounded by a count, a minimum time and a maximum time) and times each run exactly as LiteRT's
`tools/benchmark_litert_model.py` does: `time.perf_counter()` around one call, nothing else inside.
"""
from __future__ import annotations

from typing import Callable

from edgecnn.script.edgecnn_infer import latency_stats, time_runs  # one loop, here and on a board

__all__ = ["time_runs", "timed_stats", "latency_stats"]


def timed_stats(fn: Callable[[], object], cfg) -> dict:
    """`latency_stats` of `time_runs(fn)` with the plan of a `BenchConfig`."""
    return latency_stats(time_runs(fn, warmup_runs=cfg.warmup_runs, warmup_min_s=cfg.warmup_min_s, runs=cfg.runs,
                                   min_s=cfg.min_s, max_s=cfg.max_s))
