"""Models for the benchmark scripts: an architecture from edgecnn.models, converted to fp32 and full-int8
TFLite, with a manifest beside them so `edgecnn bench --model FILE --data digits` can run them."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def tflite_pair(arch: str, input_shape: tuple, out: Path, *, params=None, train_epochs: int = 0, seed: int = 0) -> dict:
    """Build `arch` for `input_shape` (random init unless `train_epochs` on digits), write model_fp32.tflite,
    model_int8.tflite (calibrated on digits resized to the input) and manifest.json into `out`.

    Returns:
        {"fp32": path, "int8": path}
    """
    with quiet():
        import keras

        from edgecnn.contracts.manifest import ArtifactEntry, Manifest, Preprocessing, write_manifest
        from edgecnn.data import DataConfig, load_dataset
        from edgecnn.export.tflite import keras_to_tflite
        from edgecnn.models import ModelSpec, build, compile_model

        out.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(seed)
        h, w, c = input_shape
        ds = load_dataset(DataConfig(source="digits", image_size=(h, w), channels=c))
        spec = ModelSpec(arch, tuple(input_shape), 10, dict(params or {}))
        model = build(spec)
        if train_epochs:
            compile_model(model, spec)
            model.fit(ds.x_train, ds.y_train, epochs=train_epochs, batch_size=32, verbose=0)
        calib = ds.x_train[:100]

        paths = {}
        for prec in ("fp32", "int8"):
            paths[prec] = out / f"model_{prec}.tflite"
            paths[prec].write_bytes(keras_to_tflite(model, int8=prec == "int8", calib=calib))
        write_manifest(out, Manifest(
            class_names=tuple(ds.class_names), preprocessing=Preprocessing.from_dict(ds.preprocessing),
            artifacts={f"tflite_{p}": ArtifactEntry(file=f.name, format="tflite", precision=p)
                       for p, f in paths.items()}))
    return paths


@contextlib.contextmanager
def quiet():
    """Hide the converter's prints, warnings and native log lines."""
    import io
    import warnings

    from edgecnn.native import native_stderr

    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        with native_stderr(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def median(values) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))
