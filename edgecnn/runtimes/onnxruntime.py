"""onnxruntime: ONNX models on ONNX Runtime, one row per requested execution provider.

Providers are given by short name (cpu, cuda, tensorrt, openvino, xnnpack, coreml, qnn, dml, ...) or
full name (CUDAExecutionProvider). A provider this onnxruntime build lacks is a skipped row; the
session always keeps the CPU provider as fallback and the row says when the fallback took over.
Latency is timed with I/O binding on pre-allocated OrtValues, so tensor copies stay outside the timing
unless `include_copies` is set (then `session.run` with NumPy arrays is timed). Integer inputs and outputs
(a QDQ model made from an int8 TFLite) are quantized with the scale the graph's Q/DQ nodes carry.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecnn.contracts.manifest import tensor_info
from edgecnn.errors import ConfigError, ModelError
from edgecnn.runtimes.base import Runtime, Session, Unavailable, fixed_batch, from_output, predict_in_batches, \
    single_io, to_input

EVAL_CHUNK = 256
CPU = "CPUExecutionProvider"
SHORT = {
    "cpu": CPU, "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider", "xnnpack": "XnnpackExecutionProvider",
    "coreml": "CoreMLExecutionProvider", "qnn": "QNNExecutionProvider", "dml": "DmlExecutionProvider",
    "nnapi": "NnapiExecutionProvider", "rocm": "ROCMExecutionProvider", "migraphx": "MIGraphXExecutionProvider",
    "dnnl": "DnnlExecutionProvider", "webgpu": "WebGpuExecutionProvider", "acl": "ACLExecutionProvider",
    "armnn": "ArmNNExecutionProvider", "cann": "CANNExecutionProvider",
}
INSTALL_HINT = {
    "CUDAExecutionProvider": "pip install onnxruntime-gpu (and CUDA/cuDNN)",
    "TensorrtExecutionProvider": "pip install onnxruntime-gpu (and TensorRT)",
    "OpenVINOExecutionProvider": "pip install onnxruntime-openvino",
    "QNNExecutionProvider": "pip install onnxruntime-qnn (on a Snapdragon device)",
    "DmlExecutionProvider": "pip install onnxruntime-directml (Windows)",
    "CoreMLExecutionProvider": "the standard onnxruntime wheel on macOS",
    "XnnpackExecutionProvider": "an onnxruntime build with --use_xnnpack (Android/iOS packages have it)",
}
LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}
DTYPES = {"tensor(float)": "float32", "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(float16)": "float16",
          "tensor(int32)": "int32", "tensor(int64)": "int64"}


def provider_name(name: str) -> str:
    """Short or full provider name -> full name.

    Raises:
        ConfigError: a name onnxruntime does not know.
    """
    full = SHORT.get(name.lower(), name)
    known = set(SHORT.values())
    try:
        import onnxruntime as ort

        known |= set(ort.get_all_providers())
    except ImportError:
        pass
    if full not in known:
        raise ConfigError(f"unknown onnxruntime provider '{name}' (choose {', '.join(SHORT)} or a full name "
                          f"such as CUDAExecutionProvider)")
    return full


def _variants(opts) -> list:
    return [provider_name(p) for p in (opts.providers or ("cpu",))]


class OrtSession(Session):
    def __init__(self, path: Path, opts, provider: str = ""):
        try:
            import onnxruntime as ort
        except ImportError:
            raise Unavailable("onnxruntime is not installed: pip install onnxruntime") from None
        from edgecnn.graph import onnx_io_quantization

        self.ort = ort
        provider = provider or CPU
        available = ort.get_available_providers()
        if provider not in available:
            hint = INSTALL_HINT.get(provider, "an onnxruntime build with it")
            raise Unavailable(f"{provider} is not in this onnxruntime build (has {', '.join(available)}); "
                              f"it needs {hint}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = opts.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[opts.graph_optimization])
        so.log_severity_level = 3
        providers = [provider] + ([CPU] if provider != CPU else [])
        if provider == "XnnpackExecutionProvider":
            providers[0] = (provider, {"intra_op_num_threads": str(opts.threads)})
        try:
            self.sess = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise ModelError(f"{path}: not an ONNX model ({str(e).splitlines()[0][:200]})") from None
        ins, outs = self.sess.get_inputs(), self.sess.get_outputs()
        single_io(len(ins), len(outs))
        io_quant = onnx_io_quantization(path)
        self.inputs = [tensor_info(t.name, t.shape, DTYPES.get(t.type, t.type), **io_quant.get(t.name, {}))
                       for t in ins]
        self.outputs = [tensor_info(t.name, t.shape, DTYPES.get(t.type, t.type), **io_quant.get(t.name, {}))
                        for t in outs]
        self.fixed = fixed_batch(ins[0].shape)
        self.batch_ok = self.fixed is None
        used = self.sess.get_providers()
        self.accelerator = used[0]
        if used[0] != provider:
            self.note = f"{provider} did not take the model; ran on {used[0]}"
        self.runtime = f"onnxruntime {ort.__version__}"
        self.threads = opts.threads
        self.includes_copies = opts.include_copies
        self._names = (ins[0].name, outs[0].name)

    def predict(self, x: np.ndarray) -> np.ndarray:
        i_name, o_name = self._names
        return predict_in_batches(
            lambda b: from_output(self.sess.run([o_name], {i_name: to_input(b, self.inputs[0])})[0], self.outputs[0]),
            x, self.fixed, EVAL_CHUNK)

    def runner(self, x: np.ndarray):
        x = to_input(x, self.inputs[0])
        sess, (i_name, o_name) = self.sess, self._names
        if self.includes_copies:
            return lambda: sess.run([o_name], {i_name: x})
        y = sess.run([o_name], {i_name: x})[0]
        io = sess.io_binding()
        io.bind_ortvalue_input(i_name, self.ort.OrtValue.ortvalue_from_numpy(x))
        io.bind_ortvalue_output(o_name, self.ort.OrtValue.ortvalue_from_numpy(np.empty_like(y)))
        self._keep = io
        return lambda: sess.run_with_iobinding(io)

    def close(self) -> None:
        self.sess = self._keep = None


def _prepare() -> None:
    import onnxruntime  # noqa: F401


RUNTIME = Runtime("onnxruntime", ("onnx",), OrtSession, "ONNX Runtime (execution providers)",
                  options=("providers", "graph_optimization"), variants=_variants, prepare=_prepare,
                  install="pip install onnxruntime")
