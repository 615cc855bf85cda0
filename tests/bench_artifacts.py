"""Exported artifacts for the bench, predict and testing tests.

Uses `edgecnn.export.export`; `make_artifacts` (the four artifacts and a contract manifest made directly
with TFLiteConverter, tf2onnx.from_function and onnxruntime quantize_static) is the fallback when the
export stage is not importable, and the way to make a deliberately broken int8 artifact.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

_CACHE: dict = {}


def exported_run(digits_run: Path, tmp_root: Path) -> Path:
    """A copy of `digits_run` with RUN/export (made once per session; treat it as read-only)."""
    if "run" not in _CACHE:
        run = tmp_root / "exported"
        shutil.copytree(digits_run, run)
        _export(run)
        _CACHE["run"] = run
    return _CACHE["run"]


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of an exported run that a test may break."""
    shutil.copytree(run, dest)
    shutil.rmtree(dest / "bench", ignore_errors=True)
    return dest


def _export(run: Path) -> None:
    try:
        from edgecnn.export import export  # the real stage
    except ImportError:
        make_artifacts(run)
        return
    export(str(run))


def broken_run(run: Path, dest: Path) -> Path:
    """A copy of `run` whose model_int8.tflite comes from the model with its weights replaced by noise:
    it loads and runs like any int8 model but has lost the accuracy. Its manifest entry describes the new file
    (sha256, I/O), as an export of a bad model would: what is wrong is the accuracy, which only the gates see."""
    import dataclasses

    from edgecnn.contracts.manifest import read_manifest, write_manifest
    from edgecnn.io import sha256
    from edgecnn.rundir import open_run
    from edgecnn.runtimes import open_session

    dest = copy_run(run, dest)
    r = open_run(dest)
    model, ds = r.load_model(), r.load_dataset()
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(0.01, 1.0, w.shape).astype(w.dtype) for w in model.get_weights()])  # finite, no info
    path = dest / "export" / "model_int8.tflite"
    int8_tflite(model, ds.x_train[:32], path)
    m = read_manifest(dest / "export")
    sess = open_session("tflite", path)
    entry = dataclasses.replace(m.artifacts["tflite_int8"], sha256=sha256(path), size_bytes=path.stat().st_size,
                                inputs=tuple(sess.inputs), outputs=tuple(sess.outputs))
    sess.close()
    write_manifest(dest / "export", dataclasses.replace(m, artifacts={**m.artifacts, "tflite_int8": entry}))
    return dest


def _tflite(model, calib=None) -> bytes:
    from edgecnn.export.tflite import keras_to_tflite

    return keras_to_tflite(model, int8=calib is not None, calib=calib)


def int8_tflite(model, calib: np.ndarray, path: Path) -> Path:
    """Full-integer TFLite of `model` calibrated on `calib`."""
    path.write_bytes(_tflite(model, calib))
    return path


def make_artifacts(run: Path) -> Path:
    """RUN/export/{model_fp32,model_int8}.{tflite,onnx} and manifest.json, shaped like the export stage's."""
    import onnx
    import tensorflow as tf
    import tf2onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgecnn.io import sha256, write_json
    from edgecnn.rundir import open_run

    r = open_run(run)
    model, ds = r.load_model(), r.load_dataset()
    out = run / "export"
    out.mkdir(exist_ok=True)
    calib = ds.x_train[:64]
    (out / "model_fp32.tflite").write_bytes(_tflite(model))
    int8_tflite(model, calib, out / "model_int8.tflite")
    spec = [tf.TensorSpec([None, *ds.input_shape], tf.float32, name="image")]
    fn = tf.function(lambda image: model(image, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
    onnx.save(proto, str(out / "model_fp32.onnx"))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {proto.graph.input[0].name: x}

    quantize_static(str(out / "model_fp32.onnx"), str(out / "model_int8.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    ref_acc = float(np.mean(model.predict(ds.x_test, verbose=0).argmax(1) == ds.y_test))
    arts = {}
    for name, file, fmt, prec in (("tflite_fp32", "model_fp32.tflite", "tflite", "fp32"),
                                  ("tflite_int8", "model_int8.tflite", "tflite", "int8"),
                                  ("onnx_fp32", "model_fp32.onnx", "onnx", "fp32"),
                                  ("onnx_int8", "model_int8.onnx", "onnx", "int8")):
        arts[name] = {"file": file, "format": fmt, "precision": prec, "quant": "ptq" if prec == "int8" else None,
                      "sha256": sha256(out / file), "size_bytes": (out / file).stat().st_size}
    write_json(out / "manifest.json", {
        "schema": "edgecnn.manifest/1", "created": "test", "edgecnn_version": "test",
        "source_run": {"path": str(run), "model_sha256": sha256(run / "model.keras"), "arch": r.model_spec.arch},
        "class_names": r.class_names, "preprocessing": r.preprocessing,
        "reference": {"accuracy": ref_acc, "n": int(len(ds.y_test))}, "versions": {}, "artifacts": arts,
    })
    return out
