"""tflm: TensorFlow Lite for Microcontrollers (pip `tflite-micro`), the interpreter a Cortex-M runs, on this host.

Its kernels are the TFLite reference kernels, so an int8 model's outputs here are what a microcontroller
computes. They match the tflite runtime's builtin reference kernels (`reference_kernels=True`) but for a
per-channel FULLY_CONNECTED, which TFLM rounds twice and LiteRT 2.3 once (up to 4 output steps apart on a digits
model): the row's `max_int8_steps` says how far they are, 0 when exact, and export records TFLM's own figures
(`parity_kernels.tflm`). The builtin optimized kernels, XNNPACK off, are further: 85 output steps apart on an int8
MobileNetV2. The row adds `arena_bytes`, the smallest
tensor arena that allocates and runs the model (searched by bisection in a child process, a new one after a size
that crashes it: TFLM's Python API only prints its allocations, defaults to 10x the model, and can crash on an arena
a little too small;
the session itself opens with an arena a child found to fit, since 10x is too small for a model whose activations
outweigh its weights), and `flash_bytes`, the flatbuffer an MCU keeps in flash (code not included).
Latency is this host's CPU running TFLM's portable kernels, not a microcontroller's: the note says so.
An op TFLM has no kernel for is a failed row naming the op.

Python::

    from edgecnn.runtimes import open_session
    sess = open_session("tflm", "runs/d/export/model_int8.tflite")
    sess.extras(x)["arena_bytes"]
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgecnn.contracts.manifest import tensor_info
from edgecnn.errors import ModelError
from edgecnn.native import native_stderr, package_version
from edgecnn.runtimes.base import Runtime, RuntimeOptions, Session, Unavailable, from_output, to_input

# Run in a child: TFLM can crash (SIGSEGV) on an arena a little too small, as it does on an int8 MobileNetV2
# ("Failed to allocate tail memory"), so a crash must only mean "does not fit".
# `search LO HI`: bisection for the smallest arena in [LO, HI] that allocates and invokes, printing "try N" before
# each size and "fit N" or "nofit N" after it (flushed), then "done N": a crash leaves "try N" last, and the parent
# goes on from there in a new child. `record`: the smallest power-of-two multiple of 10x the model that fits, and
# TFLM's own total there (print_allocations prints it and returns nothing).
_ARENA_CHILD = r"""
import json, os, sys, tempfile
import numpy as np
from tflite_micro import runtime
data = open(sys.argv[1], "rb").read()
def ok(n):
    try:
        it = runtime.Interpreter.from_bytes(data, arena_size=n)
        d = it.get_input_details(0)
        it.set_input(np.zeros(d["shape"], d["dtype"]), 0)
        it.invoke()
        return it
    except RuntimeError:
        return None
if sys.argv[2] == "search":
    lo, hi = int(sys.argv[3]), int(sys.argv[4])
    while lo < hi:
        mid = (lo + hi) // 2
        print("try", mid, flush=True)
        fit = ok(mid) is not None
        print("fit" if fit else "nofit", mid, flush=True)
        lo, hi = (lo, mid) if fit else (mid + 1, hi)
    print("done", hi, flush=True)
    sys.exit(0)
hi = max(len(data) * 10, 4096)
while not ok(hi):
    hi *= 2
    if hi > 1 << 31:
        print(json.dumps({"error": "no arena up to 2 GiB allocates"})); sys.exit(0)
it = ok(hi)
with tempfile.TemporaryFile() as tmp:
    sys.stderr.flush(); saved = os.dup(2); os.dup2(tmp.fileno(), 2)
    try:
        it.print_allocations()
    finally:
        os.dup2(saved, 2)
    tmp.seek(0); text = tmp.read().decode("utf-8", "replace")
import re
m = re.search(r"Arena allocation total (\d+) bytes", text)
print(json.dumps({"fits": hi, "recorded": int(m.group(1)) if m else None}))
"""


def _tflm():
    try:
        from tflite_micro import runtime
    except ImportError:
        raise Unavailable("TFLite Micro is not installed: pip install tflite-micro (or edgecnn[targets])") from None
    return runtime


def _child(path, *args, timeout: float):
    return subprocess.run([sys.executable, "-c", _ARENA_CHILD, str(path), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def arena_that_fits(path, timeout: float = 120.0) -> dict:
    """{"fits": bytes, "recorded": TFLM's own total there}: the smallest power-of-two multiple of TFLM's default
    arena (10x the model) that allocates and invokes `path`, found in a child process.

    Raises:
        RuntimeError: the model does not run in TFLM at any arena size, with the child's last line.
    """
    p = _child(path, "record", timeout=timeout)
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        tail = [ln for ln in p.stderr.splitlines() if ln.strip()][-1:] or [f"exit {p.returncode}"]
        raise RuntimeError(f"TFLite Micro arena search failed: {tail[0]}")
    out = json.loads(lines[-1])
    if "error" in out:
        raise RuntimeError(out["error"])
    return out


def arena_search(path, timeout: float = 300.0, fits: dict | None = None) -> dict:
    """{"smallest": bytes, "recorded": TFLM's own total} for `path`: the smallest arena in [recorded / 2, the size
    that fits] that allocates and invokes, by bisection in a child process; a size that crashes the child is one
    that does not fit, and the search goes on from there in a new child. `fits`: `arena_that_fits`' answer, when
    known.

    Raises:
        RuntimeError: the model does not run in TFLM at any arena size, with the child's last line; the search
            took over `timeout` seconds.
    """
    import time

    deadline = time.monotonic() + timeout
    out = fits or arena_that_fits(path, timeout)
    recorded, hi = out["recorded"], int(out["fits"])
    lo = max(1024, (recorded or 2048) // 2)
    too_long = f"TFLite Micro arena search took over {timeout:.0f} s"
    while lo < hi:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(too_long)
        try:
            p = _child(path, "search", lo, hi, timeout=left)
        except subprocess.TimeoutExpired:
            raise RuntimeError(too_long) from None
        trying = None
        for word, n in re.findall(r"^(try|fit|nofit|done) (\d+)$", p.stdout, flags=re.M):  # TFLM's own lines aside
            n = int(n)
            if word == "try":
                trying = n
            elif word == "fit":
                hi, trying = n, None
            elif word == "nofit":
                lo, trying = n + 1, None
            elif word == "done":
                hi, lo, trying = n, n, None
        if trying is not None:  # the child died on this size: it does not fit
            lo = trying + 1
        elif lo < hi:  # it ended without finishing and not on a size: a failure, never a retry of the same range
            tail = [ln for ln in p.stderr.splitlines() if ln.strip()][-1:] or [f"exit {p.returncode}"]
            raise RuntimeError(f"TFLite Micro arena search failed: {tail[0]}")
    return {"smallest": hi, "recorded": recorded}


def _details(d: dict, name: str) -> dict:
    q = d.get("quantization_parameters") or {}
    scales, zps = q.get("scales", []), q.get("zero_points", [])
    return tensor_info(name, d["shape"], d["dtype"], float(scales[0]) if len(scales) else None,
                       int(zps[0]) if len(zps) else 0)


def _missing_op(logs: list) -> str:
    for ln in logs:
        m = re.search(r"Didn't find op for builtin opcode '(\w+)'", ln)
        if m:
            return m.group(1)
    return "CUSTOM (a Flex/TF Select or custom op)" if any("op code CUSTOM" in ln for ln in logs) else ""


class TflmSession(Session):
    batch_ok = False  # TFLM shapes are fixed at allocation: one image at a time

    def __init__(self, path: Path, opts, variant: str = ""):
        runtime = _tflm()
        self.path = Path(path)
        self.runtime = f"tflite-micro {package_version('tflite-micro')}"
        self.accelerator = "reference kernels"
        self.threads = 1  # a microcontroller interpreter is single-threaded
        self.note = "latency: TFLite Micro's portable kernels on this host's CPU, not a microcontroller"
        try:  # TFLM's Softmax aborts the process on a tiny int8 input scale, as the reference kernels do
            from edgecnn.runtimes.tflite import check_softmax_scale

            check_softmax_scale(self.path)
        except Unavailable:
            pass
        # TFLM's default arena (10x the model) is too small for a model whose activations outweigh its weights
        # (a 64x64 RGB input); a size that fits is found in a child first, since one a little too small can
        # crash this process. A model no size fits loads at the default, where TFLM's own error names the cause.
        try:
            self._fits = arena_that_fits(self.path)
        except (RuntimeError, subprocess.TimeoutExpired):
            self._fits = None
        logs: list = []
        try:
            with native_stderr(logs):
                self.it = runtime.Interpreter.from_file(
                    str(path), **({"arena_size": self._fits["fits"]} if self._fits else {}))
        except (RuntimeError, ValueError) as e:
            op = _missing_op(logs)
            if op:
                raise ModelError(f"{self.path.name}: TFLite Micro has no kernel for {op}") from None
            raise ModelError(f"{self.path.name}: TFLite Micro cannot load it ({'; '.join(logs[-2:]) or e})") from None
        self._raw: dict = {}  # image digest -> output, for `extras`
        self.inputs = [_details(self.it.get_input_details(0), "image")]
        self.outputs = [_details(self.it.get_output_details(0), "probs")]
        if self.inputs[0]["shape"][0] != 1:
            raise ModelError(f"{self.path.name}: TFLite Micro runs batch 1; the model takes {self.inputs[0]['shape']}")

    def raw(self, x1: np.ndarray) -> np.ndarray:
        """The output tensor in its own dtype for one image; kept by the image's digest, so the comparison with
        the reference kernels (`extras`) does not run TFLM over the test split a second time (about 138 s of an
        11-minute bench on a 224x224 MobileNetV2: 480 images at 0.29 s)."""
        import hashlib

        key = hashlib.blake2b(np.ascontiguousarray(x1).tobytes(), digest_size=16).digest()
        if key not in self._raw:
            self.it.set_input(to_input(x1, self.inputs[0]), 0)
            self.it.invoke()
            self._raw[key] = np.array(self.it.get_output(0))
        return self._raw[key]

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = [from_output(self.raw(x[i:i + 1]), self.outputs[0])[0] for i in range(len(x))]
        return np.stack(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)

    def runner(self, x: np.ndarray):
        if len(x) != 1:
            raise ValueError("TFLite Micro runs batch 1 only")
        self.it.set_input(to_input(x, self.inputs[0]), 0)
        return self.it.invoke

    def extras(self, x: np.ndarray) -> dict:
        arena = arena_search(self.path, fits=self._fits)
        out = {"arena_bytes": int(arena["smallest"]), "flash_bytes": self.path.stat().st_size}
        if np.dtype(self.outputs[0]["dtype"]).kind in "iu":
            out["max_int8_steps"] = self._steps_vs_reference(x)
        return out

    def _steps_vs_reference(self, x: np.ndarray):
        """Largest difference, in integer steps, from the tflite runtime's builtin reference kernels."""
        from edgecnn.runtimes.tflite import TfliteSession

        try:
            ref = TfliteSession(self.path, RuntimeOptions(reference_kernels=True))
        except Unavailable:
            return None
        try:
            steps = [np.max(np.abs(self.raw(x[i:i + 1]).astype(np.int64) - ref.raw(x[i:i + 1]).astype(np.int64)))
                     for i in range(len(x))]
        finally:
            ref.close()
        return int(max(steps)) if steps else 0

    def close(self) -> None:
        self.it = None


def _prepare() -> None:
    try:
        _tflm()
    except Unavailable:
        pass


RUNTIME = Runtime("tflm", ("tflite",), TflmSession, "TensorFlow Lite for Microcontrollers (reference kernels)",
                  prepare=_prepare, install="pip install tflite-micro")
