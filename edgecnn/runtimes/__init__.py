"""Runtimes: the one place that opens a model and runs it. One module per runtime, one registry line each.

Every caller (export verification, bench, predict, inspect) gets the same `Session`: tensor records with
quantization, `predict(batch)` on float images in [0, 1], `runner(x)` (the timed-invoke hook) and `close()`.
Each runtime imports its library only when a session opens, so listing them costs nothing.

Python::

    from edgecnn.runtimes import RuntimeOptions, open_session
    sess = open_session("tflite", "runs/d/export/model_int8.tflite", RuntimeOptions(threads=2))
    probs = sess.predict(x)
    sess.close()

To add a runtime, write a module with a `Session` subclass and its `RUNTIME` spec, and add one line below
(README, "Add a backend").
"""
from __future__ import annotations

from pathlib import Path

from edgecnn.errors import ConfigError
from edgecnn.runtimes import ethos_u, keras, litert, onnxruntime, openvino, tflite, tflm
from edgecnn.runtimes.base import Runtime, RuntimeOptions, Session, Unavailable

RUNTIMES: dict = {r.name: r for r in (
    keras.RUNTIME,
    tflite.RUNTIME,
    *litert.RUNTIMES,
    onnxruntime.RUNTIME,
    tflm.RUNTIME,
    ethos_u.RUNTIME,
    openvino.RUNTIME,
)}
FORMATS = {".keras": "keras", ".tflite": "tflite", ".onnx": "onnx"}
DEFAULT = {"keras": "keras", "tflite": "tflite", "onnx": "onnxruntime"}  # the runtime that verifies each format


def get_runtimes(names) -> list:
    """Runtimes by name, in registry order (all of them for an empty selection).

    Raises:
        ConfigError: an unknown name.
    """
    names = [n.strip() for n in names if n and n.strip()]
    unknown = [n for n in names if n not in RUNTIMES]
    if unknown:
        raise ConfigError(f"unknown backend {', '.join(repr(n) for n in unknown)} (choose {', '.join(RUNTIMES)})")
    return [r for name, r in RUNTIMES.items() if not names or name in names]


def format_of(path) -> str:
    """Artifact format from the file suffix.

    Raises:
        ConfigError: a suffix edgecnn does not run.
    """
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"{path}: unknown model format (expected {', '.join(FORMATS)})")
    return fmt


def open_session(name: str, path, opts=None, variant: str = "") -> Session:
    """Open `path` on the runtime `name` ("default" picks the format's own runtime).

    Raises:
        ConfigError: unknown runtime or format. Unavailable: the runtime cannot run here.
        ModelError: the file is not a model this runtime reads.
    """
    if name == "default":
        name = DEFAULT[format_of(path)]
    return get_runtimes([name])[0].load(path, opts, variant)[0]


__all__ = ["DEFAULT", "FORMATS", "RUNTIMES", "Runtime", "RuntimeOptions", "Session", "Unavailable", "format_of",
           "get_runtimes", "open_session"]
