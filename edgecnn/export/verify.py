"""Self-checks: load an artifact in its own runtime (the tflite runtime for .tflite, onnxruntime for .onnx),
run it on the test split and compare with the Keras model: names, then shapes, then values.

Python::

    from edgecnn.export.verify import verify
    figures, inputs, outputs = verify("runs/d/export/model_int8.tflite", x, y, reference_probs,
                                      input_shape=(8, 8, 1), num_classes=10, tolerance=None)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecnn.contracts.parity import parity
from edgecnn.data.split import map_chunks
from edgecnn.errors import MissingDependencyError, ModelError, ParityError, ShapeError
from edgecnn.runtimes import DEFAULT, RuntimeOptions, Unavailable, format_of, open_session
from edgecnn.runtimes.base import KERNELS
from edgecnn.script.edgecnn_infer import predictions_digest

INPUT_NAME, OUTPUT_NAME = "image", "probs"  # the names every artifact exposes (models name them so)


def open_runner(path, num_threads: int | None = None, kernels: str = "xnnpack", graph_optimization: str = "all"):
    """A session on the runtime that verifies `path`'s format (a .tflite on `kernels`, XNNPACK by default; an .onnx
    at onnxruntime's `graph_optimization` level, "all" by default: "basic" keeps an int8 model's Q/DQ pairs apart,
    so it runs as the ONNX operators define it, in float, without onnxruntime's fused int8 kernels).

    Raises:
        ModelError: unknown suffix, missing file, or a file the runtime cannot read.
        MissingDependencyError: the runtime is not installed.
    """
    path = Path(path)
    if path.suffix not in (".tflite", ".onnx"):
        raise ModelError(f"{path}: cannot run '{path.suffix}' files (expected .tflite, .onnx)")
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    name = DEFAULT[format_of(path)]
    opts = RuntimeOptions.for_kernels(kernels, num_threads or 1) if name == "tflite" else \
        RuntimeOptions(threads=num_threads or 1, graph_optimization=graph_optimization)
    try:
        return open_session(name, path, opts)
    except Unavailable as e:
        raise MissingDependencyError({"tflite": "ai-edge-litert"}.get(name, name), f"verifying {path.name} ({e})") \
            from None


def check_io(runner, path, input_shape, num_classes: int) -> None:
    """Names, then shapes: one input `image` (N, h, w, c), one output `probs` (N, classes).

    Raises:
        ShapeError: a name or shape differs from the Keras model's.
    """
    if len(runner.inputs) != 1 or len(runner.outputs) != 1:
        raise ShapeError(f"{path}: expected 1 input and 1 output, found {len(runner.inputs)} and {len(runner.outputs)}")
    i, o = runner.inputs[0], runner.outputs[0]
    if (i["name"], o["name"]) != (INPUT_NAME, OUTPUT_NAME):
        raise ShapeError(f"{path}: I/O named {i['name']!r} -> {o['name']!r}, expected {INPUT_NAME!r} -> {OUTPUT_NAME!r}")
    if i["shape"][1:] != list(input_shape) or o["shape"][1:] != [num_classes]:
        raise ShapeError(f"{path}: shapes {i['shape']} -> {o['shape']}, expected "
                         f"[N, {', '.join(map(str, input_shape))}] -> [N, {num_classes}]")


def verify(path, x: np.ndarray, y: np.ndarray, reference: np.ndarray, *, input_shape, num_classes: int,
           tolerance: float | None, kernels: str = "xnnpack") -> tuple[dict, list, list, str]:
    """Load `path` in its runtime, check its I/O, run it on (x, y) and compare with `reference` probabilities.

    Args:
        tolerance: max abs probability difference allowed (float artifacts); None records without failing.
    Returns:
        (parity figures as the manifest records them, input infos, output infos, "runtime (kernels)").
    Raises:
        ShapeError: I/O names or shapes differ. ParityError: a float artifact is off by more than `tolerance`.
    """
    runner = open_runner(path, kernels=kernels)
    try:
        check_io(runner, path, input_shape, num_classes)
        probs = map_chunks(runner.predict, x)  # a Split is run a chunk at a time
        used = f"{runner.runtime} ({runner.accelerator})" if runner.accelerator else runner.runtime
    finally:
        runner.close()
    if probs.shape != reference.shape:
        raise ShapeError(f"{path}: output {probs.shape} for {len(x)} images, expected {reference.shape}")
    p = parity(probs, reference, y)
    if tolerance is not None and not p.max_abs_diff <= tolerance:
        raise ParityError(f"{Path(path).name}: probabilities differ from the Keras model by {p.max_abs_diff:.3g} "
                          f"(tolerance {tolerance:g}; top-1 agreement {p.agreement:.4f})")
    return _record(p, probs), runner.inputs, runner.outputs, used


def _record(p, probs: np.ndarray) -> dict:
    """The manifest's parity record: the figures and the digest of the top-1 predictions."""
    return dict(p.to_manifest(), predictions_sha256=predictions_digest(probs.argmax(1)))


KERNEL_BUDGET_S = 120.0  # the reference kernels are slow: skipped when the test split would take longer


def kernel_parity(path, x, y: np.ndarray, reference: np.ndarray, budget_s: float = KERNEL_BUDGET_S,
                  skip: str = "xnnpack") -> dict:
    """An int8 .tflite's parity records on the CPU kernel sets `verify` did not run (`skip`, export's --kernels):
    of "xnnpack" (LiteRT's default delegate), "builtin" (XNNPACK off, the optimized kernels) and "reference"; and on
    TFLite Micro itself ("tflm", when tflite-micro is installed). They round int8 differently (on an int8 MobileNetV2:
    up to 125 and 85 output steps from the reference kernels, test agreement 0.975 / 0.981 / 0.975), so a device on
    other kernels needs its own figures to check against. TFLite Micro shares the reference kernels' arithmetic but
    for one op: it rounds a per-channel FULLY_CONNECTED's requantization twice where LiteRT 2.3's reference kernels
    round once (measured 2026-12-01 against both roundings in NumPy: 1 step apart at that op's output on 36 of 359
    digits test images, up to 4 steps apart at the model's output on 2).

    Returns:
        {kernels: parity record + "runtime"} for the other sets and "tflm"; one that is unavailable or would take
        longer than `budget_s` on `x` (timed on one image) is {"skipped": why}.
    """
    out = {}
    workers = _workers()
    for kernels in [k for k in KERNELS if k != skip] + ["tflm"]:
        try:
            runners = ([open_session("tflm", Path(path))] if kernels == "tflm" else  # one interpreter: it holds the GIL
                       [open_session("tflite", Path(path), RuntimeOptions.for_kernels(kernels)) for _ in range(workers)])
        except Unavailable as e:
            out[kernels] = {"skipped": str(e)}
            continue
        except ModelError as e:  # TFLite Micro lacks an op, or takes batch 1 only: the export stands without it
            if kernels != "tflm":
                raise
            out[kernels] = {"skipped": str(e)}
            continue
        try:
            estimate = _seconds_for(runners[0], x) / len(runners)
            if estimate > budget_s:
                out[kernels] = {"skipped": f"about {estimate:.0f} s for {len(x)} images on these kernels "
                                           f"(budget {budget_s:.0f} s)"}
                continue
            probs = map_chunks(lambda part: _spread(runners, part), x)
            used = f"{runners[0].runtime} ({runners[0].accelerator})"
        finally:
            for r in runners:
                r.close()
        out[kernels] = dict(_record(parity(probs, reference, y), probs), runtime=used)
    return out


def _seconds_for(runner, x) -> float:
    """About how long `runner` takes for all of `x`, one image timed after a first call that allocates."""
    import time

    runner.predict(np.asarray(x[:1]))
    t0 = time.perf_counter()
    runner.predict(np.asarray(x[:1]))
    return (time.perf_counter() - t0) * len(x)


def qdq_parity(path, x, y: np.ndarray, reference: np.ndarray, budget_s: float = KERNEL_BUDGET_S) -> dict:
    """An int8 .onnx's parity record with its Q/DQ pairs applied in float (onnxruntime at the "basic" graph
    optimization level): the file's own arithmetic, which any runtime's int8 kernels should reproduce to a rounding
    step. onnxruntime's fused kernels do not on every CPU: on x86-64 with AVX2 and no VNNI they add pairs of 8-bit
    products in 16 bits and saturate (an int8 MobileNetV2 from the int8 TFLite: test agreement with the float
    model 0.822 fused against 0.964 in float, measured 2026-12-01; under QEMU as an SSE4-only CPU the two agreed).

    Returns:
        {"qdq": parity record + "runtime"}, or {"qdq": {"skipped": why}} when it would take over `budget_s`.
    """
    runner = open_runner(path, graph_optimization="basic")
    try:
        estimate = _seconds_for(runner, x)
        if estimate > budget_s:
            return {"qdq": {"skipped": f"about {estimate:.0f} s for {len(x)} images (budget {budget_s:.0f} s)"}}
        probs = map_chunks(runner.predict, x)
        used = f"{runner.runtime} (graph optimization basic: Q/DQ in float)"
    finally:
        runner.close()
    return {"qdq": dict(_record(parity(probs, reference, y), probs), runtime=used)}


def _workers() -> int:
    """Interpreters run side by side on the slower kernel sets: one per CPU this process may use, at most 8.
    Each image's arithmetic is its own, so the figures are those of one interpreter; the reference kernels are
    single-threaded, and took 78 s alone on 480 224x224 images of an int8 MobileNetV2."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def _spread(runners: list, x: np.ndarray) -> np.ndarray:
    """`x`'s outputs, its images split among `runners` run in threads (LiteRT releases the GIL in invoke)."""
    from concurrent.futures import ThreadPoolExecutor

    pieces = [p for p in np.array_split(np.asarray(x), min(len(runners), max(len(x), 1))) if len(p)]
    if len(pieces) <= 1:
        return runners[0].predict(np.asarray(x))
    with ThreadPoolExecutor(len(pieces)) as pool:
        outs = list(pool.map(lambda rp: rp[0].predict(rp[1]), zip(runners, pieces)))
    return np.concatenate(outs)
