"""The bench stage's configuration and its result types: `BenchConfig`, `Row`, `BenchResult`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from edgecnn.contracts.gates import Gates
from edgecnn.contracts.rows import REFUSED, ROW_KEYS, Row  # noqa: F401  (the row schema lives in the contracts)
from edgecnn.errors import ConfigError
from edgecnn.runtimes.base import RuntimeOptions

SCHEMA = "edgecnn.bench/1"


@dataclass(frozen=True)
class BenchConfig:
    """What to run, how to time it, and the parity gates."""

    backends: tuple = ()  # runtime names (edgecnn.runtimes.RUNTIMES); empty: every registered runtime
    artifacts: tuple = ()  # manifest artifact names (plus "keras"); empty: all of them
    threads: int = 1  # CPU threads for tflite, litert-* and onnxruntime (intra-op); 1 is the reproducible choice
    batch: int = 1  # batch size of the throughput measurement
    xnnpack: bool = True  # tflite: apply LiteRT's default XNNPACK delegate (off: the builtin optimized kernels)
    reference_kernels: bool = False  # tflite: the builtin reference kernels (TFLite Micro's arithmetic; slow)
    delegate: Optional[str] = None  # tflite: external delegate "PATH[:key=value,...]" loaded with load_delegate
    providers: tuple = ("cpu",)  # onnxruntime execution providers, one row each (short or full names)
    graph_optimization: str = "all"  # onnxruntime graph optimization level: disable, basic, extended, all
    npu: str = "ethos-u55-128"  # ethos-u: Vela accelerator configuration
    npu_system: Optional[str] = None  # ethos-u: Vela system config (Arm/vela.ini); default per accelerator
    npu_memory: Optional[str] = None  # ethos-u: Vela memory mode; default per accelerator
    keep_compiled: bool = False  # ethos-u: keep model_int8_vela.tflite beside the model
    precision: str = "f32"  # openvino: inference precision hint (f32 for parity)
    warmup_runs: int = 1  # warm-up runs before timing (at least this many ...
    warmup_min_s: float = 0.5  # ... and at least this long), as TFLite's benchmark_model
    runs: int = 50  # timed runs: at least this many ...
    min_s: float = 1.0  # ... and at least this long ...
    max_s: float = 30.0  # ... but never longer than this (fewer runs then)
    timing: bool = True  # False: accuracy and parity only (CI gates), no latency or throughput
    include_copies: bool = False  # time input/output tensor copies with the inference (False: invoke only)
    limit: Optional[int] = None  # evaluate at most this many test images (quick runs)
    max_acc_drop: Optional[float] = None  # gate: accuracy drop vs the reference, in points (percent)
    min_agreement: Optional[float] = None  # gate: top-1 agreement with the reference, fraction 0-1
    max_abs_diff: Optional[float] = None  # gate: max abs probability difference vs the reference
    max_class_drop: Optional[float] = None  # gate: points of one class's recall lost to the reference
    out: Optional[str] = None  # where bench.json/bench.md/plots go; None: RUN/bench or ./bench-<model>
    write: bool = True  # write bench.json, bench.md and plots (False: only return the result)
    plots: bool = True  # write the PNG plots and confusion matrices
    remote: tuple = ()  # "USER@HOST[:PORT] [NAME]" boards to run the tflite artifacts on (edgecnn.device.remote)
    remote_jobs: int = 4  # boards benched at the same time
    remote_timeout: float = 300.0  # seconds for everything on one board (connect, copy, every run)
    allow_modified: bool = False  # run artifacts whose sha256 differs from the manifest (the rows say so)
    accept_new_host_keys: bool = False  # --remote: accept a board's unknown SSH host key (the rows say so)

    def __post_init__(self):
        if self.batch < 1:
            raise ConfigError(f"batch must be >= 1 (got {self.batch})")
        if self.runs < 1 or self.warmup_runs < 0 or self.min_s < 0 or self.max_s <= 0 or self.warmup_min_s < 0:
            raise ConfigError("runs must be >= 1, warmup_runs >= 0, min_s/warmup_min_s >= 0 and max_s > 0")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1 (got {self.limit})")
        if self.remote_jobs < 1 or self.remote_timeout <= 0:
            raise ConfigError("--remote-jobs must be >= 1 and --remote-timeout > 0")
        self.runtime_options()  # threads, graph optimization level
        _ = self.gates  # gate values

    @property
    def gates(self) -> Gates:
        return Gates(max_acc_drop=self.max_acc_drop, min_agreement=self.min_agreement, max_abs_diff=self.max_abs_diff,
                     max_class_drop=self.max_class_drop)

    def runtime_options(self) -> RuntimeOptions:
        """The options the runtimes read (each declares which)."""
        return RuntimeOptions.of(self)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BenchResult:
    """What a bench run measured, where it wrote it, and which parity gates the rows broke."""

    rows: list  # [Row]
    out_dir: Optional[Path] = None
    files: list = field(default_factory=list)  # paths written
    violations: list = field(default_factory=list)  # contracts.gates.Violation, one per broken gate
    host: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    created: str = ""
    warnings: list = field(default_factory=list)  # what the figures cannot show (a reference stuck on one class)

    @property
    def ok(self) -> bool:
        """True when no ok row broke a gate and no artifact was refused."""
        return not self.violations and not self.refused

    @property
    def refused(self) -> list:
        """Rows whose artifact was not run because it is not what the manifest describes (sha256, I/O, classes)."""
        return [r for r in self.rows if r.integrity in REFUSED]

    def row(self, artifact: str, backend: str) -> Optional[Row]:
        """The first row of `artifact` on `backend`, or None."""
        return next((r for r in self.rows if r.artifact == artifact and r.backend == backend), None)

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "created": self.created, "host": self.host, "settings": self.settings,
                "rows": [r.to_dict() for r in self.rows], "violations": [str(v) for v in self.violations],
                "violations_detail": [v.to_dict() for v in self.violations], "warnings": list(self.warnings)}
