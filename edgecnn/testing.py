"""pytest helpers: gate a project's exported models on accuracy parity with the trained Keras model.

In your tests (see examples/test_parity.py for a ready file to copy)::

    from edgecnn.testing import assert_parity

    def test_int8_keeps_accuracy():
        assert_parity("runs/digits", max_acc_drop=0.5, min_agreement=0.98, backends=("tflite", "onnxruntime"))

Parity runs with timing off (accuracy and agreement only), so it is quick enough for every CI run. The
same gates are on the command line: `edgecnn bench RUN --no-timing --max-acc-drop 0.5`.
"""
from __future__ import annotations

from typing import Optional, Sequence

__all__ = ["assert_parity", "parity_rows", "parity_failures"]


def parity_rows(run_dir, *, backends: Sequence[str] = ("tflite", "onnxruntime"), artifacts: Sequence[str] = (),
                limit: Optional[int] = None, max_acc_drop: Optional[float] = None,
                min_agreement: Optional[float] = None, max_abs_diff: Optional[float] = None, **options):
    """Run the exported artifacts of `run_dir` on `backends` without timing; returns the `BenchResult`.

    Extra keyword arguments are `BenchConfig` fields (threads, providers, xnnpack, delegate, ...).
    """
    from edgecnn.bench import BenchConfig, bench

    options.setdefault("write", False)
    cfg = BenchConfig(backends=tuple(backends), artifacts=tuple(artifacts), limit=limit, timing=False,
                      max_acc_drop=max_acc_drop, min_agreement=min_agreement, max_abs_diff=max_abs_diff, **options)
    return bench(run_dir, config=cfg)


def parity_failures(result, backends: Sequence[str] = ()) -> list:
    """Lines describing what breaks parity: broken gates, failed rows, backends where nothing ran, and a
    reference that predicts one class for every image (agreement with it checks nothing)."""
    lines = [str(v) for v in result.violations] + list(result.warnings)
    lines += [f"{r.artifact} on {r.backend} failed: {r.reason}" for r in result.rows if r.status == "failed"]
    for b in backends:
        rows = [r for r in result.rows if r.backend == b and r.artifact != "keras"]
        if rows and not any(r.status == "ok" for r in rows):
            lines.append(f"nothing ran on {b}: " + "; ".join(f"{r.artifact} {r.status} ({r.reason})" for r in rows))
        elif not rows:
            lines.append(f"no artifact of this run runs on {b}")
    return lines


def assert_parity(run_dir, *, max_acc_drop: Optional[float] = 0.5, min_agreement: Optional[float] = None,
                  max_abs_diff: Optional[float] = None, backends: Sequence[str] = ("tflite", "onnxruntime"),
                  artifacts: Sequence[str] = (), limit: Optional[int] = None, **options):
    """Fail (AssertionError) unless every artifact of `run_dir` on `backends` keeps parity with the
    Keras reference: accuracy drop <= `max_acc_drop` points, top-1 agreement >= `min_agreement`
    (fraction), max abs probability difference <= `max_abs_diff`. A failed row, a backend on which
    no artifact ran (a skipped accelerator, say), or a reference stuck on one class fails too: a parity test that
    checked nothing must not pass. `max_class_drop=POINTS` (among the BenchConfig `options`) also gates the
    largest fall of one class's recall.

    Returns:
        The `BenchResult`, for further checks.
    """
    result = parity_rows(run_dir, backends=backends, artifacts=artifacts, limit=limit, max_acc_drop=max_acc_drop,
                         min_agreement=min_agreement, max_abs_diff=max_abs_diff, **options)
    problems = parity_failures(result, backends)
    if problems:
        raise AssertionError("parity with the Keras reference broken:\n  " + "\n  ".join(problems))
    return result
