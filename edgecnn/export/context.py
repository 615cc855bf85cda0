"""What every exporter receives (`ExportContext`) and returns (`Built`): the loaded run, its data, the
calibration images, the Keras reference outputs and a staging folder; artifacts are built once and cached,
so one exporter can start from another's output (int8 ONNX from the int8 TFLite, say)."""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np


@dataclass
class Built:
    """An artifact in the staging folder, not yet verified or written to its final place."""

    path: Path
    quant: Optional[str] = None  # "ptq", "qat" or None (float)
    info: dict = field(default_factory=dict)  # exporter-specific facts for the manifest (method, candidates, ...)


@dataclass
class ExportContext:
    """The state one export shares between its exporters."""

    config: Any  # ExportConfig
    run: Any  # edgecnn.rundir.Run
    model: Any  # the Keras 3 model
    spec: Any  # ModelSpec
    ds: Any  # Dataset (preprocessed splits)
    calib: np.ndarray  # calibration images, float32 NHWC
    reference: np.ndarray  # Keras probabilities on the test split
    staging: Path  # temporary folder next to the final artifacts
    builders: dict  # artifact name -> exporter function (the FORMATS registry)
    warnings: list = field(default_factory=list)
    _built: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict)

    def artifact(self, name: str) -> Built:
        """The staged artifact `name`, built on first use."""
        if name not in self._built:
            self._built[name] = self.builders[name](self)
        return self._built[name]

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """A value computed once per export (a SavedModel folder, a conversion)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hide converter chatter (prints, Python warnings and native log lines) from the user's terminal."""
    from edgecnn.native import native_stderr

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), native_stderr():
        warnings.simplefilter("ignore")
        yield
