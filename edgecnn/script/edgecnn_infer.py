#!/usr/bin/env python3
"""edgecnn_infer.py: run an edgecnn TFLite model on a device with nothing but numpy and a TFLite runtime.

One file, Python 3.9+. Needs numpy and one TFLite runtime: `ai_edge_litert` (pip install ai-edge-litert),
else `tflite_runtime`, else `tensorflow.lite`; Pillow only to read image files. It imports nothing from
edgecnn; edgecnn imports its preprocessing from here, so training, export calibration and the device
apply exactly the same transform.

    python3 edgecnn_infer.py --model model_int8.tflite digit.png          # manifest.json beside the model
    python3 edgecnn_infer.py --model model_int8.tflite --npz test.npz --json --top-k 3
    python3 edgecnn_infer.py --model model_int8.tflite field_photos/       # one subfolder per class: accuracy
    python3 edgecnn_infer.py --model model_int8.tflite --npz test.npz --bench 200 --warmup 20 --threads 4 --json
    python3 edgecnn_infer.py --model model_int8.tflite --delegate libedgetpu.so.1 digit.png
    python3 edgecnn_infer.py --info                                        # runtime and device, as JSON

Inputs: image files or folders of them (read with Pillow as 8-bit grey or RGB, scaled by 1/255 and resized
to the model's input like training did; a folder with one subfolder per class, named as the model's classes,
is a labelled set and the run reports accuracy), or an .npz with `x` (raw pixels, divided by the manifest's
pixel_max; or already preprocessed float32 NHWC in [0, 1] when the npz holds `preprocessed=1`) and optional
labels `y`.

Python::

    from edgecnn_infer import TfliteModel, read_manifest
    model = TfliteModel("model_int8.tflite", threads=2)
    probs = model.predict(x)  # float32 NHWC in [0, 1] -> dequantized probabilities

Exit status 0 on success, 2 on a user error (one line on stderr): a missing or corrupt model, a wrong
manifest, an unreadable input, a missing runtime.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np

__version__ = "1"

# ---------------------------------------------------------------------------------------------
# Preprocessing: the single implementation shared by training, export calibration and devices.
# ---------------------------------------------------------------------------------------------


def _bilinear_axis(out_len: int, in_len: int):
    """Source positions of a bilinear resize along one axis (half-pixel centres): (lo, hi, weight of hi)."""
    src = (np.arange(out_len, dtype=np.float64) + 0.5) * (in_len / out_len) - 0.5
    src = np.clip(src, 0.0, in_len - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_len - 1)
    return lo, hi, (src - lo).astype(np.float32)


def _bilinear(x: np.ndarray, ys, xs) -> np.ndarray:
    (y0, y1, wy), (x0, x1, wx) = ys, xs
    top = x[:, y0][:, :, x0] * (1 - wx)[None, None, :, None] + x[:, y0][:, :, x1] * wx[None, None, :, None]
    bot = x[:, y1][:, :, x0] * (1 - wx)[None, None, :, None] + x[:, y1][:, :, x1] * wx[None, None, :, None]
    return (top * (1 - wy)[None, :, None, None] + bot * wy[None, :, None, None]).astype(np.float32)


def resize_bilinear(x: np.ndarray, size) -> np.ndarray:
    """Bilinear resize of NHWC float images with half-pixel centres and no antialiasing.

    Matches `tf.image.resize(x, size, "bilinear", antialias=False)` to float rounding, without TF.
    """
    n, h, w, c = x.shape
    oh, ow = int(size[0]), int(size[1])
    if (oh, ow) == (h, w):
        return x
    return _bilinear(x, _bilinear_axis(oh, h), _bilinear_axis(ow, w))


def _read_rows_and_columns(x: np.ndarray, size):
    """The rows and columns of NHWC pixels `x` that a bilinear resize to `size` reads, and the resize's source
    positions in that smaller array. The resize reads at most 2 rows and 2 columns per output pixel and every
    step before it works pixel by pixel, so converting only those gives the same result, bit for bit, without a
    float32 copy of the whole image (145 MB for a 12-megapixel photo; benchmark 5: 0.15 s a photo instead of
    0.20 s, decoding alone 0.08 s)."""
    n, h, w = x.shape[:3]
    ys, xs = _bilinear_axis(int(size[0]), h), _bilinear_axis(int(size[1]), w)
    rows, cols = np.unique(np.concatenate(ys[:2])), np.unique(np.concatenate(xs[:2]))
    x = x[:, rows][:, :, cols]
    ys = (np.searchsorted(rows, ys[0]), np.searchsorted(rows, ys[1]), ys[2])
    xs = (np.searchsorted(cols, xs[0]), np.searchsorted(cols, xs[1]), xs[2])
    return x, ys, xs


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """Convert NHWC images between 1 and 3 channels (ITU-R 601-2 luma, as Pillow's 'L' mode). The luma is
    summed element by element, not by a matrix product, whose rounding depends on the array's memory layout
    (NumPy 2.4 on an AVX-512 CPU: 1 ulp apart for the gathered rows and columns `preprocess` converts)."""
    c = x.shape[-1]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return np.repeat(x, 3, axis=-1)
    if c in (3, 4) and channels == 1:
        r, g, b = np.float32(0.299), np.float32(0.587), np.float32(0.114)
        return (x[..., 0:1] * r + x[..., 1:2] * g + x[..., 2:3] * b).astype(np.float32)
    if c == 4 and channels == 3:
        return x[..., :3]
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


def preprocess(images, prep: dict) -> np.ndarray:
    """Raw pixels -> float32 NHWC in [0, 1], as recorded in a run's config and the export manifest.

    Args:
        images: array (N, H, W) or (N, H, W, C) of raw pixels, values in [0, prep["pixel_max"]].
        prep: {"image_size": [h, w], "channels": c, "pixel_max": m, "resize": "bilinear"}.
    Returns:
        float32 array (N, h, w, c) in [0, 1].
    """
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"images must be (N,H,W) or (N,H,W,C), got shape {x.shape}")
    size = tuple(int(v) for v in prep["image_size"])
    sample = None
    if size != tuple(x.shape[1:3]):
        x, *sample = _read_rows_and_columns(x, size)
    x = x.astype(np.float32) / np.float32(prep["pixel_max"])
    x = to_channels(x, int(prep["channels"]))
    if sample:
        x = _bilinear(x, *sample)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Latency statistics: the keys every bench row uses, local or on a board.
# ---------------------------------------------------------------------------------------------

# The keys of a bench row, defined once: `edgecnn bench` rows (edgecnn.contracts.rows.Row), board rows over SSH
# and this script's --json output all use them (documented in docs/bench.md).
ROW_KEYS = ("artifact", "file", "format", "precision", "backend", "accelerator", "runtime", "device", "threads",
            "batch", "status", "reason", "accuracy", "accuracy_drop", "agreement", "max_abs_diff", "class_drop",
            "worst_class", "size_bytes",
            "load_ms", "first_ms", "latency", "throughput_ips", "peak_rss_mb", "footprint_mb",
            "timing_includes_copies", "arena_bytes", "flash_bytes", "sram_bytes", "npu_ops", "cpu_ops", "est_ms",
            "max_int8_steps", "integrity", "note")
LATENCY_KEYS = ("median_ms", "mean_ms", "std_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "runs")


def latency_stats(seconds) -> dict:
    """Summary of per-run latencies given in seconds: {median_ms, mean_ms, std_ms, p90_ms, p99_ms,
    min_ms, max_ms, runs}."""
    t = np.asarray(seconds, dtype=np.float64) * 1e3
    if t.size == 0:
        return dict({k: None for k in LATENCY_KEYS[:-1]}, runs=0)
    return {
        "median_ms": float(np.median(t)), "mean_ms": float(t.mean()), "std_ms": float(t.std()),
        "p90_ms": float(np.percentile(t, 90)), "p99_ms": float(np.percentile(t, 99)),
        "min_ms": float(t.min()), "max_ms": float(t.max()), "runs": int(t.size),
    }


# ---------------------------------------------------------------------------------------------
# Runtime: the first TFLite interpreter that imports, and what it is.
# ---------------------------------------------------------------------------------------------


class UsageError(Exception):
    """A user error: printed as one line, exit status 2."""


class quiet_native_logs:
    """Send what native code writes to file descriptor 2 to /dev/null for the block (the runtime's INFO lines);
    errors still arrive as Python exceptions. EDGECNN_NATIVE_LOGS=1 lets them through."""

    def __enter__(self):
        self.saved = None
        if os.environ.get("EDGECNN_NATIVE_LOGS") == "1":
            return self
        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:  # no descriptor 2 to silence
            self.saved = None
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        return False


def _version(dist: str, module) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return str(getattr(module, "__version__", "unknown"))


def _ai_edge_litert():
    from ai_edge_litert import interpreter as m

    return m.Interpreter, m.load_delegate, getattr(m, "OpResolverType", None), _version("ai-edge-litert", m)


def _tflite_runtime():
    import tflite_runtime
    from tflite_runtime import interpreter as m

    return m.Interpreter, m.load_delegate, getattr(m, "OpResolverType", None), _version("tflite-runtime",
                                                                                      tflite_runtime)


def _tensorflow():
    import tensorflow as tf

    exp = tf.lite.experimental
    return tf.lite.Interpreter, exp.load_delegate, getattr(exp, "OpResolverType", None), tf.__version__


# name -> (loader, pip package), in the order tried by "auto"
RUNTIMES = {
    "ai_edge_litert": (_ai_edge_litert, "ai-edge-litert"),
    "tflite_runtime": (_tflite_runtime, "tflite-runtime"),
    "tensorflow": (_tensorflow, "tensorflow"),
}


def load_runtime(name: str = "auto"):
    """(Interpreter class, load_delegate, OpResolverType or None, "name version") of the runtime `name`,
    or of the first of RUNTIMES that imports for "auto".

    Raises:
        UsageError: no runtime (or not the one asked for) can be imported.
    """
    names = list(RUNTIMES) if name == "auto" else [name]
    if any(n not in RUNTIMES for n in names):
        raise UsageError(f"unknown runtime '{name}' (choose auto, {', '.join(RUNTIMES)})")
    why = []
    for n in names:
        loader, _ = RUNTIMES[n]
        try:
            interp, load_delegate, resolver, version = loader()
        except Exception as e:  # ImportError, or a numpy ABI mismatch surfacing as another error
            why.append(f"{n}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": "))
            continue
        return interp, load_delegate, resolver, f"{n} {version}"
    if name != "auto":
        raise UsageError(f"runtime {name} is not usable ({why[0]}): pip install {RUNTIMES[name][1]}")
    broken = [w for w in why if "No module named" not in w]  # installed but unusable, e.g. numpy 2 vs tflite_runtime
    tried = "; ".join(broken) if broken else "tried " + ", ".join(RUNTIMES)
    raise UsageError(f"no usable TFLite runtime ({tried}): pip install ai-edge-litert")


def device_info() -> dict:
    """What this runs on: board name (/proc/device-tree/model, else OS and machine), CPU, CPU count, Python."""
    name = None
    for p in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            with open(p, "rb") as f:
                name = f.read().rstrip(b"\0").decode("utf-8", "replace").strip() or None
            break
        except OSError:
            pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(ln.split(":", 1) for ln in f if ":" in ln)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        cpu = fields.get("model name") or fields.get("Model") or fields.get("Hardware") or cpu
    except OSError:
        pass
    return {"device": name or f"{platform.system()} {platform.machine()}", "machine": platform.machine(),
            "cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "hostname": platform.node()}


def parse_delegate(spec: str):
    """'LIB[:key=value,...]' -> (LIB, {key: value})."""
    lib, sep, opts = spec.partition(":")
    if sep and opts and "=" not in opts:  # a path that itself holds ':' and no options
        return spec, {}
    options = {}
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"delegate option '{item}' is not key=value (in --delegate {spec})")
        options[key.strip()] = value.strip()
    return lib, options


def quantize(x: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    """Float [0, 1] -> a model's input dtype (affine quantization when the input is integer).

    Raises:
        ValueError: an integer input without quantization parameters.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.ascontiguousarray(x, dtype=dtype)
    if not scale:
        raise ValueError(f"integer input ({dtype}) without quantization parameters")
    info = np.iinfo(dtype)
    q = np.round(x / np.float32(scale) + zero_point)
    return np.ascontiguousarray(np.clip(q, info.min, info.max).astype(dtype))


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """A model's output -> float32 probabilities (affine dequantization when it is integer).

    Raises:
        ValueError: an integer output without quantization parameters.
    """
    if q.dtype.kind == "f":
        return q.astype(np.float32)
    if not scale:
        raise ValueError(f"integer output ({q.dtype}) without quantization parameters")
    return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


# The TFLite CPU kernel sets, as `interpreter_options` names them, and this script's flags for each.
KERNEL_FLAGS = {"xnnpack": [], "builtin": ["--no-xnnpack"], "reference": ["--reference-kernels"]}


def interpreter_options(path: str, threads: int, delegate, xnnpack: bool, load, resolver, runtime: str,
                        reference: bool = False):
    """(Interpreter keyword arguments, accelerator name) for a delegate spec, or the CPU kernels: "xnnpack"
    (LiteRT's default delegate), "builtin" (XNNPACK off: the builtin optimized kernels) or "reference"
    (`reference`: the builtin reference kernels, whose arithmetic TensorFlow Lite Micro shares; slow). The
    three round int8 arithmetic differently: on a sensitive model they disagree on whole predictions.

    `load(lib, options)` loads an external delegate; `resolver` is the runtime's OpResolverType (None when it
    has none, so XNNPACK cannot be turned off). Shared with `edgecnn bench`'s tflite backend.
    """
    kwargs = {"model_path": path, "num_threads": threads}
    if delegate:
        lib, options = parse_delegate(delegate)
        kwargs["experimental_delegates"] = [load(lib, options)]
        return kwargs, f"delegate:{os.path.basename(lib)}"
    if reference or not xnnpack:
        if resolver is None:
            raise UsageError(f"{runtime} cannot turn the default XNNPACK delegate off")
        if reference:
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_REF
            return kwargs, "reference"
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        return kwargs, "builtin"
    return kwargs, "xnnpack"


# ---------------------------------------------------------------------------------------------
# The model: quantize in, invoke, dequantize out.
# ---------------------------------------------------------------------------------------------


class TfliteModel:
    """A .tflite classifier with one input (NHWC) and one output (probabilities), run one image at a time."""

    def __init__(self, path: str, threads: int = 1, runtime: str = "auto", delegate=None, xnnpack: bool = True,
                 reference: bool = False):
        Interpreter, load_delegate, resolver, self.runtime = load_runtime(runtime)
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such model file")
        self.path, self.threads = path, threads
        kwargs, self.accelerator = interpreter_options(
            path, threads, delegate, xnnpack, lambda lib, options: _load_delegate(load_delegate, lib, options),
            resolver, self.runtime, reference)
        t0 = time.perf_counter()
        try:
            with quiet_native_logs():  # "INFO: Created TensorFlow Lite XNNPACK delegate" on every run
                self.it = Interpreter(**kwargs)
            ins, outs = self.it.get_input_details(), self.it.get_output_details()
            if len(ins) != 1 or len(outs) != 1:
                raise UsageError(f"{path}: expects a model with 1 input and 1 output, got {len(ins)} and {len(outs)}")
            if len(ins[0]["shape"]) != 4:
                raise UsageError(f"{path}: expects an NHWC image input, got shape {list(ins[0]['shape'])}")
            if ins[0]["shape"][0] != 1:
                self.it.resize_tensor_input(ins[0]["index"], [1, *ins[0]["shape"][1:]])
            with quiet_native_logs():
                self.it.allocate_tensors()
        except UsageError:
            raise
        except Exception as e:  # ValueError for a corrupt flatbuffer, RuntimeError for unsupported ops
            raise UsageError(f"{path}: not a usable TFLite model ({_first_line(e)})") from None
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self.inp, self.out = self.it.get_input_details()[0], self.it.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self.inp["shape"][1:])  # (h, w, c)
        self.num_classes = int(np.prod(self.out["shape"][1:]))
        self.input_dtype = np.dtype(self.inp["dtype"])

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float [0, 1] -> the input tensor's dtype (affine quantization for integer inputs)."""
        try:
            return quantize(x, self.input_dtype, *self.inp["quantization"])
        except ValueError as e:
            raise UsageError(f"{self.path}: {e}") from None

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """The output tensor -> float32 probabilities."""
        try:
            return dequantize(q, *self.out["quantization"])
        except ValueError as e:
            raise UsageError(f"{self.path}: {e}") from None

    def set_input(self, x1: np.ndarray) -> None:
        self.it.set_tensor(self.inp["index"], self.quantize(x1))

    def output(self) -> np.ndarray:
        return self.dequantize(self.it.get_tensor(self.out["index"])).reshape(-1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32 NHWC in [0, 1] -> (N, classes) float32 probabilities."""
        probs = np.zeros((len(x), self.num_classes), np.float32)
        for i in range(len(x)):
            self.set_input(x[i:i + 1])
            self.it.invoke()
            probs[i] = self.output()
        return probs

    def check(self, prep: dict, class_names, where: str, entry=None) -> None:
        """Raise UsageError when the preprocessing, the labels or the manifest entry's I/O do not fit this model."""
        name = os.path.basename(self.path)
        check_fit(prep, class_names, self.input_shape, self.num_classes, where, name)
        if entry:
            check_io(entry, [_tensor(self.inp)], [_tensor(self.out)], where, name)


def _tensor(d: dict) -> dict:
    scale, zp = d["quantization"]
    return {"dtype": np.dtype(d["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zp)} if scale else None}


def check_fit(prep: dict, class_names, input_shape, num_classes: int, where: str, name: str) -> None:
    """The manifest's preprocessing and class names against a model's input shape (h, w, c) and class count.
    The one check: this script, `edgecnn bench` and `edgecnn predict` all make it.

    Raises:
        UsageError: the image size, channels or number of classes differ.
    """
    h, w = (int(v) for v in prep["image_size"])
    want = (h, w, int(prep["channels"]))
    have = tuple(None if d is None else int(d) for d in input_shape)
    if len(have) != 3 or any(b is not None and a != b for a, b in zip(want, have)):
        raise UsageError(f"{where} gives {_hwc(want)} images but {name} takes {_hwc(have)} "
                         "(wrong manifest for this model?)")
    if class_names is not None and len(class_names) != int(num_classes):
        raise UsageError(f"{where} names {len(class_names)} classes but {name} outputs {num_classes} "
                         "(wrong manifest for this model?)")


def check_io(entry: dict, inputs, outputs, where: str, name: str) -> None:
    """A manifest entry's input/output dtypes and quantization against the model's own (tensor records with
    "dtype" and "quantization" {"scale", "zero_point"} or None).

    Raises:
        UsageError: a dtype, scale or zero point differs: the manifest describes another model.
    """
    for kind, have_list in (("input", inputs), ("output", outputs)):
        want_list = entry.get(kind + "s") or []
        if not want_list or not have_list:
            continue
        want, have = want_list[0], have_list[0]
        if want.get("dtype") and want["dtype"] != have["dtype"]:
            raise UsageError(f"{where} records a {want['dtype']} {kind} but {name} has {have['dtype']} "
                             "(wrong manifest for this model?)")
        wq, hq = want.get("quantization"), have.get("quantization")
        if bool(wq) != bool(hq) or (wq and hq and (wq["zero_point"] != hq["zero_point"] or
                                                   abs(wq["scale"] - hq["scale"]) > 1e-6 * abs(hq["scale"]))):
            raise UsageError(f"{where} records {kind} quantization {wq} but {name} has {hq} "
                             "(wrong manifest for this model?)")


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def predictions_digest(pred) -> str:
    """Hex SHA-256 of top-1 predictions (int64 little-endian, in input order): the manifest records it per kernel
    set on the test split, so a device given the same split can tell that it predicts exactly what export saw."""
    return hashlib.sha256(np.asarray(pred, dtype="<i8").tobytes()).hexdigest()


INTEGRITY = ("verified", "modified (allowed)", "unverified")
REFUSAL = "not running it (--allow-modified overrides)"  # ends the one-line refusal of a modified model


def integrity_refusal(reason) -> bool:
    """Whether an error line is `check_integrity`'s refusal (how a bench reads a board's failed run)."""
    return REFUSAL in (reason or "")


def check_integrity(path: str, entry, where: str, allow_modified: bool = False) -> str:
    """Whether `path` is the file its manifest entry describes, before anything opens it.

    Returns:
        "verified" (sha256 matches), "modified (allowed)" (differs, allow_modified), "unverified" (no entry
        or no hash to compare with).
    Raises:
        UsageError: the sha256 differs and allow_modified is False.
    """
    want = (entry or {}).get("sha256")
    if not want:
        return "unverified"
    have = sha256_of(path)
    if have == want:
        return "verified"
    if allow_modified:
        return "modified (allowed)"
    raise UsageError(f"{path}: sha256 {have[:12]}... differs from {where}'s {want[:12]}... (the file was modified "
                     f"or comes from another export); {REFUSAL}")


def _load_delegate(load_delegate, lib: str, options: dict):
    # A delegate that fails to load leaves an object whose __del__ raises (LiteRT 2.3): keep that quiet.
    import gc

    hook, sys.unraisablehook = sys.unraisablehook, lambda _: None
    try:
        return load_delegate(lib, options)
    except Exception as e:
        error = _first_line(e)
    finally:
        gc.collect()
        sys.unraisablehook = hook
    raise UsageError(f"delegate {lib} did not load ({error})")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _hwc(shape) -> str:
    return "x".join(str(v) for v in shape)


# ---------------------------------------------------------------------------------------------
# Manifest and inputs.
# ---------------------------------------------------------------------------------------------

PREP_KEYS = ("image_size", "channels", "pixel_max")


def read_manifest(path: str) -> dict:
    """Read an edgecnn export manifest and check the keys this script uses (`validate_manifest`).

    Raises:
        UsageError: unreadable, not JSON, or missing class_names / preprocessing keys.
    """
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except OSError as e:
        raise UsageError(f"{path}: cannot read manifest ({e.strerror or e})") from None
    except ValueError as e:
        raise UsageError(f"{path}: not a JSON manifest ({e})") from None
    return validate_manifest(m, path)


def validate_manifest(m, where: str) -> dict:
    """The checks every reader of a manifest makes (this script, and edgecnn's `contracts.manifest`): a JSON
    object with class names and a valid preprocessing record; artifact files are plain names in its folder.

    Raises:
        UsageError: what is missing or invalid, naming `where`.
    """
    if not isinstance(m, dict):
        raise UsageError(f"{where}: not an edgecnn manifest (a JSON object with preprocessing and class_names)")
    prep = m.get("preprocessing")
    missing = [k for k in PREP_KEYS if not isinstance(prep, dict) or k not in prep]
    missing = [f"preprocessing.{k}" for k in missing] + ([] if isinstance(m.get("class_names"), list)
                                                         else ["class_names"])
    if missing:
        raise UsageError(f"{where}: manifest lacks {', '.join(missing)} (not an edgecnn export manifest?)")
    size = prep["image_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)) \
            or prep["channels"] not in (1, 3) or not (isinstance(prep["pixel_max"], (int, float))
                                                      and prep["pixel_max"] > 0):
        raise UsageError(f"{where}: manifest preprocessing {prep} is not valid (image_size [h, w], channels 1 or 3, "
                         "pixel_max > 0)")
    if prep.get("orientation", "stored") not in ORIENTATIONS:
        raise UsageError(f"{where}: manifest preprocessing.orientation is {prep['orientation']!r}; expected one of "
                         f"{', '.join(ORIENTATIONS)}")
    arts = m.get("artifacts", {})
    if not isinstance(arts, dict) or not all(isinstance(e, dict) for e in arts.values()):
        raise UsageError(f"{where}: manifest 'artifacts' must map names to entries")
    for name, e in arts.items():
        f = e.get("file", name)
        if not isinstance(f, str) or not f or f in (".", "..") or "/" in f or "\\" in f or f != os.path.basename(f):
            raise UsageError(f"{where}: artifact {name!r} names file {f!r}: entries must be plain file names in the "
                             "manifest's folder")
    return m


def manifest_figures(entry: dict, accelerator: str):
    """The parity the manifest recorded for this artifact on these kernels ("xnnpack", "builtin", "reference"):
    `parity` when export verified it on them, else `parity_kernels[accelerator]`; None when it has none."""
    if str(entry.get("runtime") or "").endswith(f"({accelerator})"):
        rec = entry.get("parity")
    else:
        rec = (entry.get("parity_kernels") or {}).get(accelerator)
    return rec if isinstance(rec, dict) and isinstance(rec.get("accuracy"), (int, float)) else None


def manifest_entry(manifest: dict, model_path: str):
    """(artifact name, entry) of the manifest artifact whose file is the model's name, or (None, {})."""
    name = os.path.basename(model_path)
    for key, entry in (manifest.get("artifacts") or {}).items():
        if isinstance(entry, dict) and entry.get("file") == name:
            return key, entry
    return None, {}


GREY_MODES = ("1", "L", "P", "LA", "La", "PA")  # palette images (P, PA) are grey when every palette colour is
COLOUR_MODES = ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def is_grey(im) -> bool:
    """Whether a Pillow image holds grey pixels, from its header: its mode, and for a palette image (a GIF, a PNG
    made smaller by pngquant or TinyPNG) its palette: grey when every colour in it is (R = G = B), else RGB, as
    Keras' loader reads it. Palette images were all read as grey before, which turned a colour GIF grey."""
    if im.mode not in ("P", "PA"):
        return im.mode in GREY_MODES
    palette = im.palette
    raw = getattr(palette, "palette", None) if palette is not None else None
    width = {"RGB": 3, "RGBA": 4}.get(getattr(palette, "mode", None))
    if not raw or not width or len(raw) % width:
        return True
    rgb = np.frombuffer(bytes(raw), np.uint8).reshape(-1, width)[:, :3]
    return bool(np.all(rgb == rgb[:, :1]))


def check_mode(mode: str, path: str) -> None:
    """Pillow modes that hold 8-bit grey or colour pass; the others (16-bit, 32-bit integer, float) are refused.

    Raises:
        UsageError: a mode with more than 8 bits per channel.
    """
    if mode not in GREY_MODES + COLOUR_MODES:
        raise UsageError(f"{path}: {mode} images ({_mode_words(mode)}) cannot be converted to 8-bit "
                         "grey or RGB without choosing a scale; save it as an 8-bit PNG or JPEG")


# How an image file's pixels are laid out before preprocessing (the manifest's preprocessing.orientation):
# "exif" turns a photo upright as a viewer shows it (its EXIF Orientation tag: a phone held upright stores the
# sensor's sideways pixels and a tag); "stored" takes the pixels as stored, as Keras' image_dataset_from_directory
# and torchvision's ImageFolder read them. A manifest without the key is "stored" (runs before the key existed).
ORIENTATIONS = ("exif", "stored")
EXIF_ORIENTATION = 0x0112
TURNS_SIDEWAYS = (5, 6, 7, 8)  # the tags whose upright image has height and width swapped


def exif_orientation(im) -> int:
    """The EXIF Orientation tag (1-8) a file's header holds, read without decoding its pixels; 1 when it has none.
    A TIFF's is 1: Pillow applies a TIFF's orientation itself when it opens one."""
    raw = im.info.get("exif") if im.format != "TIFF" else None
    if not raw:
        return 1
    try:
        from PIL import Image

        exif = Image.Exif()
        exif.load(raw)
        tag = int(exif.get(EXIF_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block: the pixels as stored
        return 1
    return tag if 1 <= tag <= 8 else 1


def upright(a: np.ndarray, tag: int) -> np.ndarray:
    """Pixels (h, w[, c]) as stored -> as a viewer shows them under EXIF Orientation `tag` (what Pillow's
    ImageOps.exif_transpose does)."""
    if tag in (5, 7):  # transpose / transverse: mirrored across a diagonal
        a = np.swapaxes(a if tag == 5 else a[::-1, ::-1], 0, 1)
    elif tag in (2, 4):  # mirrored left-right / top-bottom
        a = a[:, ::-1] if tag == 2 else a[::-1]
    else:
        a = np.rot90(a, {1: 0, 3: 2, 6: 3, 8: 1}[tag])  # counter-clockwise quarter turns
    return np.ascontiguousarray(a)


def image_array(im, path: str, orientation: str = "stored") -> np.ndarray:
    """A Pillow image -> uint8 (h, w) grey or (h, w, 3) RGB: the one rule for image files, in training, predict
    and here. Modes with more than 8 bits per channel are refused, never squashed. With orientation "exif", the
    image is turned upright by its EXIF Orientation tag (read from the header before decoding).

    Raises:
        UsageError: a 16-bit, 32-bit integer or float image.
    """
    check_mode(im.mode, path)
    tag = exif_orientation(im) if orientation == "exif" else 1
    grey = is_grey(im)
    if im.mode in ("P", "PA"):  # by way of RGBA: Pillow warns converting a palette with transparency to L or RGB
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        a = np.ascontiguousarray(rgba[..., 0] if grey else rgba[..., :3])  # a grey palette's R: its grey level
    else:
        mode = "L" if grey else "RGB"
        a = np.asarray(im if im.mode == mode else im.convert(mode), dtype=np.uint8)  # convert() to its own mode copies
    return upright(a, tag) if tag != 1 else a


def check_pixels(x: np.ndarray, where: str) -> None:
    """Pixels must be numbers, finite and not negative: the one rule for .npz data in training, predict and here.

    Raises:
        UsageError: an object or string array, NaN / infinite values, or negative values (normalized data).
    """
    if x.dtype.kind not in "uifb":
        raise UsageError(f"{where}: pixels must be numbers, got dtype {x.dtype}")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise UsageError(f"{where}: has NaN or infinite pixel values")
    low = float(x.min()) if x.size and x.dtype.kind in "if" else 0.0
    if low < 0:  # preprocessing clips at 0: half of [-1, 1] would vanish
        raise UsageError(f"{where}: has negative pixel values (min {low:.3g}): it looks normalized; "
                         f"pass the pixels before normalizing (0-255, or floats in [0, 1]), edgecnn scales them")


def check_labels(y: np.ndarray, num_classes: int, where: str) -> None:
    """Labels must be integers in 0..num_classes-1: the one rule in training, bench and here.

    Raises:
        UsageError: a label outside the classes.
    """
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise UsageError(f"{where}: labels outside 0..{num_classes - 1} (found {int(y.min())}..{int(y.max())}; "
                         f"{num_classes} classes)")


# what an image folder holds, in training and here (Keras' image_dataset_from_directory reads the first five)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
HEIF_SUFFIXES = (".heic", ".heif")  # an iPhone's photos: read with the pillow-heif plugin where it is installed
NOT_DATA = ("__MACOSX",)  # folders archive tools add (macOS' resource forks), never images
_HEIF: list = []  # [whether pillow-heif is installed and registered with Pillow], once a process asks


def heif_readable() -> bool:
    """Whether HEIC/HEIF files can be read here: pillow-heif installed (`pip install pillow-heif`), registered with
    Pillow on first call. libheif turns a photo upright by its container's rotation and pillow-heif resets the
    EXIF tag, so a HEIC photo arrives upright whatever the orientation asked (as a TIFF does in Pillow)."""
    if not _HEIF:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _HEIF.append(True)
        except Exception:  # not installed, or a libheif that does not load
            _HEIF.append(False)
    return _HEIF[0]


def image_suffixes() -> tuple:
    """The suffixes of image files read here: IMAGE_SUFFIXES, and HEIF_SUFFIXES with pillow-heif."""
    return IMAGE_SUFFIXES + (HEIF_SUFFIXES if heif_readable() else ())


def heif_hint(names) -> str:
    """What to do with HEIC/HEIF photos among `names` (file names or suffixes) where they cannot be read, or ""."""
    found = sorted({s for s in (os.path.splitext(n)[1].lower() or n.lower() for n in names) if s in HEIF_SUFFIXES})
    if not found or heif_readable():
        return ""
    return (f"{'/'.join(found)} files are HEIF photos (an iPhone's default format), which need the pillow-heif "
            f"package (pip install pillow-heif) or converting to JPEG (`sips -s format jpeg` on a Mac)")


def open_image(path):
    """Pillow's Image.open, with the HEIF plugin registered first for a .heic/.heif file (in every process that
    reads one: tuning workers, the board)."""
    from PIL import Image

    if os.path.splitext(str(path))[1].lower() in HEIF_SUFFIXES:
        heif_readable()
    return Image.open(path)


def is_image_name(name: str) -> bool:
    """An image file by its name: an image suffix and not hidden (macOS writes a '._NAME.jpg' resource fork
    beside each image on non-Mac disks and in zip files; it is not an image)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in image_suffixes()


def is_data_folder(name: str) -> bool:
    """A folder that can hold images: not hidden and not an archive tool's (__MACOSX)."""
    return not name.startswith(".") and name not in NOT_DATA


def walk_images(folder: str) -> tuple:
    """(the image files under `folder`, subfolders included, sorted; the names of what else it holds: files that
    are not images, and "NAME/" for each hidden or archive folder not entered)."""
    images, other = [], []
    for root, folders, files in os.walk(folder):
        other += [d + "/" for d in folders if not is_data_folder(d)]
        folders[:] = [d for d in folders if is_data_folder(d)]
        images += [os.path.join(root, f) for f in files if is_image_name(f)]
        other += [f for f in files if not is_image_name(f)]
    return sorted(images), other


def image_files(paths) -> list:
    """Image paths as given, with each folder among them replaced by the image files under it (sorted, subfolders
    included: a class-per-folder test set classifies as it is).

    Raises:
        UsageError: a folder that holds no image file.
    """
    out = []
    for path in map(str, paths):
        if not os.path.isdir(path):
            out.append(path)
            continue
        found, other = walk_images(path)
        if not found:
            hint = heif_hint(other)
            raise UsageError(f"{path}: a folder with no image files ({', '.join(image_suffixes())})"
                             + (f"; its {hint}" if hint else ""))
        out += found
    return out


def folder_labels(paths, files, class_names):
    """(labels of `files` or None, why not): when every path is a folder laid out as for training (each image in
    a subfolder named after one of the model's classes: a held-out or field set), each image is labelled by its
    class folder, so the run reports accuracy; None otherwise, with a reason when a layout looked meant."""
    roots = [os.path.abspath(p) for p in map(str, paths)]
    if not roots or not all(os.path.isdir(r) for r in roots):
        return None, None
    index = {str(c): i for i, c in enumerate(class_names)}
    for r in roots:
        sub = [d for d in os.listdir(r) if os.path.isdir(os.path.join(r, d)) and is_data_folder(d)]
        if not any(d in index for d in sub):
            return None, None  # a plain folder of photos
        unknown = sorted(d for d in sub if d not in index)
        if unknown:
            return None, (f"{r}: subfolder(s) {', '.join(repr(d) for d in unknown[:3])} are not classes of the "
                          f"model, so its images are not labelled")
    labels = []
    for f in files:
        f = os.path.abspath(f)
        root = next((r for r in roots if f.startswith(r + os.sep)), None)
        top = os.path.relpath(f, root).split(os.sep)[0] if root else None
        if top not in index or top == os.path.relpath(f, root):  # an image beside the class folders
            return None, f"{f}: not in a class folder, so the images are not labelled"
        labels.append(index[top])
    return np.asarray(labels, np.int64), None


IMAGE_CHUNK = 256  # image files read (and preprocessed) at a time: 154 MB of float32 at 224x224x3


def read_image(path: str, prep: dict, resize: bool = True) -> np.ndarray:
    """An image file -> float32 (h, w, c) in [0, 1]: 8-bit grey or RGB as training read image folders,
    scaled by 1/255, converted to the model's channels and resized (bilinear) to its input size.

    Raises:
        UsageError: no Pillow, an unreadable file, a mode with more than 8 bits per channel, or (with
        resize=False) a size that differs from the model's.
    """
    try:
        import PIL.Image  # noqa: F401  (open_image's)
    except ImportError:
        raise UsageError("reading image files needs Pillow: pip install pillow (or pass --npz)") from None
    try:
        with open_image(path) as im:
            a = image_array(im, path, prep.get("orientation", "stored"))
    except UsageError:
        raise
    except FileNotFoundError:
        raise UsageError(f"{path}: no such image file") from None
    except Exception as e:  # UnidentifiedImageError, truncated files, decoder errors
        hint = heif_hint([path])
        raise UsageError(f"{path}: " + (hint if hint else f"not a readable image ({_first_line(e)})")) from None
    h, w = (int(v) for v in prep["image_size"])
    if not resize and a.shape[:2] != (h, w):
        raise UsageError(f"{path}: image is {a.shape[0]}x{a.shape[1]} but the model takes {h}x{w} "
                         "(resize it, or drop --no-resize)")
    return preprocess(a[None], dict(prep, pixel_max=255.0))[0]


def _mode_words(mode: str) -> str:
    return "32-bit float" if mode == "F" else "16-bit" if "16" in mode else "32-bit integer" if mode == "I" else mode


def read_npz(path: str, prep: dict, input_shape):
    """An .npz -> (x float32 NHWC in [0, 1], y int64 or None).

    `x` (or `x_test`) holds raw pixels divided by prep["pixel_max"], or preprocessed float32 NHWC when the
    npz has `preprocessed=1`; `y` (or `y_test`) holds integer labels.

    Raises:
        UsageError: unreadable file, no images, shapes that do not fit the model, labels of another length.
    """
    try:
        z = np.load(path, allow_pickle=False)
        keys = set(z.files)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except Exception as e:
        raise UsageError(f"{path}: not a readable .npz ({_first_line(e)})") from None
    xk = "x" if "x" in keys else "x_test" if "x_test" in keys else None
    if xk is None:
        raise UsageError(f"{path}: no 'x' array (keys: {', '.join(sorted(keys)) or 'none'})")
    yk = {"x": "y", "x_test": "y_test"}[xk]
    try:
        x = z[xk]
        y = z[yk].reshape(-1) if yk in keys else None
    except ValueError as e:  # object arrays need pickle, which is never allowed
        raise UsageError(f"{path}: cannot read its arrays ({_first_line(e)}); save numbers, not objects") from None
    check_pixels(x, f"{path} '{xk}'")
    if y is not None:
        if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.isfinite(y)) and
                                             np.all(y == np.round(y))):
            raise UsageError(f"{path}: labels '{yk}' must be integers, got {y.dtype}")
        y = y.astype(np.int64)
    preprocessed = "preprocessed" in keys and bool(np.asarray(z["preprocessed"]).reshape(-1)[0])
    if preprocessed:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3 and input_shape[-1] == 1:
            x = x[..., None]
        if tuple(x.shape[1:]) != tuple(input_shape):
            raise UsageError(f"{path}: preprocessed images are {_hwc(x.shape[1:])} but the model takes "
                             f"{_hwc(input_shape)}")
    else:
        if not prep.get("pixel_max"):
            raise UsageError(f"{path}: raw pixels need their scale: pass --pixel-max (a white pixel's value) or "
                             "--manifest")
        if x.dtype.kind not in "uif" or x.ndim not in (3, 4):
            raise UsageError(f"{path}: '{xk}' must be (N,H,W) or (N,H,W,C) numeric pixels, got {x.dtype} "
                             f"{list(x.shape)}")
        try:
            x = preprocess(x, prep)
        except ValueError as e:
            raise UsageError(f"{path}: {e}") from None
    if y is not None and len(y) != len(x):
        raise UsageError(f"{path}: {len(x)} images but {len(y)} labels")
    return x, y


# ---------------------------------------------------------------------------------------------
# Timing and the command line.
# ---------------------------------------------------------------------------------------------


def time_runs(fn, warmup_runs: int = 1, warmup_min_s: float = 0.5, runs: int = 50, min_s: float = 1.0,
              max_s: float = 30.0) -> list:
    """Call `fn` for warm-up, then time each call; returns the per-call seconds of the timed runs.

    TFLite `benchmark_model`'s rule, the same for `edgecnn bench` and this script on a board: warm-up of at
    least `warmup_runs` calls and `warmup_min_s` seconds; then timed calls until both `runs` calls and `min_s`
    seconds are done, stopping at `max_s` seconds (at least one call is always timed). Each call is timed
    alone with time.perf_counter(), as LiteRT's benchmark_litert_model.py does.
    """
    clock = time.perf_counter
    start, n = clock(), 0
    while n < warmup_runs or clock() - start < warmup_min_s:
        fn()
        n += 1
        if clock() - start >= max_s:
            break
    times = []
    start = clock()
    while True:
        t0 = clock()
        fn()
        times.append(clock() - t0)
        elapsed = clock() - start
        if (len(times) >= runs and elapsed >= min_s) or elapsed >= max_s:
            return times


def bench(model: TfliteModel, x1: np.ndarray, runs: int, warmup: int, min_s: float = 0.0,
          warmup_min_s: float = 0.0, max_s: float = 1e9) -> dict:
    """first_ms, then warm-up and timed invocations on one input (`time_runs`); only invoke() is timed,
    as LiteRT's benchmark tool does (tensor copies are outside the timing)."""
    model.set_input(x1)
    invoke, clock = model.it.invoke, time.perf_counter
    t0 = clock()
    invoke()
    first_ms = (clock() - t0) * 1e3
    times = time_runs(invoke, warmup_runs=warmup, warmup_min_s=warmup_min_s, runs=runs, min_s=min_s, max_s=max_s)
    return {"first_ms": first_ms, "latency": latency_stats(times)}


def peak_rss_mb():
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="edgecnn_infer.py", description="Classify images with an edgecnn TFLite model (numpy + a TFLite "
        "runtime; no TensorFlow needed).")
    p.add_argument("images", nargs="*", help="image files or folders of them (PNG, JPEG, ...; needs Pillow)")
    p.add_argument("--model", help="the .tflite file")
    p.add_argument("--manifest", help="export manifest (default: manifest.json beside the model)")
    p.add_argument("--npz", help="an .npz with x (raw pixels, or preprocessed=1 floats) and optional labels y")
    p.add_argument("--image-size", nargs=2, type=int, metavar=("H", "W"),
                   help="without a manifest: input size (default: the model's)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="without a manifest: 1 or 3 (default: the model's)")
    p.add_argument("--pixel-max", type=float, help="without a manifest: value of a white pixel in --npz x")
    p.add_argument("--orientation", choices=ORIENTATIONS,
                   help="image files: exif turns photos upright by their EXIF tag, stored takes the pixels as stored "
                        "(default: the manifest's, else stored)")
    p.add_argument("--no-resize", action="store_true", help="reject image files whose size differs from the model's")
    p.add_argument("--top-k", type=int, default=3, help="labels to show per input (default 3, as edgecnn predict)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--probs", action="store_true", help="with --json: include every probability")
    p.add_argument("--bench", type=int, default=0, metavar="N", help="time N inferences (after --warmup)")
    p.add_argument("--warmup", type=int, default=10, metavar="W", help="untimed inferences before --bench")
    p.add_argument("--min-time", type=float, default=0.0, metavar="S", help="with --bench: time for at least S seconds")
    p.add_argument("--warmup-time", type=float, default=0.0, metavar="S", help="warm up for at least S seconds")
    p.add_argument("--max-time", type=float, default=1e9, metavar="S", help="with --bench: stop timing after S seconds")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the interpreter (default 1)")
    p.add_argument("--delegate", metavar="LIB[:key=value,...]", help="external delegate, e.g. libedgetpu.so.1")
    p.add_argument("--no-xnnpack", action="store_true", help="builtin kernels instead of the default XNNPACK")
    p.add_argument("--reference-kernels", action="store_true",
                   help="the builtin reference kernels (what TFLite Micro computes; slow)")
    p.add_argument("--runtime", default="auto", choices=("auto", *RUNTIMES), help="TFLite runtime to use")
    p.add_argument("--allow-modified", action="store_true",
                   help="run a model whose sha256 differs from its manifest entry (the row says so)")
    p.add_argument("--info", action="store_true", help="print the runtime and device as JSON and exit")
    a = p.parse_args(argv)
    if not a.info and not a.model:
        p.error("--model is required")
    if a.images and a.npz:
        p.error("give image files or --npz, not both")
    if a.top_k < 1 or a.bench < 0 or a.warmup < 0 or a.threads < 1:
        p.error("--top-k and --threads must be >= 1, --bench and --warmup >= 0")
    if not a.info and not (a.images or a.npz or a.bench):
        p.error("nothing to do: give image files, --npz or --bench N")
    return a


def _manifest(a: argparse.Namespace):
    """(manifest or None, its path) from --manifest or manifest.json beside the model."""
    path = a.manifest or os.path.join(os.path.dirname(os.path.abspath(a.model)), "manifest.json")
    return (read_manifest(path) if a.manifest or os.path.isfile(path) else None), path


def _preprocessing(a: argparse.Namespace, model: TfliteModel, manifest, path: str, entry):
    """(prep, class_names) from the manifest and the command line, checked against the model."""
    prep = dict(manifest["preprocessing"]) if manifest else {
        "image_size": list(model.input_shape[:2]), "channels": model.input_shape[2], "pixel_max": None,
        "resize": "bilinear"}
    if a.image_size:
        prep["image_size"] = list(a.image_size)
    if a.channels:
        prep["channels"] = a.channels
    if a.pixel_max:
        prep["pixel_max"] = a.pixel_max
    if a.orientation:
        prep["orientation"] = a.orientation
    where = os.path.basename(path) if manifest else "--image-size/--channels"
    class_names = list(manifest["class_names"]) if manifest else None
    model.check(prep, class_names, where, entry)
    return prep, class_names or [str(i) for i in range(model.num_classes)]


def run(a: argparse.Namespace) -> dict:
    """Everything the command does, as the dict it prints."""
    info = device_info()
    if a.info:
        return dict(info, runtime=load_runtime(a.runtime)[3], script_version=__version__)
    if not os.path.isfile(a.model):
        raise UsageError(f"{a.model}: no such model file")
    manifest, mpath = _manifest(a)
    artifact, entry = manifest_entry(manifest, a.model) if manifest else (None, {})
    integrity = check_integrity(a.model, entry, os.path.basename(mpath), a.allow_modified)  # before opening it
    model = TfliteModel(a.model, threads=a.threads, runtime=a.runtime, delegate=a.delegate,
                        xnnpack=not a.no_xnnpack, reference=a.reference_kernels)
    prep, class_names = _preprocessing(a, model, manifest, mpath, entry)
    names, y, why = [], None, None
    if a.npz:
        x, y = read_npz(a.npz, prep, model.input_shape)
        if y is not None:
            check_labels(y, model.num_classes, a.npz)
        names = [f"{os.path.basename(a.npz)}[{i}]" for i in range(len(x))]
        chunks = [x]
    elif a.images:
        names = image_files(a.images)
        y, why = folder_labels(a.images, names, class_names)
        x = read_image(names[0], prep, resize=not a.no_resize)[None]  # the timed input

        def read_chunks():  # IMAGE_CHUNK files at a time: a board never holds a whole folder as float32
            for s in range(0, len(names), IMAGE_CHUNK):
                yield np.stack([read_image(f, prep, resize=not a.no_resize) for f in names[s:s + IMAGE_CHUNK]])

        chunks = read_chunks()
    else:
        x = np.zeros((0, *model.input_shape), np.float32)
        chunks = [x]
    notes = [why] if why else []
    if integrity != "verified":
        notes.append("the file differs from its manifest's sha256 (--allow-modified)" if integrity.startswith(
            "modified") else "unverified: no manifest entry with a sha256 for this file")
    timing = bench(model, x[:1] if len(x) else np.full((1, *model.input_shape), 0.5, np.float32),
                   a.bench, a.warmup, a.min_time, a.warmup_time, a.max_time) if a.bench else {}
    probs = np.concatenate([model.predict(c) for c in chunks]) if names else model.predict(x)
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    k = min(a.top_k, model.num_classes)
    results = []
    for name, p in zip(names, probs):
        top = np.argsort(-p, kind="stable")[:k]
        results.append({"input": name, "label": class_names[top[0]], "index": int(top[0]),
                        "confidence": float(p[top[0]]),
                        "top_k": [{"label": class_names[i], "index": int(i), "confidence": float(p[i])} for i in top]})
    if y is not None and not a.npz:  # labelled by class folder: each result says its class
        for r, t in zip(results, y):
            r["true_label"] = class_names[int(t)]
    accuracy = float(np.mean(pred == y)) if y is not None and len(y) else None
    expected = manifest_figures(entry, model.accelerator) if len(pred) else None
    if expected is not None and expected.get("n") != len(pred):
        expected = None  # figures of another image set (the manifest's are on the test split)
    same = None  # whether the top-1 predictions are the ones export recorded for these kernels
    if expected is not None and expected.get("predictions_sha256"):
        same = predictions_digest(pred) == expected["predictions_sha256"]
        if not same:
            notes.append(f"top-1 predictions differ from the ones export recorded for the {model.accelerator} kernels "
                         f"on {len(pred)} images: not the export's test split, or not the same int8 rounding "
                         "(--reference-kernels is bit-exact across machines)")
    if expected is not None and accuracy is not None and abs(expected["accuracy"] - accuracy) > 1e-9:
        notes.append(f"accuracy {accuracy:.4f} differs from the manifest's {expected['accuracy']:.4f} for these "
                     f"kernels on {expected['n']} images: not the export's test split, or not the arithmetic "
                     "export verified")
    out = dict.fromkeys(ROW_KEYS)  # the bench row, then what only this script reports
    out.update({
        "artifact": artifact or os.path.splitext(os.path.basename(a.model))[0],
        "file": os.path.basename(a.model), "format": "tflite",
        "precision": entry.get("precision") or ("int8" if model.input_dtype.kind in "iu" else "fp32"),
        "backend": "tflite", "accelerator": model.accelerator, "runtime": model.runtime, "device": info["device"],
        "threads": a.threads, "batch": 1, "status": "ok", "accuracy": accuracy,
        "size_bytes": os.path.getsize(a.model), "load_ms": model.load_ms, "first_ms": timing.get("first_ms"),
        "latency": timing.get("latency"), "peak_rss_mb": peak_rss_mb(),
        "timing_includes_copies": False if a.bench else None, "integrity": integrity,
        "note": "; ".join(notes) or None,
        "n": len(pred), "predictions": [int(v) for v in pred], "results": results,
        "machine": info["machine"], "cpu": info["cpu"], "cpu_count": info["cpu_count"], "python": info["python"],
        "hostname": info["hostname"], "script_version": __version__,
        "manifest_accuracy": expected["accuracy"] if expected and accuracy is not None else None,
        "manifest_predictions": None if same is None else ("same" if same else "differ"),
        "labels": None if y is None else ("npz" if a.npz else "class folders"),
    })
    if out["latency"] and out["latency"]["median_ms"]:
        out["throughput_ips"] = 1e3 / out["latency"]["median_ms"]
    if a.probs:
        out["probs"] = probs.tolist()
    return out


def wrong_line(results, shown: int = 5) -> str:
    """"wrong: 2 of 30: a.jpg (cat -> dog); b.jpg (dog -> cat)" for results that carry `true_label`, "" if none
    is wrong (a field set's misses, named)."""
    wrong = [r for r in results if "true_label" in r and r["label"] != r["true_label"]]
    if not wrong:
        return ""
    more = f"; and {len(wrong) - shown} more (--json for all)" if len(wrong) > shown else ""
    return (f"wrong: {len(wrong)} of {len(results)}: "
            + "; ".join(f"{r['input']} ({r['true_label']} -> {r['label']})" for r in wrong[:shown]) + more)


def _print_text(out: dict, limit=None) -> None:
    results = out["results"]
    for r in results[:limit]:
        extra = ", ".join(f"{t['label']} {t['confidence']:.3f}" for t in r["top_k"][1:])
        print(f"{r['input']}: {r['label']} ({r['confidence']:.3f})" + (f"  [{extra}]" if extra else ""))
    if limit is not None and len(results) > limit:
        print(f"... {len(results) - limit} more (--json for all)")
    if out["accuracy"] is not None:
        same = out.get("manifest_accuracy")
        print(f"accuracy: {out['accuracy']:.4f} on {out['n']} labelled inputs"
              + (" (labels: their class folders)" if out.get("labels") == "class folders" else "")
              + ("" if same is None else f" (the manifest's for {out['accelerator']}: {same:.4f})"))
    if wrong_line(results):
        print(wrong_line(results))
    if out.get("manifest_predictions") == "same":
        print(f"top-1 predictions: the {out['n']} export recorded for the {out['accelerator']} kernels")
    if out.get("note"):
        print(f"note: {out['note']}")
    lat = out.get("latency")
    if lat:
        print(f"{out['file']} on {out['runtime']} ({out['accelerator']}, {out['threads']} thread(s)) @ {out['device']}:"
              f" load {out['load_ms']:.1f} ms, first {out['first_ms']:.2f} ms, median {lat['median_ms']:.3f} ms,"
              f" mean {lat['mean_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms,"
              f" min {lat['min_ms']:.3f} ms over {lat['runs']} runs (invoke only)")


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        out = run(a)
    except UsageError as e:
        print(f"edgecnn_infer.py: error: {e}", file=sys.stderr)
        return 2
    if a.json or a.info:
        if "results" in out and a.bench and not a.images:
            out.pop("results")  # bench rows carry predictions; per-input labels only when asked for inputs
        print(json.dumps(out))
    else:
        _print_text(out, limit=10 if a.npz or out.get("labels") else None)  # a scored set: its misses, not every line
    return 0


if __name__ == "__main__":
    sys.exit(main())
