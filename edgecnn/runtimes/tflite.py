"""tflite: the TFLite interpreter of LiteRT (`ai_edge_litert.interpreter`), else `tflite_runtime`, else
`tf.lite` (the on-device script's `load_runtime` picks it); the runtime used is recorded in the row.

Options: `threads`; the CPU kernels: XNNPACK (LiteRT's default delegate), `xnnpack=False` (the builtin
optimized kernels) or `reference_kernels=True` (the builtin reference kernels, which TFLite Micro matches bit for
bit; the optimized ones do not: up to 85 output steps apart on an int8 MobileNetV2); an external delegate
`PATH[:key=value,...]` (Coral Edge TPU, Arm NN, a GPU delegate build) loaded with `load_delegate`.

Python::

    from edgecnn.runtimes import open_session
    sess = open_session("tflite", "model_int8.tflite", RuntimeOptions(xnnpack=False))
    probs = sess.predict(x); sess.close()
"""
from __future__ import annotations

import gc
import sys
from pathlib import Path

import numpy as np

from edgecnn.contracts.manifest import tensor_info
from edgecnn.errors import ConfigError, ModelError
from edgecnn.native import native_stderr
from edgecnn.runtimes.base import Runtime, Session, Unavailable, fixed_batch, from_output, predict_in_batches, \
    single_io, to_input


def load_runtime():
    """(Interpreter class, load_delegate, OpResolverType or None, "name version") of the first TFLite runtime."""
    from edgecnn.script.edgecnn_infer import UsageError, load_runtime as load

    try:
        return load("auto")
    except UsageError as e:
        raise Unavailable(str(e)) from None


def parse_delegate(spec: str) -> tuple:
    """'PATH[:key=value,...]' -> (path, {key: value}), as the on-device script parses it.

    Raises:
        ConfigError: an option that is not key=value.
    """
    from edgecnn.script.edgecnn_infer import UsageError, parse_delegate as parse

    try:
        return parse(spec)
    except UsageError as e:
        raise ConfigError(str(e)) from None


def _load_delegate(load_delegate, lib: str, options: dict):
    """load_delegate, with its failure as one line (and without the half-built Delegate's __del__ noise)."""
    logs: list = []
    failure, hook = None, sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        try:
            with native_stderr(logs):
                return load_delegate(lib, options)
        except (ValueError, OSError, RuntimeError) as e:
            failure = f"delegate {lib} did not load: " + ("; ".join(logs[-2:]) or " ".join(str(e).split()))
        gc.collect()
    finally:
        sys.unraisablehook = hook
    raise RuntimeError(failure)


def _signature_names(it) -> tuple:
    """Tensor index -> signature name (e.g. 'image', 'probs'); empty when the model has no signature."""
    sigs = it._get_full_signature_list() or {}
    if not sigs:
        return {}, {}
    sig = next(iter(sigs.values()))
    return ({v: k for k, v in sig.get("inputs", {}).items()}, {v: k for k, v in sig.get("outputs", {}).items()})


def details_info(d: dict, name: str) -> dict:
    """An interpreter's tensor details -> a manifest tensor record."""
    scale, zp = d["quantization"]
    return tensor_info(name, d.get("shape_signature", d["shape"]), d["dtype"], scale or None, zp, tensor=d["name"],
                       index=int(d["index"]))


class TfliteSession(Session):
    def __init__(self, path: Path, opts, variant: str = ""):
        from edgecnn.script.edgecnn_infer import UsageError, interpreter_options

        Interpreter, load_delegate, resolver, self.runtime = load_runtime()
        try:
            kwargs, self.accelerator = interpreter_options(
                str(path), opts.threads, opts.delegate, opts.xnnpack,
                lambda lib, options: _load_delegate(load_delegate, lib, options), resolver, self.runtime,
                opts.reference_kernels)
        except UsageError as e:  # this runtime cannot turn XNNPACK off (bench checked the delegate spec up front)
            raise Unavailable(str(e)) from None
        try:
            with native_stderr():
                self.it = Interpreter(**kwargs)
            if opts.reference_kernels:  # they abort the process on such a Softmax: refuse it before allocating
                _refuse_tiny_softmax(self.it, path)
            with native_stderr():
                self.it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{path}: not a usable TFLite model ({str(e).splitlines()[0][:200]})") from None
        ins, outs = self.it.get_input_details(), self.it.get_output_details()
        single_io(len(ins), len(outs))
        names_in, names_out = _signature_names(self.it)
        self.inp, self.out = ins[0], outs[0]
        self.inputs = [details_info(d, names_in.get(d["index"], d["name"])) for d in ins]
        self.outputs = [details_info(d, names_out.get(d["index"], d["name"])) for d in outs]
        self.threads = opts.threads
        self.includes_copies = opts.include_copies
        # a batch fixed at conversion stays fixed: XNNPACK cannot reshape such a graph, so pad to it instead
        self.fixed = fixed_batch(self.inp.get("shape_signature", self.inp["shape"]))
        self.batch_ok = self.fixed is None
        self._batch = int(self.inp["shape"][0])

    def _set(self, x: np.ndarray) -> None:
        if self.fixed is None and len(x) != self._batch:
            self.it.resize_tensor_input(self.inp["index"], [len(x), *self.inp["shape"][1:]])
            self.it.allocate_tensors()
            self._batch = len(x)
        self.it.set_tensor(self.inp["index"], to_input(x, self.inputs[0]))

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The output tensor in its own dtype (int8 steps for a quantized model) for one batch."""
        self._set(x)
        self.it.invoke()
        return self.it.get_tensor(self.out["index"])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_in_batches(lambda b: from_output(self.raw(b), self.outputs[0]), x, self.fixed)

    def runner(self, x: np.ndarray):
        self._set(x)
        it = self.it
        if not self.includes_copies:
            return it.invoke  # exactly what LiteRT's benchmark tool times: the inference call alone
        q, i_in, i_out = to_input(x, self.inputs[0]), self.inp["index"], self.out["index"]

        def run():
            it.set_tensor(i_in, q)
            it.invoke()
            return it.get_tensor(i_out)

        return run

    def graph(self) -> tuple:
        """(ops without DELEGATE nodes, DELEGATE nodes, tensor details by index), for edgecnn.graph."""
        all_ops = self.it._get_ops_details()
        ops = [o for o in all_ops if o["op_name"] != "DELEGATE"]
        delegates = [o for o in all_ops if o["op_name"] == "DELEGATE"]
        return ops, delegates, {t["index"]: t for t in self.it.get_tensor_details()}

    def close(self) -> None:
        with native_stderr():
            self.it = None


def _unallocated(path):
    """An interpreter on `path` that has read the model and allocated nothing (nothing runs).

    Raises:
        ModelError: not a TFLite model the runtime reads.
    """
    Interpreter = load_runtime()[0]
    try:
        with native_stderr():
            return Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: not a usable TFLite model ({str(e).splitlines()[0][:200]})") from None


def io_of(path) -> tuple:
    """(input record, output record) of a .tflite file, read by the interpreter without allocating it
    (CompiledModel and OpenVINO do not report quantization parameters)."""
    it = _unallocated(path)
    ins, outs = it.get_input_details(), it.get_output_details()
    single_io(len(ins), len(outs))
    return details_info(ins[0], ins[0]["name"]), details_info(outs[0], outs[0]["name"])


def _refuse_tiny_softmax(it, path) -> None:
    from edgecnn.graph import tiny_softmax_inputs, tiny_softmax_reason

    found = tiny_softmax_inputs(it._get_ops_details(), {t["index"]: t for t in it.get_tensor_details()})
    if found:
        raise ModelError(f"{Path(path).name}: {tiny_softmax_reason(found)}")


def check_softmax_scale(path) -> None:
    """Raise ModelError when the reference kernels (TFLite Micro's arithmetic) would abort on the model's int8
    Softmax (`edgecnn.graph.tiny_softmax_inputs`); read without allocating, so without running it."""
    _refuse_tiny_softmax(_unallocated(path), path)


def float_ops(path, known=None) -> list:
    """Ops of a .tflite model that read or write float activations: [{"index", "op", "dtypes", "layer"}]
    (`known`: the Keras model's layer names, to name the layer of each; edgecnn.graph.layer_name)."""
    from edgecnn.graph import constants, float_ops as find
    from edgecnn.runtimes.base import RuntimeOptions

    sess = TfliteSession(Path(path), RuntimeOptions(xnnpack=False))
    try:
        ops, _, tensors = sess.graph()
        return find(ops, tensors, constants(ops, [i["index"] for i in sess.inputs]), known)
    finally:
        sess.close()


def mac_share(path) -> dict:
    """Conv/dense multiply-accumulates of a .tflite model and the share on int8 activations (graph.tflite_macs)."""
    from edgecnn.graph import tflite_macs
    from edgecnn.runtimes.base import RuntimeOptions

    sess = TfliteSession(Path(path), RuntimeOptions(xnnpack=False))
    try:
        ops, _, tensors = sess.graph()
        return tflite_macs(ops, tensors)
    finally:
        sess.close()


def input_grid(path) -> tuple | None:
    """The 8-bit grid a .tflite model's input lands on: (scale, zero_point, qmin, qmax) of its int8/uint8 input,
    or of the QUANTIZE op that takes a float input; None when the first layer computes on the float input."""
    from edgecnn.runtimes.base import RuntimeOptions

    sess = TfliteSession(Path(path), RuntimeOptions(xnnpack=False))
    try:
        ops, _, tensors = sess.graph()
        first = sess.it.get_input_details()[0]
        t = tensors[first["index"]]
        if np.dtype(t["dtype"]) == np.dtype(np.float32):
            quant = [o for o in ops if o["op_name"] == "QUANTIZE" and first["index"] in list(o["inputs"])]
            if not quant:
                return None
            t = tensors[quant[0]["outputs"][0]]
        info = np.iinfo(t["dtype"]) if np.issubdtype(np.dtype(t["dtype"]), np.integer) else None
        scale, zero = t["quantization"]
        if info is None or info.bits != 8 or not scale:
            return None
        return float(scale), int(zero), int(info.min), int(info.max)
    finally:
        sess.close()


def _prepare() -> None:
    try:
        load_runtime()
    except Unavailable:
        pass


RUNTIME = Runtime("tflite", ("tflite",), TfliteSession,
                  "TFLite interpreter (ai_edge_litert, else tflite_runtime, else tf.lite)",
                  options=("xnnpack", "reference_kernels", "delegate"), prepare=_prepare,
                  install="pip install ai-edge-litert")
