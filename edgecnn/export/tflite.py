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

from edgecnn.errors import ExportError
from edgecnn.export.context import Built
from edgecnn.export.converter import SIGNATURE, convert_saved_model, keras_saved_model, keras_to_tflite  # noqa: F401
from edgecnn.io import write_bytes

INT8_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}  # float I/O (--io float) adds these at the edges only


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
        from edgecnn.export.quant_auto import qat_against_ptq

        info = run_qat(ctx, path)
        info["against_ptq"] = qat_against_ptq(ctx, path, _saved_model(ctx))
        quant = "qat"
    elif ctx.config.quant == "auto":
        from edgecnn.export.quant_auto import run_auto

        info = {"method": "auto", "auto": run_auto(ctx, path, _saved_model(ctx))}
        quant = "auto"
    else:
        data = convert_saved_model(_saved_model(ctx), int8=True, calib=ctx.calib, io=ctx.config.io.value)
        write_bytes(path, data)
        info = {"method": "tf.lite.TFLiteConverter post-training full-integer quantization"}
        quant = "ptq"
    info.update({"calibration_samples": int(len(ctx.calib)), "io": ctx.config.io.value})
    from edgecnn.errors import ModelError
    from edgecnn.runtimes.tflite import check_softmax_scale

    try:
        check_softmax_scale(path)
    except ModelError as e:
        raise ExportError(f"{e}; is the model trained? (--formats tflite_fp32,onnx_fp32 exports the float path)") \
            from None
    if quant != "auto" or not info["auto"]["kept_float"]:  # auto may keep layers in float on purpose
        islands = float_islands(path, ctx.model)
        if islands:
            info["float_ops"] = islands
            ctx.warn(float_islands_warning(path, islands))
    return Built(path, quant=quant, info=info)


def float_islands(path, model=None) -> list:
    """The ops of an int8 TFLite model that compute in float (QUANTIZE/DEQUANTIZE at its edges and around them
    excepted): [{"index", "op", "layer"}]. The converter leaves an op it has no int8 kernel for (LayerNormalization's
    NEG, GroupNormalization's SQUARE, ELU) in float between a DEQUANTIZE and a QUANTIZE."""
    from edgecnn.models import all_layers
    from edgecnn.runtimes.tflite import float_ops

    # the model's layer names, nested models' own names left out (a tensor name holds both)
    known = {layer.name for layer in all_layers(model) if not getattr(layer, "layers", None)} if model else None
    return [{"index": o["index"], "op": o["op"], "layer": o["layer"]}
            for o in float_ops(path, known or None) if o["op"] not in INT8_BOUNDARY_OPS]


def float_islands_warning(path, islands: list) -> str:
    ops = sorted({o["op"] for o in islands})
    layers = list(dict.fromkeys(o["layer"] for o in islands))
    return (f"{Path(path).name} is not fully int8: {len(islands)} op(s) ({', '.join(ops)}) of layer(s) "
            f"{', '.join(layers[:6])}{' ...' if len(layers) > 6 else ''} have no int8 kernel in the converter and "
            f"compute in float between DEQUANTIZE and QUANTIZE. CPUs run it; integer-only targets (Ethos-U, Edge "
            f"TPU, most NPUs) do not: for those, use layers that quantize (BatchNormalization for "
            f"LayerNormalization or GroupNormalization, ReLU for ELU)")


def check_fully_int8(path) -> None:
    """Raise ExportError when an op of an int8 TFLite model computes in float (QUANTIZE/DEQUANTIZE at the
    model's edges excepted)."""
    bad = float_islands(path)
    if bad:
        ops = ", ".join(f"#{o['index']} {o['op']}" for o in bad[:8])
        raise ExportError(f"{Path(path).name} is not fully int8: float ops {ops}")
