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


def inspect_layers(run_dir, images: int = 128, calib_samples: int = 300, seed: int = 0, plot: bool = True) -> dict:
    """Where int8 hurts a trained run: every layer of its full-integer PTQ model measured against the float layer
    on validation images by TF's QuantizationDebugger (RMSE of the quantized output over its scale: about 0.29 is
    plain rounding noise, well above it is a layer worth keeping wider), with the spread of each conv/dense
    layer's per-output-channel weight ranges; ranked worst first, and plotted in graph order to RUN/layers.png.

    Also the model's rounding floors on the whole validation split (`quant_auto.rounding_floors`): its agreement
    with itself when only its input, only its conv/dense weights, or both are rounded to int8.

    Returns:
        {"layers": [{"op", "layer", "tensor", "rmse_over_scale", "rmse", "max_abs_error", "scale"}] worst first,
         "weights": [{"layer", "channels", "max_range", "median_range", "spread"}] widest spread first,
         "rounding_floors": {"input"|"weights"|"input_and_weights": {"agreement", "accuracy_drop_pts", "flips",
         "images"}}, "images", "plot"}
    """
    import tempfile

    import keras

    from edgecnn.export.calibration import calibration_images
    from edgecnn.export.context import quiet
    from edgecnn.export.converter import convert_saved_model, keras_saved_model
    from edgecnn.export.quant_auto import layer_sensitivity, rounding_floors
    from edgecnn.graph import layer_name
    from edgecnn.io import write_bytes
    from edgecnn.rundir import open_run
    from edgecnn.runtimes.tflite import input_grid

    run = open_run(run_dir)
    model, ds = run.load_model(), run.load_dataset()
    calib, _ = calibration_images(ds.train, calib_samples, seed)
    with tempfile.TemporaryDirectory(prefix="edgecnn-layers-") as tmp, quiet():
        sm = keras_saved_model(model, run.model_spec.input_shape, 1, Path(tmp) / "sm")
        rows = layer_sensitivity(sm, calib, ds.val[:images])
        ptq = write_bytes(Path(tmp) / "ptq.tflite", convert_saved_model(sm, int8=True, calib=calib, io="int8"))
        grid = input_grid(ptq)
    floors = rounding_floors(model, ds.val, ds.val.predict_with(model), ds.y_val, grid)
    order = sorted(rows, key=lambda r: r["position"])  # the plot runs through the graph
    for r in rows:
        r["layer"] = layer_name(r["tensor"])
    weights = []
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        w = np.asarray(kernel)  # (kh, kw, in, out), (kh, kw, in, multiplier) for depthwise, (in, out) for dense
        channels = w.shape[-2] * w.shape[-1] if isinstance(layer, keras.layers.DepthwiseConv2D) else w.shape[-1]
        per_channel = np.abs(w.reshape(-1, channels)).max(axis=0)
        med = float(np.median(per_channel))
        weights.append({"layer": layer.name, "channels": int(per_channel.size), "max_range": float(per_channel.max()),
                        "median_range": med, "spread": float(per_channel.max() / med) if med > 0 else None})
    weights.sort(key=lambda r: -(r["spread"] or 0))
    out = {"layers": rows, "weights": weights, "rounding_floors": floors, "images": int(min(images, len(ds.val))),
           "plot": None}
    if plot:
        out["plot"] = str(_plot_layers(order, run.path / "layers.png"))
    return out


def _plot_layers(rows: list, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecnn.io import atomic_path

    names = [str(r.get("layer") or r.get("tensor") or i)[:28] for i, r in enumerate(rows)]
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.2), 3.5 + 0.07 * max(map(len, names), default=0)))
    ax.bar(range(len(rows)), [r["rmse_over_scale"] for r in rows], color="tab:blue")
    ax.axhline(12 ** -0.5, color="tab:gray", linestyle="--", linewidth=1, label="rounding noise (1/sqrt(12))")
    ax.set_xticks(range(len(rows)), names, rotation=90, fontsize=7)  # which layer, as `inspect --layers` names it
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("quantized layer, in graph order")
    ax.set_ylabel("RMSE / quantization scale")
    ax.set_title("int8 error per layer against the float model (validation images)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
