"""openvino: OpenVINO's CPU plugin (pip `openvino`), which reads .tflite and .onnx files directly.

By default OpenVINO runs float models in bf16 on CPUs that have it (AMX, AVX-512 BF16), and parity with the
Keras model is then off by about 1e-2; this runtime asks for f32 unless `precision` says otherwise, and the
row records the precision the compiled model reports. Integer inputs and outputs of an int8 model are
quantized with the model's own scale (read from the .tflite by the tflite runtime, from the ONNX graph's Q/DQ
nodes), as on every other runtime.

Python::

    from edgecnn.runtimes import RuntimeOptions, open_session
    sess = open_session("openvino", "model_fp32.onnx", RuntimeOptions(threads=2))
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecnn.contracts.manifest import tensor_info
from edgecnn.errors import ConfigError, ModelError
from edgecnn.native import native_stderr
from edgecnn.runtimes.base import Runtime, Session, Unavailable, fixed_batch, from_output, predict_in_batches, \
    single_io, to_input

PRECISIONS = ("f32", "bf16", "f16")


def _ov():
    try:
        import openvino
    except ImportError:
        raise Unavailable("OpenVINO is not installed: pip install openvino (or edgecnn[targets])") from None
    return openvino


def _io(path: Path, ports) -> tuple:
    """Manifest tensor records of a .tflite or .onnx model's input and output, with their quantization."""
    if path.suffix == ".tflite":
        from edgecnn.runtimes.tflite import io_of

        i, o = io_of(path)
        return [dict(i, name="image")], [dict(o, name="probs")]
    from edgecnn.graph import onnx_io_quantization

    quant = onnx_io_quantization(path)
    out = []
    for p in ports:
        name = p.get_any_name()
        shape = [d.get_length() if d.is_static else None for d in p.get_partial_shape()]
        out.append([tensor_info(name, shape, p.get_element_type().to_dtype(), **quant.get(name, {}))])
    return out[0], out[1]


class OpenvinoSession(Session):
    def __init__(self, path: Path, opts, variant: str = ""):
        ov = _ov()
        if opts.precision not in PRECISIONS:
            raise ConfigError(f"unknown OpenVINO precision '{opts.precision}' (choose {', '.join(PRECISIONS)})")
        try:
            with native_stderr():
                core = ov.Core()
                model = core.read_model(str(path))
                self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": opts.precision,
                                                                  "INFERENCE_NUM_THREADS": opts.threads})
        except RuntimeError as e:
            raise ModelError(f"{Path(path).name}: OpenVINO cannot read or compile it "
                             f"({str(e).strip().splitlines()[0][:200]})") from None
        single_io(len(self.compiled.inputs), len(self.compiled.outputs))
        self.inputs, self.outputs = _io(Path(path), (self.compiled.inputs[0], self.compiled.outputs[0]))
        self.fixed = fixed_batch(self.inputs[0]["shape"])
        self.batch_ok = self.fixed is None
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        used = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        self.runtime = f"openvino {ov.__version__.split('-')[0]}"
        self.accelerator = f"CPU {used}"
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS")) or opts.threads
        self.includes_copies = opts.include_copies
        if opts.precision != "f32":
            self.note = f"inference precision {used}: float parity is not expected to hold"
        self.request = self.compiled.create_infer_request()
        self._ov = ov

    def _run(self, x: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: to_input(x, self.inputs[0])})
        return from_output(np.array(next(iter(result.values()))), self.outputs[0])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_in_batches(self._run, x, self.fixed)

    def runner(self, x: np.ndarray):
        q = to_input(x, self.inputs[0])
        request = self.request
        if self.includes_copies:
            return lambda: request.infer({0: q})
        request.set_input_tensor(self._ov.Tensor(np.ascontiguousarray(q)))
        return request.infer

    def close(self) -> None:
        self.request = self.compiled = None


def _prepare() -> None:
    try:
        _ov()
    except Unavailable:
        pass


RUNTIME = Runtime("openvino", ("tflite", "onnx"), OpenvinoSession, "OpenVINO CPU plugin (.tflite and .onnx)",
                  options=("precision",), prepare=_prepare, install="pip install openvino")
