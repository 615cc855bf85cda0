"""What every backend provides: a `Backend` spec for the registry and the `Session` it opens."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edgecnn.device.edgecnn_infer import dequantize, quantize  # noqa: F401 (one implementation, re-exported)


class Unavailable(Exception):
    """This backend (or accelerator) cannot run on this machine; the row is skipped with this reason."""


@dataclass(frozen=True)
class Backend:
    """A runtime that runs artifacts of some formats; one row per artifact and accelerator variant."""

    name: str
    formats: tuple  # artifact formats it runs ("keras", "tflite", "onnx")
    open: Callable  # (path: Path, cfg: BenchConfig, variant: str) -> Session; raises Unavailable
    description: str = ""
    variants: Callable = lambda cfg: [""]  # accelerator variants to run (onnxruntime: one per provider)
    prepare: Optional[Callable] = None  # imports the runtime, so the first row's load time is not an import

    def load(self, path: Path, cfg, variant: str = ""):
        """Open `path`; returns (session, load_ms). Raises Unavailable when the runtime cannot run here."""
        import time

        if self.prepare is not None:
            try:
                self.prepare()
            except ImportError:
                pass  # open() raises Unavailable with the package to install
        t0 = time.perf_counter()
        sess = self.open(path, cfg, variant)
        return sess, sess.load_ms if sess.load_ms is not None else (time.perf_counter() - t0) * 1e3


class Session:
    """A loaded model on one backend. Inputs are float32 NHWC in [0, 1]; outputs are probabilities."""

    runtime: str = ""  # e.g. "ai_edge_litert 2.3.0"
    accelerator: str = ""  # what actually ran it: "xnnpack", "cpu", "CPUExecutionProvider", ...
    threads: Optional[int] = None  # threads actually configured
    includes_copies: bool = False  # whether runner()'s callable copies tensors in and out
    batch_ok: bool = True  # whether runner()/predict() accept batches larger than 1
    note: Optional[str] = None  # anything a reader of the row must know (fallbacks, partial acceleration)
    input_shape: tuple = ()  # (h, w, c) the model expects
    load_ms: Optional[float] = None  # set when the session times its own load (leaving one-time set-up out)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) for float32 images (N, h, w, c)."""
        raise NotImplementedError

    def runner(self, x: np.ndarray) -> Callable[[], object]:
        """Set `x` (a batch) as the input and return a zero-argument callable that runs one inference."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the runtime's resources."""


def hwc(shape) -> tuple:
    """A model input shape without its batch dimension, as ints (None for dynamic dims)."""
    return tuple(int(d) if isinstance(d, (int, np.integer)) and d >= 0 else None for d in list(shape)[1:])


def package_version(dist: str) -> str:
    """Installed version of a distribution, or '?'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def exists_or_fail(path: Path) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
