"""Self-checks: load an artifact in its own runtime (LiteRT for .tflite, onnxruntime for .onnx), run it on
the test split and compare with the Keras model: names, then shapes, then values.

Python::

    from edgecnn.export.verify import open_runner, parity
    runner = open_runner("runs/d/export/model_int8.tflite")
    probs = runner.predict(ds.x_test)            # float probabilities, int8 I/O handled
    parity(probs, reference_probs, ds.y_test)    # accuracy, drop, agreement, max abs diff
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edgecnn.errors import ModelError, ParityError, ShapeError

INPUT_NAME, OUTPUT_NAME = "image", "probs"  # the names every artifact exposes (models name them so)
CHUNK = 256  # images per call for runtimes with a dynamic batch


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence native (C++) log lines written to fd 2 while loading runtimes; Python errors still raise.
    EDGECNN_DEBUG=1 (or EDGECNN_NATIVE_LOGS=1) shows them."""
    from edgecnn.bench.timing import native_stderr

    with native_stderr(echo=True if os.environ.get("EDGECNN_DEBUG") else None):
        yield


def tensor_info(name: str, shape, dtype, scale=None, zero_point=None, **extra) -> dict:
    """One input/output as the manifest records it (a dynamic dimension is null)."""
    quant = None if not scale else {"scale": float(scale), "zero_point": int(zero_point)}
    shape = [None if (d is None or isinstance(d, str) or int(d) < 0) else int(d) for d in shape]
    return {"name": name, "shape": shape, "dtype": np.dtype(dtype).name, "quantization": quant, **extra}


def quantize(x: np.ndarray, info: dict) -> np.ndarray:
    """Float input -> the tensor's type with its scale and zero point (as the on-device script does it)."""
    from edgecnn.device.edgecnn_infer import quantize as affine

    q = info["quantization"] or {"scale": None, "zero_point": 0}
    return affine(x, info["dtype"], q["scale"], q["zero_point"])


def dequantize(y: np.ndarray, info: dict) -> np.ndarray:
    """Integer output -> float with its scale and zero point."""
    from edgecnn.device.edgecnn_infer import dequantize as affine

    q = info["quantization"] or {"scale": None, "zero_point": 0}
    return affine(y, q["scale"], q["zero_point"])


class TFLiteRunner:
    """A .tflite model in the LiteRT interpreter (`ai_edge_litert`)."""

    runtime = "ai_edge_litert"

    def __init__(self, path: Path, num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            from edgecnn.errors import MissingDependencyError

            raise MissingDependencyError("ai-edge-litert", "running .tflite models") from None
        try:
            with quiet_stderr():
                self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{path}: not a TFLite model ({str(e).splitlines()[0]})") from None
        it = self.interpreter
        self._in, self._out = it.get_input_details(), it.get_output_details()
        names_in, names_out = _signature_names(it)
        self.inputs = [_tfl_info(d, names_in.get(d["index"], d["name"])) for d in self._in]
        self.outputs = [_tfl_info(d, names_out.get(d["index"], d["name"])) for d in self._out]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float32 NHWC images in [0, 1] -> float probabilities (quantizing and dequantizing at the edges)."""
        it, din, dout = self.interpreter, self._in[0], self._out[0]
        fixed = int(din["shape_signature"][0]) if int(din["shape_signature"][0]) > 0 else None
        step = fixed or CHUNK
        outs = []
        for start in range(0, len(x), step):
            chunk = x[start:start + step]
            n = len(chunk)
            if fixed and n < fixed:  # pad the last chunk to the fixed batch
                chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), chunk.dtype)])
            elif not fixed and tuple(it.get_input_details()[0]["shape"]) != chunk.shape:
                it.resize_tensor_input(din["index"], list(chunk.shape))
                it.allocate_tensors()
            it.set_tensor(din["index"], quantize(chunk, self.inputs[0]))
            it.invoke()
            outs.append(dequantize(it.get_tensor(dout["index"]), self.outputs[0])[:n])
        return np.concatenate(outs)


def _signature_names(it) -> tuple[dict, dict]:
    """Tensor index -> signature name (e.g. 'image', 'probs'); empty when the model has no signature."""
    sigs = it._get_full_signature_list() or {}
    if not sigs:
        return {}, {}
    sig = next(iter(sigs.values()))
    return ({v: k for k, v in sig.get("inputs", {}).items()}, {v: k for k, v in sig.get("outputs", {}).items()})


def _tfl_info(d: dict, name: str) -> dict:
    scale, zp = d["quantization"]
    return tensor_info(name, d["shape_signature"], d["dtype"], scale or None, zp, tensor=d["name"], index=int(d["index"]))


class OnnxRunner:
    """An .onnx model in onnxruntime (CPU execution provider)."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, num_threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            from edgecnn.errors import MissingDependencyError

            raise MissingDependencyError("onnxruntime", "running .onnx models") from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if num_threads:
            opts.intra_op_num_threads = num_threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise ModelError(f"{path}: not an ONNX model ({str(e).splitlines()[0][:200]})") from None
        io_quant = onnx_io_quantization(path)
        self.inputs = [tensor_info(i.name, i.shape, _ort_dtype(i.type), **io_quant.get(i.name, {}))
                       for i in self.session.get_inputs()]
        self.outputs = [tensor_info(o.name, o.shape, _ort_dtype(o.type), **io_quant.get(o.name, {}))
                        for o in self.session.get_outputs()]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float32 NHWC images in [0, 1] -> float probabilities."""
        din = self.session.get_inputs()[0]
        fixed = din.shape[0] if isinstance(din.shape[0], int) and din.shape[0] > 0 else None
        step = fixed or CHUNK
        outs = []
        for start in range(0, len(x), step):
            chunk = x[start:start + step]
            n = len(chunk)
            if fixed and n < fixed:
                chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), chunk.dtype)])
            y = self.session.run([self.outputs[0]["name"]], {din.name: quantize(chunk, self.inputs[0])})[0]
            outs.append(dequantize(y, self.outputs[0])[:n])
        return np.concatenate(outs)


def _ort_dtype(t: str) -> str:
    return {"tensor(float)": "float32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
            "tensor(float16)": "float16", "tensor(int32)": "int32", "tensor(int64)": "int64"}.get(t, t)


def onnx_io_quantization(path) -> dict:
    """Scale and zero point of integer graph inputs (read by a DequantizeLinear) and outputs (written by a
    QuantizeLinear), as {name: {"scale", "zero_point"}}: ONNX tensors do not carry them themselves."""
    import onnx
    from onnx import numpy_helper

    try:
        g = onnx.load(str(path), load_external_data=False).graph
    except Exception:
        return {}
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR}
    inits.update(consts)
    found = {}

    def params(node):
        if len(node.input) < 2 or node.input[1] not in inits:
            return None
        scale = inits[node.input[1]]
        zp = inits.get(node.input[2]) if len(node.input) > 2 else np.zeros(1, np.int8)
        if scale.size != 1 or zp is None:
            return None
        return {"scale": float(scale.reshape(-1)[0]), "zero_point": int(zp.reshape(-1)[0])}

    layout = {"Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten"}  # integer-preserving
    consumers, producer = {}, {}
    for node in g.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
        for t in node.output:
            producer[t] = node

    def forward(name):  # input -> its DequantizeLinear, through layout ops (tf2onnx adds NHWC->NCHW ones)
        for _ in range(8):
            users = consumers.get(name, [])
            if len(users) != 1:
                return None
            if users[0].op_type == "DequantizeLinear":
                return users[0]
            if users[0].op_type not in layout:
                return None
            name = users[0].output[0]
        return None

    def backward(name):  # output <- its QuantizeLinear, through layout ops
        for _ in range(8):
            node = producer.get(name)
            if node is None or node.op_type == "QuantizeLinear":
                return node
            if node.op_type not in layout:
                return None
            name = node.input[0]
        return None

    int_types = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    for vi in g.input:
        if vi.type.tensor_type.elem_type in int_types and (n := forward(vi.name)) is not None and (p := params(n)):
            found[vi.name] = p
    for vi in g.output:
        if vi.type.tensor_type.elem_type in int_types and (n := backward(vi.name)) is not None and (p := params(n)):
            found[vi.name] = p
    return found


RUNNERS: dict[str, Callable] = {".tflite": TFLiteRunner, ".onnx": OnnxRunner}


def open_runner(path, num_threads: int | None = None):
    """Load a model file in the runtime its suffix names.

    Raises:
        ModelError: unknown suffix, missing file, or a file the runtime cannot read.
    """
    path = Path(path)
    if path.suffix not in RUNNERS:
        raise ModelError(f"{path}: cannot run '{path.suffix}' files (expected {', '.join(RUNNERS)})")
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    return RUNNERS[path.suffix](path, num_threads=num_threads)


def check_io(runner, path, input_shape, num_classes: int) -> None:
    """Names, then shapes: one input `image` (N, h, w, c), one output `probs` (N, classes).

    Raises:
        ShapeError: a name or shape differs from the Keras model's.
    """
    if len(runner.inputs) != 1 or len(runner.outputs) != 1:
        raise ShapeError(f"{path}: expected 1 input and 1 output, found {len(runner.inputs)} and {len(runner.outputs)}")
    i, o = runner.inputs[0], runner.outputs[0]
    if (i["name"], o["name"]) != (INPUT_NAME, OUTPUT_NAME):
        raise ShapeError(f"{path}: I/O named {i['name']!r} -> {o['name']!r}, expected {INPUT_NAME!r} -> {OUTPUT_NAME!r}")
    if i["shape"][1:] != list(input_shape) or o["shape"][1:] != [num_classes]:
        raise ShapeError(f"{path}: shapes {i['shape']} -> {o['shape']}, expected "
                         f"[N, {', '.join(map(str, input_shape))}] -> [N, {num_classes}]")


def parity(probs: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, accuracy drop (points), top-1 agreement (fraction) and max abs probability difference."""
    pred, ref_pred = probs.argmax(1), reference.argmax(1)
    acc, ref_acc = float(np.mean(pred == labels)), float(np.mean(ref_pred == labels))
    return {
        "accuracy": acc,
        "reference_accuracy": ref_acc,
        "accuracy_drop": round((ref_acc - acc) * 100, 6),
        "top1_agreement": float(np.mean(pred == ref_pred)),
        "max_abs_diff": float(np.max(np.abs(probs.astype(np.float64) - reference))),
        "n": int(len(labels)),
    }


def verify(path, x: np.ndarray, y: np.ndarray, reference: np.ndarray, *, input_shape, num_classes: int,
           tolerance: float | None) -> tuple[dict, list, list]:
    """Load `path` in its runtime, check its I/O, run it on (x, y) and compare with `reference` probabilities.

    Args:
        tolerance: max abs probability difference allowed (float artifacts); None records without failing.
    Returns:
        (parity figures, input infos, output infos).
    Raises:
        ShapeError: I/O names or shapes differ. ParityError: a float artifact is off by more than `tolerance`.
    """
    runner = open_runner(path)
    check_io(runner, path, input_shape, num_classes)
    probs = runner.predict(x)
    if probs.shape != reference.shape:
        raise ShapeError(f"{path}: output {probs.shape} for {len(x)} images, expected {reference.shape}")
    p = parity(probs, reference, y)
    if tolerance is not None and not p["max_abs_diff"] <= tolerance:
        raise ParityError(f"{Path(path).name}: probabilities differ from the Keras model by {p['max_abs_diff']:.3g} "
                          f"(tolerance {tolerance:g}; top-1 agreement {p['top1_agreement']:.4f})")
    return p, runner.inputs, runner.outputs
