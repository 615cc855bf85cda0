"""The export stage's side of the manifest: tool versions and assembling the `Manifest` of one export. The
schema, reader, validator and writer are the contracts' (`edgecnn.contracts.manifest`).

Python::

    from edgecnn.contracts.manifest import read_manifest
    m = read_manifest("runs/d/export")
    m.artifacts["tflite_int8"].inputs[0]["quantization"]   # {"scale": ..., "zero_point": ...}
"""
from __future__ import annotations

import datetime as _dt
from importlib import metadata
from pathlib import Path

from edgecnn import __version__
from edgecnn.contracts.manifest import FILENAME, SCHEMA, Manifest, Preprocessing, read_manifest  # noqa: F401

# manifest key -> distribution name
VERSIONED = {"edgecnn": None, "tensorflow": "tensorflow", "keras": "keras", "tf2onnx": "tf2onnx", "onnx": "onnx",
             "onnxruntime": "onnxruntime", "ai_edge_litert": "ai-edge-litert"}
QAT_VERSIONED = {"tf_keras": "tf-keras", "tensorflow_model_optimization": "tensorflow-model-optimization"}


def _version(dist: str | None) -> str | None:
    if dist is None:
        return __version__
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions(qat: bool = False) -> dict:
    """Installed versions of the tools that made (and checked) the artifacts."""
    table = {**VERSIONED, **(QAT_VERSIONED if qat else {})}
    return {key: _version(dist) for key, dist in table.items()}


def build_manifest(*, run, arch: str, model_sha256: str, reference: dict, artifacts: dict, qat: bool,
                   warnings=()) -> Manifest:
    """The whole manifest for one export (`artifacts`: name -> ArtifactEntry; `warnings`: what export warned)."""
    return Manifest(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        edgecnn_version=__version__,
        source_run={"path": str(Path(run.path).resolve()), "model_sha256": model_sha256, "arch": arch},
        class_names=tuple(str(c) for c in run.class_names),
        preprocessing=Preprocessing.from_dict(run.preprocessing),
        reference=reference,
        versions=versions(qat),
        artifacts=artifacts,
        warnings=tuple(warnings),
    )
