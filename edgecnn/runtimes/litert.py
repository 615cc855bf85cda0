"""litert-cpu, litert-gpu, litert-npu: LiteRT's `CompiledModel` API with a hardware accelerator.

GPU and NPU are requested with the CPU as fallback (`GPU | CPU`, `NPU | CPU`), and the row records
whether the model was fully accelerated. `litert-cpu` times exactly what LiteRT's own
`tools/benchmark_litert_model.py` times (`run_by_name` on pre-filled buffers).

Without the hardware the rows are skipped with the runtime's own reason, for example on a machine with
no Vulkan driver: "no GPU: LiteRT's WebGPU accelerator found no adapter (libvulkan.so.1 ...)", and
with the Intel OpenVINO dispatch library but no OpenVINO runtime: "no NPU: ... libopenvino.so...".
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.native import native_stderr, package_version, quiet_at_exit
from edgecnn.runtimes.base import Runtime, Session, Unavailable, from_output, single_io, to_input

_GPU_HINTS = ("WebGPU", "adapter", "Vulkan", "OpenCL", "GPU accelerator", "gpu_registry", "ml_drift")


def _litert():
    try:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.environment import Environment
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import CpuOptions, Options
    except ImportError as e:
        raise Unavailable(f"LiteRT CompiledModel is not installed ({e}): pip install ai-edge-litert") from None
    return CompiledModel, Environment, HardwareAccelerator, CpuOptions, Options


def _pick(logs: list, patterns) -> list:
    return [ln.strip().lstrip("└ ").strip() for ln in logs if any(p in ln for p in patterns)]


_VULKAN_SAID: dict = {}  # what Vulkan said in this process: LiteRT logs it on the first GPU attempt only


def _vulkan_state(logs: list) -> str:
    """What is missing for Vulkan (WebGPU's backend on Linux), or what it said, the same for every row of a
    process (LiteRT logs Vulkan's failure on the first attempt only)."""
    import ctypes

    try:
        ctypes.CDLL("libvulkan.so.1")
    except OSError:
        return "no Vulkan loader (libvulkan.so.1) on this machine"
    for pattern, text in ((r"Couldn't load Vulkan: (.*)", "{}"),
                          (r"vkCreateInstance: (Found no drivers)", "no Vulkan driver: vkCreateInstance found no ICD "
                           "(in a container, NVIDIA_DRIVER_CAPABILITIES must include 'graphics')")):
        for ln in logs:
            m = re.search(pattern, ln)
            if m:
                _VULKAN_SAID["text"] = text.format(m.group(1))
                return _VULKAN_SAID["text"]
    return _VULKAN_SAID.get("text", "")


def _gpu_reason(logs: list, err: Exception) -> str:
    """One line from WebGPU/Vulkan's log saying why no GPU could be used."""
    adapter = [m.group(1) for ln in logs for m in [re.search(r"WebGPU environment: (.*)", ln)] if m]
    vulkan = _vulkan_state(logs)
    parts = [f"WebGPU: {adapter[0]}" if adapter else "", f"Vulkan: {vulkan}" if vulkan else ""]
    detail = "; ".join(p for p in parts if p) or (_pick(logs, ("ERROR",))[-1:] or [str(err).splitlines()[0]])[0]
    return f"no GPU: LiteRT's GPU accelerator could not start ({detail})"


def npu_unavailable(env) -> Optional[str]:
    """Why no NPU can run here, or None. The NPU accelerator needs a vendor dispatch library that loads
    (it links the vendor runtime: QNN, NeuroPilot, OpenVINO, ...); LiteRT itself only logs a warning."""
    import ctypes
    import glob
    import os

    path = getattr(getattr(env, "options", None), "dispatch_library_path", "") or ""
    libs = sorted(glob.glob(os.path.join(path, "*Dispatch*"))) if path else []
    if not libs:
        return ("no NPU: no vendor dispatch library found (LiteRT looks in ai_edge_litert/vendors/*/dispatch); "
                "NPU runs need a Qualcomm, MediaTek, Google Tensor or Intel OpenVINO device and its runtime")
    try:
        ctypes.CDLL(libs[0])
    except OSError as e:
        return (f"no NPU: the dispatch library {os.path.basename(libs[0])} does not load ({e}); it needs its "
                f"vendor's runtime and an NPU device")
    return None


class LitertSession(Session):
    batch_ok = False  # CompiledModel output buffers do not follow an input resize: batch 1 only

    def __init__(self, path: Path, opts, variant: str):
        self.env = self.model = None
        try:
            self._open(path, opts, variant)
        except BaseException:
            self.close()
            raise

    def _open(self, path: Path, opts, variant: str) -> None:
        from edgecnn.runtimes.tflite import io_of

        CompiledModel, Environment, HA, CpuOptions, Options = _litert()
        quiet_at_exit()  # its accelerators log their teardown when the process ends
        self.runtime = f"ai_edge_litert {package_version('ai-edge-litert')} CompiledModel"
        self.threads = opts.threads
        self.includes_copies = opts.include_copies
        i, o = io_of(path)  # names and quantization, which CompiledModel does not report
        self.inputs, self.outputs = [i], [o]
        logs: list = []
        accel = {"cpu": HA.CPU, "gpu": HA.GPU | HA.CPU, "npu": HA.NPU | HA.CPU}[variant]
        with native_stderr(logs):
            self.env = Environment.create()
        if variant == "npu":
            why = npu_unavailable(self.env)
            if why:
                raise Unavailable(why)
        failure = None
        t0 = time.perf_counter()  # the model's load, as benchmark_litert_model.py's init time (no environment)
        try:
            with native_stderr(logs):
                self.model = CompiledModel.from_file(
                    str(path), environment=self.env,
                    options=Options(hardware_accelerators=accel, cpu_options=CpuOptions(num_threads=opts.threads)))
        except Exception as e:
            if variant == "gpu" and _pick(logs, _GPU_HINTS):
                failure = Unavailable(_gpu_reason(logs, e))
            else:
                failure = RuntimeError(" ".join(str(e).split()) or type(e).__name__)
        if failure is not None:  # raised outside the except block: the runtime's traceback must not outlive close()
            raise failure
        self.sig = next(iter(self.model.get_signature_list()), "serving_default")
        ins = self.model.get_input_tensor_details(self.sig)
        outs = self.model.get_output_tensor_details(self.sig)
        single_io(len(ins), len(outs))
        (self.in_name, in_d), (self.out_name, out_d) = next(iter(ins.items())), next(iter(outs.items()))
        self.inputs[0] = dict(self.inputs[0], shape=[int(d) for d in in_d["shape"]])
        self.n_out = int(np.prod(out_d["shape"]))
        self.out_dtype = np.dtype(self.outputs[0]["dtype"])
        self.fully = self.model.is_fully_accelerated()
        self.accelerator = variant
        self.note = f"LiteRT is_fully_accelerated: {'yes' if self.fully else 'no'}" + (
            f" (`edgecnn inspect {Path(path).name}` lists the ops XNNPACK leaves to the builtin kernels)"
            if variant == "cpu" and not self.fully else "")
        self.ibuf = self.model.create_input_buffer_by_name(self.sig, self.in_name)
        self.obuf = self.model.create_output_buffer_by_name(self.sig, self.out_name)
        self.imap, self.omap = {self.in_name: self.ibuf}, {self.out_name: self.obuf}
        self.load_ms = (time.perf_counter() - t0) * 1e3

    def _write(self, x1: np.ndarray) -> None:
        self.ibuf.write(to_input(x1, self.inputs[0]))

    def _read(self) -> np.ndarray:
        return from_output(self.obuf.read(self.n_out, self.out_dtype), self.outputs[0])

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = []
        for i in range(len(x)):
            self._write(x[i:i + 1])
            self.model.run_by_name(self.sig, self.imap, self.omap)
            out.append(self._read())
        return np.stack(out) if out else np.zeros((0, 0), np.float32)

    def runner(self, x: np.ndarray):
        if len(x) != 1:
            raise ValueError("LiteRT CompiledModel rows run batch 1 only")
        self._write(x)
        model, sig, imap, omap = self.model, self.sig, self.imap, self.omap
        if not self.includes_copies:
            return lambda: model.run_by_name(sig, imap, omap)  # as benchmark_litert_model.py times it

        def run():
            self._write(x)
            model.run_by_name(sig, imap, omap)
            return self._read()

        return run

    def close(self) -> None:
        with native_stderr():  # accelerator teardown logs
            self.ibuf = self.obuf = self.imap = self.omap = None
            self.model = None
            self.env = None


def _opener(variant: str):
    return lambda path, opts, _v="": LitertSession(path, opts, variant)


def _prepare() -> None:
    try:
        _litert()
    except Unavailable:
        pass


def _runtime(variant: str, description: str) -> Runtime:
    return Runtime(f"litert-{variant}", ("tflite",), _opener(variant), description, prepare=_prepare,
                   install="pip install ai-edge-litert")


RUNTIMES = [
    _runtime("cpu", "LiteRT CompiledModel on the CPU (XNNPACK)"),
    _runtime("gpu", "LiteRT CompiledModel, GPU accelerator with CPU fallback"),
    _runtime("npu", "LiteRT CompiledModel, NPU accelerator with CPU fallback"),
]
