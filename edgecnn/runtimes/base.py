"""What every runtime provides: a `Runtime` spec for the registry, the options it reads, and the `Session` it
opens. One session type for every caller: export verification, bench rows, predict and inspect.

A session takes float32 NHWC images in [0, 1] and returns float32 probabilities; integer inputs and outputs
are quantized and dequantized at the edges with the model's own scale and zero point (the on-device script's
`quantize`/`dequantize`, the one implementation).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edgecnn.script.edgecnn_infer import KERNEL_FLAGS, dequantize, quantize
from edgecnn.errors import ConfigError

EVAL_CHUNK = 64  # images per call when evaluating a split on a runtime with a dynamic batch
# ... and at most this many bytes of float input per call: a runtime's activations grow with the batch, and 256
# MobileNetV2 images at 224x224 took onnxruntime to 5.5 GB; 16 MiB is 27 such images, all of digits' 8x8 ones
BATCH_INPUT_BYTES = 16 << 20
GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")


KERNELS = tuple(KERNEL_FLAGS)  # TFLite CPU kernel sets: XNNPACK, builtin optimized, reference (TFLite Micro's)


def check_kernels(kernels: str) -> str:
    """`kernels` if it names a TFLite CPU kernel set; ConfigError otherwise."""
    if kernels not in KERNELS:
        raise ConfigError(f"unknown kernels {kernels!r} (choose {', '.join(KERNELS)})")
    return kernels


class Unavailable(Exception):
    """This runtime (or accelerator) cannot run on this machine; the row is skipped with this reason."""


@dataclass(frozen=True)
class RuntimeOptions:
    """Every runtime option; each `Runtime` declares in `options` the fields it reads (others do not apply)."""

    threads: int = 1  # CPU threads (tflite, litert-*, onnxruntime intra-op, openvino)
    include_copies: bool = False  # time input/output tensor copies with the inference (False: invoke only)
    xnnpack: bool = True  # tflite: LiteRT's default XNNPACK delegate (False: the builtin optimized kernels)
    reference_kernels: bool = False  # tflite: the builtin reference kernels (TFLite Micro's arithmetic; slow)
    delegate: Optional[str] = None  # tflite: external delegate "PATH[:key=value,...]"
    providers: tuple = ("cpu",)  # onnxruntime execution providers, one row each
    graph_optimization: str = "all"  # onnxruntime graph optimization level
    npu: str = "ethos-u55-128"  # ethos-u: Vela accelerator configuration
    npu_system: Optional[str] = None  # ethos-u: system config of Vela's Arm/vela.ini (default: per accelerator)
    npu_memory: Optional[str] = None  # ethos-u: memory mode of Vela's Arm/vela.ini (default: per accelerator)
    keep_compiled: bool = False  # ethos-u: keep model_int8_vela.tflite beside the model
    precision: str = "f32"  # openvino: inference precision hint (f32 for parity; bf16/f16 as the CPU likes)

    def __post_init__(self):
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1 (got {self.threads})")
        if self.graph_optimization not in GRAPH_OPTIMIZATIONS:
            raise ConfigError(f"unknown graph optimization level '{self.graph_optimization}' "
                              f"(choose {', '.join(GRAPH_OPTIMIZATIONS)})")

    @classmethod
    def of(cls, config) -> "RuntimeOptions":
        """Options from a RuntimeOptions, a stage config with the same field names (BenchConfig), or None."""
        if config is None or isinstance(config, cls):
            return config or cls()
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)})

    @classmethod
    def for_kernels(cls, kernels: str, threads: int = 1) -> "RuntimeOptions":
        """Options that run a .tflite on a CPU kernel set: "xnnpack", "builtin" or "reference".

        Raises:
            ConfigError: an unknown kernel set.
        """
        check_kernels(kernels)
        return cls(threads=threads, xnnpack=kernels == "xnnpack", reference_kernels=kernels == "reference")

    @property
    def kernels(self) -> str:
        """The TFLite CPU kernel set these options run (a delegate aside)."""
        return "reference" if self.reference_kernels else "xnnpack" if self.xnnpack else "builtin"

    def changed(self) -> list:
        """Names of the options set to something other than their default."""
        default = asdict(RuntimeOptions())
        return [k for k, v in asdict(self).items() if v != default[k] and k != "threads"]


@dataclass(frozen=True)
class Runtime:
    """A runtime that runs artifacts of some formats; one row per artifact and variant (accelerator, provider)."""

    name: str
    formats: tuple  # artifact formats it runs ("keras", "tflite", "onnx")
    open: Callable  # (path: Path, opts: RuntimeOptions, variant: str) -> Session; raises Unavailable
    description: str = ""
    options: tuple = ()  # RuntimeOptions fields it reads besides threads
    variants: Callable = lambda opts: [""]  # what to run (onnxruntime: one per provider)
    prepare: Optional[Callable] = None  # imports the runtime, so the first row's load time is not an import
    install: str = ""  # how to get it: "pip install ..."
    integer_only: bool = False  # runs fully integer models only (an NPU): a mixed int8/float model is unsuitable

    def load(self, path, opts=None, variant: str = ""):
        """Open `path`; returns (session, load_ms). Raises Unavailable when the runtime cannot run here."""
        opts = RuntimeOptions.of(opts)
        if self.prepare is not None:
            try:
                self.prepare()
            except ImportError:
                pass  # open() raises Unavailable with the package to install
        t0 = time.perf_counter()
        sess = self.open(Path(path), opts, variant)
        return sess, sess.load_ms if sess.load_ms is not None else (time.perf_counter() - t0) * 1e3

    def ignored(self, opts) -> list:
        """Options the caller set that this runtime does not read (a visible note on its rows)."""
        return [o for o in RuntimeOptions.of(opts).changed() if o not in self.options and o != "include_copies"]


class Session:
    """A loaded model on one runtime. Inputs are float32 NHWC in [0, 1]; outputs are probabilities."""

    runtime: str = ""  # e.g. "ai_edge_litert 2.3.0"
    accelerator: str = ""  # what actually ran it: "xnnpack", "builtin", "CPUExecutionProvider", ...
    threads: Optional[int] = None  # threads actually configured
    includes_copies: bool = False  # whether runner()'s callable copies tensors in and out
    batch_ok: bool = True  # whether runner() accepts batches larger than 1
    runs: bool = True  # False for a compiler that only estimates (ethos-u): no predictions, no timing
    note: Optional[str] = None  # anything a reader of the row must know (fallbacks, partial acceleration)
    inputs: list = []  # contracts.manifest.tensor_info() records
    outputs: list = []
    load_ms: Optional[float] = None  # set when the session times its own load (leaving one-time set-up out)

    @property
    def input_shape(self) -> tuple:
        """(h, w, c) the model takes (None for a dynamic dimension)."""
        return tuple(self.inputs[0]["shape"][1:]) if self.inputs else ()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) for float32 images (N, h, w, c)."""
        raise NotImplementedError

    def runner(self, x: np.ndarray) -> Callable[[], object]:
        """Set `x` (a batch) as the input and return a zero-argument callable that runs one inference."""
        raise NotImplementedError

    def extras(self, x: np.ndarray) -> dict:
        """Row keys only this runtime measures (arena_bytes, est_ms, ...), given the evaluation images."""
        return {}

    def close(self) -> None:
        """Release the runtime's resources."""


def single_io(n_in: int, n_out: int) -> None:
    """Raises ValueError unless the model has one input and one output."""
    if n_in != 1 or n_out != 1:
        raise ValueError(f"expects a model with 1 input and 1 output, got {n_in} and {n_out}")


def to_input(x: np.ndarray, info: dict) -> np.ndarray:
    """Float images -> the input tensor's dtype, with its quantization (a manifest tensor record)."""
    q = info.get("quantization") or {"scale": None, "zero_point": 0}
    return quantize(x, info["dtype"], q["scale"], q["zero_point"])


def from_output(y: np.ndarray, info: dict) -> np.ndarray:
    """The output tensor -> float32 probabilities, with its quantization."""
    q = info.get("quantization") or {"scale": None, "zero_point": 0}
    return dequantize(np.asarray(y), q["scale"], q["zero_point"])


def images_per_batch(image_shape, cap: int, budget: int = BATCH_INPUT_BYTES) -> int:
    """Images per piece: `cap`, or fewer when their float32 pixels would exceed `budget` bytes (at least one)."""
    return max(1, min(cap, budget // max(4 * int(np.prod(image_shape)), 1)))


def batches(x: np.ndarray, fixed: Optional[int], chunk: int = EVAL_CHUNK):
    """(batch, n) pieces of `x`: `chunk` images at a time (fewer when they would exceed BATCH_INPUT_BYTES of float
    input), or the model's fixed batch with the last one padded."""
    step = fixed or images_per_batch(x.shape[1:], chunk)
    for start in range(0, len(x), step):
        part = x[start:start + step]
        n = len(part)
        if fixed and n < fixed:
            part = np.concatenate([part, np.zeros((fixed - n, *part.shape[1:]), part.dtype)])
        yield part, n


def predict_in_batches(run_batch: Callable, x: np.ndarray, fixed: Optional[int], chunk: int = EVAL_CHUNK):
    """Concatenated `run_batch(batch)[:n]` over `batches(x, ...)`."""
    outs = [run_batch(part)[:n] for part, n in batches(x, fixed, chunk)]
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, 0), np.float32)


def fixed_batch(shape) -> Optional[int]:
    """The batch a model fixes, or None when its batch dimension is dynamic."""
    d = list(shape)[0] if len(shape) else None
    return int(d) if isinstance(d, (int, np.integer)) and int(d) > 0 else None


def saturation_note() -> str:
    """"this CPU has AVX2 and no VNNI, where ...; " when x86 int8 kernels saturate here, else "".

    On such x86-64 CPUs onnxruntime (MLAS) and OpenVINO (oneDNN) multiply uint8 activations by int8 weights with
    VPMADDUBSW, which adds each pair of products in 16 bits: 255 * 127 * 2 does not fit. Measured here (2026-12-01,
    AMD EPYC, onnxruntime 1.32.0, OpenVINO 2026.4): one conv whose weights all quantize to 127 gives half its value
    on a white image in both. The remedy is 7-bit weights (onnxruntime's `reduce_range`); LiteRT's kernels and
    those of CPUs with VNNI or of ARM do not saturate."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return ""
    if "avx2" in flags and not any("vnni" in f for f in flags):
        return ("this CPU has AVX2 and no VNNI, where onnxruntime's and OpenVINO's int8 kernels add pairs of 8-bit "
                "products in 16 bits and saturate; ")
    return ""
