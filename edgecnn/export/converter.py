"""Keras -> TFLite conversion: a SavedModel with one signature `serve(image) -> {"probs"}`, then the TFLite
converter, float or full-integer int8. Used by the TFLite exporter, the QAT child process, the benchmarks and
the test fixtures.

Python::

    from edgecnn.export.converter import keras_to_tflite
    flatbuffer = keras_to_tflite(model, int8=True, calib=x_train[:300])
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecnn.errors import ExportError
from edgecnn.export.calibration import tflite_dataset
from edgecnn.export.context import quiet

SIGNATURE = "serve"


def keras_saved_model(model, input_shape, batch: int | None, out_dir: Path) -> Path:
    """Write a Keras 3 model as a SavedModel with the signature `serve(image) -> {"probs": ...}` in inference mode."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SIGNATURE, lambda image: {"probs": model(image, training=False)},
        input_signature=[tf.TensorSpec([batch, *input_shape], tf.float32, name="image")],
    )
    with quiet():
        archive.write_out(str(out_dir), verbose=False)
    return out_dir


def convert_saved_model(saved_model_dir, *, int8: bool, calib: np.ndarray | None = None,
                        io: str = "int8") -> bytes:
    """Convert a SavedModel (signature `serve`) to a TFLite flatbuffer.

    Args:
        int8: full integer quantization: int8 weights (per-channel for convolutions) and activations,
            builtin int8 kernels only, calibrated on `calib`.
        calib: calibration images (float32 NHWC), needed when `int8`.
        io: "int8" for int8 input and output tensors, "float" to keep float I/O.
    Raises:
        ExportError: the converter failed.
    """
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[SIGNATURE])
    return _convert(conv, int8, calib, io)


def keras_to_tflite(model, *, int8: bool = False, calib: np.ndarray | None = None, io: str = "int8") -> bytes:
    """A Keras 3 model straight to a TFLite flatbuffer with the same quantization settings as
    `convert_saved_model`, keeping the model's own (dynamic) batch: for benchmarks and test fixtures.
    `edgecnn export` goes through a SavedModel with a fixed batch instead."""
    import tensorflow as tf

    return _convert(tf.lite.TFLiteConverter.from_keras_model(model), int8, calib, io)


def calibrated(conv, calib: np.ndarray):
    """A TFLite converter set for post-training quantization calibrated on `calib` (the one place its settings
    live: full-integer export and `--quant auto`'s QuantizationDebugger both start from it)."""
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = tflite_dataset(calib)
    return conv


def _convert(conv, int8: bool, calib, io: str) -> bytes:
    import tensorflow as tf

    if int8:
        calibrated(conv, calib)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io == "int8":
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    try:
        with quiet():
            return conv.convert()
    except Exception as e:  # the converter raises ConverterError, RuntimeError, ValueError...
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ExportError(f"TFLite conversion failed ({'int8' if int8 else 'fp32'}): {first}") from None
