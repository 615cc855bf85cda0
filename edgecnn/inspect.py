"""Look inside a model file before shipping it: size, I/O with dtypes and quantization, op histogram,
parameter count, whether it is fully int8 (and which ops are not), and which ops the XNNPACK CPU path
or a GPU delegate would not take.

Python::

    from edgecnn.inspect import inspect_model
    report = inspect_model("runs/d/export/model_int8.tflite")
    report["fully_int8"], report["not_int8_ops"], report["acceleration"]

CLI::

    edgecnn inspect runs/d/export/model_int8.tflite
    edgecnn inspect runs/d/export/model_fp32.onnx --json
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from edgecnn.errors import ModelError
from edgecnn.graph import (FLOAT_DTYPES, ONNX_QDQ, constants, float_ops, not_delegated, onnx_float_ops,  # noqa: F401
                           parse_gpu_compatibility, tflite_params)
from edgecnn.native import native_stderr
from edgecnn.runtimes import RuntimeOptions, Unavailable, open_session
from edgecnn.runtimes.tflite import float_ops as tflite_float_ops  # noqa: F401  (re-exported)


def _session(name: str, path, **options):
    try:
        return open_session(name, path, RuntimeOptions(**options))
    except Unavailable as e:
        raise ModelError(f"{path}: {e}") from None


def _litert_fully_accelerated(path) -> bool | None:
    """LiteRT's own verdict for its CPU path (is_fully_accelerated of the litert-cpu runtime); None when unavailable."""
    try:
        sess = open_session("litert-cpu", path)
    except Exception:  # older LiteRT, or a model its CPU accelerator refuses
        return None
    try:
        return bool(sess.fully)
    finally:
        sess.close()


def _analyzer_text(path) -> str:
    try:
        from ai_edge_litert import _pywrap_analyzer_wrapper as analyzer

        with native_stderr():
            return analyzer.ModelAnalyzer(str(path), True, True)
    except ImportError:
        import contextlib
        import io

        import tensorflow as tf

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), native_stderr():
            tf.lite.experimental.Analyzer.analyze(model_path=str(path), gpu_compatibility=True)
        return buf.getvalue()


def inspect_tflite(path: Path) -> dict:
    runner = _session("tflite", path)  # XNNPACK on, as a device runs it: its partitions show what it took
    try:
        ops, delegates, tensors = runner.graph()
    finally:
        runner.close()
    consts = constants(ops, [i["index"] for i in runner.inputs])
    floats = float_ops(ops, tensors, consts)
    boundary = {"QUANTIZE", "DEQUANTIZE"}
    int8_core = not [o for o in floats if o["op"] not in boundary]
    xnn = not_delegated(ops, delegates)
    gpu = parse_gpu_compatibility(_analyzer_text(path))
    return {
        "format": "tflite", "runtime": "ai_edge_litert",
        "inputs": runner.inputs, "outputs": runner.outputs,
        "ops": dict(Counter(o["op_name"] for o in ops)), "num_ops": len(ops),
        "parameters": tflite_params(ops, tensors, consts),
        "fully_int8": not floats,
        "int8_except_io": int8_core and bool(floats),  # --io float: QUANTIZE/DEQUANTIZE at the edges only
        "not_int8_ops": floats,
        "acceleration": {
            "xnnpack": {"fully_delegated": not xnn, "partitions": len(delegates), "not_delegated": xnn},
            "litert_cpu_fully_accelerated": _litert_fully_accelerated(path),
            "gpu": gpu,
        },
    }


# ------------------------------------------------------------------------------------------------ ONNX

def inspect_onnx(path: Path) -> dict:
    import onnx

    runner = _session("onnxruntime", path)  # raises ModelError for a file that is not ONNX
    runner.close()
    model = onnx.load(str(path))
    try:
        model = onnx.shape_inference.infer_shapes(model)  # dtypes of intermediate tensors
    except Exception:  # shape inference is best effort; unknown dtypes count as not float
        pass
    g = model.graph
    bad, io_edge = onnx_float_ops(g, onnx)
    float_io = any(t["dtype"] in FLOAT_DTYPES for t in runner.inputs + runner.outputs)
    qparams = {i for n in g.node if n.op_type in ONNX_QDQ for i in n.input[1:]}
    params = sum(int(np.prod(t.dims)) for t in g.initializer
                 if t.name not in qparams and t.data_type != onnx.TensorProto.INT64 and len(t.dims) > 0)
    return {
        "format": "onnx", "runtime": "onnxruntime",
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "inputs": runner.inputs, "outputs": runner.outputs,
        "ops": dict(Counter(n.op_type for n in g.node)), "num_ops": len(g.node),
        "parameters": params, "fully_int8": not bad and not float_io and not io_edge,
        "int8_except_io": not bad and (float_io or io_edge), "not_int8_ops": bad,
        "acceleration": None,
    }


# ----------------------------------------------------------------------------------------------- Keras


def inspect_keras(path: Path) -> dict:
    import zipfile

    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a Keras model (.keras files are zip archives)")
    import keras

    sess = _session("keras", path)
    model, ins, outs = sess.model, sess.inputs, sess.outputs
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    return {
        "format": "keras", "runtime": f"keras {keras.__version__}", "inputs": ins, "outputs": outs,
        "ops": dict(Counter(type(layer).__name__ for layer in layers)), "num_ops": len(layers),
        "parameters": int(model.count_params()), "fully_int8": False, "int8_except_io": False,
        # a Keras model computes in float throughout
        "not_int8_ops": [{"index": i, "op": type(layer).__name__, "name": layer.name} for i, layer in enumerate(layers)],
        "acceleration": None,
    }


INSPECTORS: dict[str, Callable[[Path], dict]] = {".tflite": inspect_tflite, ".onnx": inspect_onnx,
                                                  ".keras": inspect_keras}


def inspect_model(path) -> dict:
    """Describe a .tflite, .onnx or .keras model.

    Returns:
        {"path", "format", "size_bytes", "inputs", "outputs", "ops" (histogram), "num_ops", "parameters",
         "fully_int8", "int8_except_io", "not_int8_ops", "acceleration" (tflite: xnnpack, litert, gpu)}.
    Raises:
        ModelError: missing file, unknown suffix, or a file that is not a model of its kind.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    if path.suffix not in INSPECTORS:
        raise ModelError(f"{path}: cannot inspect '{path.suffix}' files (expected {', '.join(INSPECTORS)})")
    report = INSPECTORS[path.suffix](path)
    return {"path": str(path), "size_bytes": path.stat().st_size, **report}
