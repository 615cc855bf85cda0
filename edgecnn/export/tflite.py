"""TFLite exporters: float32, and full-integer int8 by post-training quantization (PTQ) or from the QAT stage.

The model goes through a SavedModel with one signature `serve(image) -> {"probs"}` and a fixed batch of
1 (`ExportConfig.tflite_batch`): a dynamic batch turns Keras' Flatten into SHAPE/STRIDED_SLICE/PACK ops,
which XNNPACK does not take, so the float model would no longer be fully accelerated on CPU.

Python::

    from edgecnn.export import ExportConfig, export
    export("runs/d", ExportConfig(formats=("tflite_fp32", "tflite_int8")))
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgecnn.errors import ExportError
from edgecnn.export.calibration import tflite_dataset
from edgecnn.export.context import Built, quiet
from edgecnn.io import write_bytes

SIGNATURE = "serve"
INT8_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}  # float I/O (--io float) adds these at the edges only


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


def _convert(conv, int8: bool, calib, io: str) -> bytes:
    import tensorflow as tf

    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = tflite_dataset(calib)
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


def _saved_model(ctx) -> Path:
    def make():
        d = Path(tempfile.mkdtemp(prefix="savedmodel-", dir=ctx.staging))
        return keras_saved_model(ctx.model, ctx.spec.input_shape, ctx.config.tflite_batch, d)

    return ctx.cached("saved_model", make)


def build_fp32(ctx) -> Built:
    """model_fp32.tflite: the float model as is."""
    path = ctx.staging / "model_fp32.tflite"
    write_bytes(path, convert_saved_model(_saved_model(ctx), int8=False))
    return Built(path, quant=None, info={"method": "tf.lite.TFLiteConverter (SavedModel, float32)"})


def build_int8(ctx) -> Built:
    """model_int8.tflite: full-integer int8 by PTQ, or by QAT when the config asks for it."""
    path = ctx.staging / "model_int8.tflite"
    if ctx.config.quant == "qat":
        from edgecnn.export.qat import run_qat

        info = run_qat(ctx, path)
        quant = "qat"
    else:
        data = convert_saved_model(_saved_model(ctx), int8=True, calib=ctx.calib, io=ctx.config.io.value)
        write_bytes(path, data)
        info = {"method": "tf.lite.TFLiteConverter post-training full-integer quantization"}
        quant = "ptq"
    info.update({"calibration_samples": int(len(ctx.calib)), "io": ctx.config.io.value})
    check_fully_int8(path)
    return Built(path, quant=quant, info=info)


def check_fully_int8(path) -> None:
    """Raise ExportError when an op of an int8 TFLite model computes in float (QUANTIZE/DEQUANTIZE at the
    model's edges excepted)."""
    from edgecnn.inspect import tflite_float_ops

    bad = [op for op in tflite_float_ops(path) if op["op"] not in INT8_BOUNDARY_OPS]
    if bad:
        ops = ", ".join(f"#{o['index']} {o['op']}" for o in bad[:8])
        raise ExportError(f"{Path(path).name} is not fully int8: float ops {ops}")
