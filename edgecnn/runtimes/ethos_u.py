"""ethos-u: Arm's Vela compiler (pip `ethos-u-vela`) for the Ethos-U55/U65/U85 microNPUs.

Vela compiles the int8 TFLite model for an accelerator configuration (default `ethos-u55-128`) and one of the
system configurations and memory modes of its own `Arm/vela.ini` (default per accelerator below). The row is
the compiler's: `npu_ops` and `cpu_ops` (operators of the input model placed on the NPU, and left to the
Cortex-M through TFLite Micro), `sram_bytes`, `flash_bytes` and `est_ms` from Vela's summary CSV, all
estimates; no inference runs here, so the row has no accuracy (the NPU computes with TFLite's reference
numerics: see the tflm row). A float model compiles with 0 ops on the NPU, which is a skipped row saying so,
never a silent pass; an int8 model with some ops on the CPU says which.

Python::

    from edgecnn.runtimes import RuntimeOptions, open_session
    sess = open_session("ethos-u", "model_int8.tflite", RuntimeOptions(npu="ethos-u65-256"))
    sess.extras(x)   # {"npu_ops": 8, "cpu_ops": 0, "sram_bytes": ..., "flash_bytes": ..., "est_ms": ...}
"""
from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgecnn.errors import ConfigError, ModelError
from edgecnn.native import package_version
from edgecnn.runtimes.base import Runtime, Session, Unavailable

ACCELERATORS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512",
                "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")
# accelerator family -> (system config, memory mode) of Arm/vela.ini
DEFAULTS = {"ethos-u55": ("Ethos_U55_High_End_Embedded", "Shared_Sram"),
            "ethos-u65": ("Ethos_U65_High_End", "Dedicated_Sram"),
            "ethos-u85": ("Ethos_U85_SYS_DRAM_Mid", "Dedicated_Sram")}
_VELA = "import sys; from ethosu.vela.vela import main; sys.exit(main())"


def _check_vela() -> None:
    try:
        import ethosu.vela  # noqa: F401
    except ImportError:
        raise Unavailable("Vela is not installed: pip install ethos-u-vela (or edgecnn[targets])") from None


def op_names(path) -> list:
    """Operator names of a .tflite file in execution order, read with Vela's flatbuffer schema."""
    from ethosu.vela.tflite import BuiltinOperator, Model

    buf = Path(path).read_bytes()
    m = Model.Model.GetRootAsModel(buf, 0)
    names = {v: k for k, v in vars(BuiltinOperator.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        custom = oc.CustomCode()
        codes.append(custom.decode() if custom else names.get(max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()), "?"))
    return [codes[sg.Operators(j).OpcodeIndex()] for s in range(m.SubgraphsLength())
            for sg in [m.Subgraphs(s)] for j in range(sg.OperatorsLength())]


class VelaSession(Session):
    runs = False  # a compiler: estimates, no inference

    def __init__(self, path: Path, opts, variant: str = ""):
        _check_vela()
        if opts.npu not in ACCELERATORS:
            raise ConfigError(f"unknown Ethos-U configuration '{opts.npu}' (choose {', '.join(ACCELERATORS)})")
        system, memory = DEFAULTS[opts.npu.rsplit("-", 1)[0]]
        self.system, self.memory = opts.npu_system or system, opts.npu_memory or memory
        self.path, self.keep = Path(path), opts.keep_compiled
        self.runtime = f"ethos-u-vela {package_version('ethos-u-vela')}"
        self.accelerator = opts.npu
        self.note = f"Vela estimates for {opts.npu}, {self.system}, {self.memory} (Arm/vela.ini); no inference runs"
        self.threads = None
        from edgecnn.runtimes.tflite import io_of

        i, o = io_of(path)
        self.inputs, self.outputs = [i], [o]
        try:
            ops = op_names(path)
        except Exception as e:  # not a flatbuffer Vela can read
            raise ModelError(f"{self.path.name}: not a TFLite model Vela can read ({type(e).__name__})") from None
        t0 = time.perf_counter()
        self.figures = self._compile(opts.npu, ops)
        self.load_ms = (time.perf_counter() - t0) * 1e3

    def _compile(self, npu: str, ops: list) -> dict:
        with tempfile.TemporaryDirectory(prefix="edgecnn-vela-") as out:
            argv = [sys.executable, "-c", _VELA, str(self.path), "--accelerator-config", npu, "--config",
                    "Arm/vela.ini", "--system-config", self.system, "--memory-mode", self.memory, "--output-dir", out]
            p = subprocess.run(argv, capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                why = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()][-1:] or [f"exit {p.returncode}"]
                raise RuntimeError(f"Vela failed: {why[0]}")
            compiled = next(Path(out).glob("*_vela.tflite"))
            summary = next(Path(out).glob("*_summary_*.csv"))
            with open(summary, newline="") as f:
                s = next(csv.DictReader(f))
            left = [o for o in op_names(compiled) if o != "ethos-u"]
            if self.keep:
                shutil.copyfile(compiled, self.path.with_name(f"{self.path.stem}_vela.tflite"))
        npu_ops, cpu_ops = len(ops) - len(left), len(left)
        if npu_ops == 0:
            float_model = any(re.search(r"operator: \w+", ln) for ln in p.stdout.splitlines()) and self._is_float()
            why = "not int8: 0 ops on the NPU (Ethos-U runs int8 models only)" if float_model else \
                f"0 of {len(ops)} ops on the NPU (Vela: {self._unsupported(p.stdout)})"
            if float_model:
                raise Unavailable(why)
            raise ModelError(why)
        if cpu_ops:
            self.note += f"; {cpu_ops} op(s) fall back to the CPU: {self._unsupported(p.stdout)}"
        kib = 1024
        flash = float(s.get("off_chip_flash_memory_used") or 0) + float(s.get("on_chip_flash_memory_used") or 0)
        dram = float(s.get("dram_memory_used") or 0)
        if dram:
            self.note += f"; {dram:.1f} KiB in DRAM (this memory mode keeps weights there, not in flash)"
        return {"npu_ops": npu_ops, "cpu_ops": cpu_ops, "sram_bytes": int(round(float(s["sram_memory_used"]) * kib)),
                "flash_bytes": int(round(flash * kib)), "est_ms": float(s["inference_time"]) * 1e3}

    def _is_float(self) -> bool:
        return self.inputs[0]["dtype"].startswith("float") and "QUANTIZE" not in op_names(self.path)

    @staticmethod
    def _unsupported(log: str) -> str:
        ops = sorted({m.group(1) for m in re.finditer(r"operator: (\w+)", log)})
        return ", ".join(ops) or "see vela --show-cpu-operations"

    def extras(self, x) -> dict:
        return dict(self.figures)

    def predict(self, x):
        raise NotImplementedError("Vela compiles and estimates; it does not run the model")

    def runner(self, x):
        raise NotImplementedError("Vela compiles and estimates; it does not run the model")


RUNTIME = Runtime("ethos-u", ("tflite",), VelaSession, "Arm Ethos-U microNPU (Vela compiler estimates)",
                  options=("npu", "npu_system", "npu_memory", "keep_compiled"), prepare=_check_vela,
                  install="pip install ethos-u-vela", integer_only=True)
