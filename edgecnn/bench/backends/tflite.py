"""tflite: the TFLite interpreter of LiteRT (`ai_edge_litert.interpreter`), else `tflite_runtime`, else
`tf.lite`; the runtime used is recorded in the row.

Options: `threads`, XNNPACK on (LiteRT's default delegate) or off (builtin kernels, no default
delegate), and an external delegate `PATH[:key=value,...]` (Coral Edge TPU, Arm NN, a GPU delegate
build) loaded with `load_delegate`.
"""
from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.bench.backends.base import Backend, Session, Unavailable, dequantize, hwc, package_version, quantize
from edgecnn.bench.timing import native_stderr
from edgecnn.errors import ConfigError

EVAL_CHUNK = 64  # images per invoke when evaluating the test split


def tflite_runtime():
    """(Interpreter class, load_delegate, OpResolverType or None, runtime name) of the first runtime found."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType, load_delegate

        return Interpreter, load_delegate, OpResolverType, f"ai_edge_litert {package_version('ai-edge-litert')}"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as tfl

        return (tfl.Interpreter, tfl.load_delegate, getattr(tfl, "OpResolverType", None),
                f"tflite_runtime {package_version('tflite-runtime')}")
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return (tf.lite.Interpreter, tf.lite.experimental.load_delegate,
                getattr(tf.lite.experimental, "OpResolverType", None), f"tf.lite {tf.__version__}")
    except ImportError:
        raise Unavailable("no TFLite runtime installed: pip install ai-edge-litert") from None


def parse_delegate(spec: str) -> tuple:
    """'PATH[:key=value,...]' -> (path, {key: value}), as the on-device script parses it.

    Raises:
        ConfigError: an option that is not key=value.
    """
    from edgecnn.device.edgecnn_infer import UsageError, parse_delegate as parse

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


class TfliteSession(Session):
    def __init__(self, path: Path, cfg, variant: str = ""):
        Interpreter, load_delegate, OpResolverType, self.runtime = tflite_runtime()
        from edgecnn.device.edgecnn_infer import UsageError, interpreter_options

        logs: list = []
        if cfg.delegate:
            parse_delegate(cfg.delegate)  # a bad option is a ConfigError
        try:
            kwargs, self.accelerator = interpreter_options(
                str(path), cfg.threads, cfg.delegate, cfg.xnnpack,
                lambda lib, options: _load_delegate(load_delegate, lib, options), OpResolverType, self.runtime)
        except UsageError as e:  # this runtime cannot turn XNNPACK off
            raise Unavailable(str(e)) from None
        with native_stderr(logs):
            self.it = Interpreter(**kwargs)
            self.it.allocate_tensors()
        ins, outs = self.it.get_input_details(), self.it.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError(f"expects a model with 1 input and 1 output, got {len(ins)} and {len(outs)}")
        self.inp, self.out = ins[0], outs[0]
        self.input_shape = hwc(self.inp["shape"])
        self.threads = cfg.threads
        self.include_copies = self.includes_copies = cfg.include_copies
        self._batch = int(self.inp["shape"][0])
        signature = self.inp.get("shape_signature", self.inp["shape"])
        # a batch fixed at conversion stays fixed: XNNPACK cannot reshape such a graph, so run one at a time
        self.batch_ok = len(signature) > 0 and int(signature[0]) == -1
        self._chunk = EVAL_CHUNK if self.batch_ok else self._batch

    def _resize(self, n: int) -> None:
        if n != self._batch:
            self.it.resize_tensor_input(self.inp["index"], [n, *self.inp["shape"][1:]])
            self.it.allocate_tensors()
            self._batch = n

    def _set(self, x: np.ndarray) -> None:
        self._resize(len(x))
        scale, zp = self.inp["quantization"]
        self.it.set_tensor(self.inp["index"], quantize(x, self.inp["dtype"], scale, zp))

    def _get(self) -> np.ndarray:
        scale, zp = self.out["quantization"]
        return dequantize(self.it.get_tensor(self.out["index"]), scale, zp)

    def predict(self, x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(0, len(x), self._chunk):
            self._set(x[i:i + self._chunk])
            self.it.invoke()
            outs.append(self._get())
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)

    def runner(self, x: np.ndarray):
        self._set(x)
        it = self.it
        if not self.include_copies:
            return it.invoke  # exactly what LiteRT's benchmark tool times: the inference call alone
        q = quantize(x, self.inp["dtype"], *self.inp["quantization"])
        i_in, i_out = self.inp["index"], self.out["index"]

        def run():
            it.set_tensor(i_in, q)
            it.invoke()
            return it.get_tensor(i_out)

        return run

    def close(self) -> None:
        with native_stderr():
            self.it = None


def _variants(cfg) -> list:
    return [""]


def _prepare() -> None:
    try:
        tflite_runtime()
    except Unavailable:
        pass


BACKEND = Backend("tflite", ("tflite",), TfliteSession,
                  "TFLite interpreter (ai_edge_litert, else tflite_runtime, else tf.lite)", _variants, _prepare)


def quantization_of(path: Path) -> Optional[tuple]:
    """((in_scale, in_zp, in_dtype), (out_scale, out_zp, out_dtype)) of a .tflite file, read by the interpreter
    without allocating it (CompiledModel does not report quantization parameters)."""
    Interpreter = tflite_runtime()[0]
    with native_stderr():
        it = Interpreter(model_path=str(path))
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    return (*i["quantization"], i["dtype"]), (*o["quantization"], o["dtype"])
