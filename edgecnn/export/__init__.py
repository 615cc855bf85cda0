"""Export: turn a trained run into the artifacts that run on devices, each proven before it is written.

Writes RUN/export/: model_fp32.tflite, model_int8.tflite (full integer, PTQ or QAT), model_fp32.onnx,
model_int8.onnx (QDQ), manifest.json and the on-device script edgecnn_infer.py. Every artifact is built in
a staging folder, loaded in its own runtime, run on the test split and compared with the Keras model;
only when all of them pass are they moved into place (each file atomically, the manifest last).

Python::

    from edgecnn.export import ExportConfig, export
    result = export("runs/d", ExportConfig(quant="qat"))
    for a in result.artifacts: print(a["name"], a["parity"]["accuracy_drop"])

CLI::

    edgecnn export runs/d                          # all four formats, PTQ, int8 I/O
    edgecnn export runs/d --quant qat --max-acc-drop 0.2 --strict   # a broken gate: exit 1; --strict: write nothing
    edgecnn export runs/d --formats tflite --io float
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edgecnn.contracts.gates import Gates
from edgecnn.contracts.parity import smallest_class, worst_class_record
from edgecnn.errors import ConfigError, ExportError, ShapeError
from edgecnn.export import onnx as _onnx
from edgecnn.export import tflite as _tflite
from edgecnn.runtimes.base import check_kernels


class Quantization(str, Enum):
    """How the int8 models get their quantization parameters."""

    PTQ = "ptq"  # post-training: calibration images only
    QAT = "qat"  # quantization-aware fine-tuning (tfmot), then conversion
    AUTO = "auto"  # PTQ, then the layers that miss the accuracy targets kept in float (export/quant_auto.py)


class IoType(str, Enum):
    """Input/output tensor type of the int8 TFLite model."""

    INT8 = "int8"  # the device quantizes inputs and dequantizes outputs with the manifest's parameters
    FLOAT = "float"  # QUANTIZE/DEQUANTIZE ops inside the model


@dataclass(frozen=True)
class ArtifactFormat:
    """One exportable artifact: its name, file, format and precision, exporter, and parity tolerance."""

    name: str
    file: str
    format: str  # "tflite" | "onnx"
    precision: str  # "fp32" | "int8"
    build: Callable  # (ExportContext) -> Built
    tolerance: Optional[float]  # max abs probability difference; None: int8, judged by the gates instead


FLOAT_TOLERANCE = 1e-4
FORMATS: dict[str, ArtifactFormat] = {
    f.name: f
    for f in (
        ArtifactFormat("tflite_fp32", "model_fp32.tflite", "tflite", "fp32", _tflite.build_fp32, FLOAT_TOLERANCE),
        ArtifactFormat("tflite_int8", "model_int8.tflite", "tflite", "int8", _tflite.build_int8, None),
        ArtifactFormat("onnx_fp32", "model_fp32.onnx", "onnx", "fp32", _onnx.build_fp32, FLOAT_TOLERANCE),
        ArtifactFormat("onnx_int8", "model_int8.onnx", "onnx", "int8", _onnx.build_int8, None),
    )
}
# short forms accepted by --formats
ALIASES: dict[str, tuple] = {
    "all": tuple(FORMATS),
    "tflite": ("tflite_fp32", "tflite_int8"), "onnx": ("onnx_fp32", "onnx_int8"),
    "fp32": ("tflite_fp32", "onnx_fp32"), "int8": ("tflite_int8", "onnx_int8"),
}
DEVICE_SCRIPT = "edgecnn_infer.py"


def resolve_formats(formats: str | Sequence[str]) -> tuple:
    """Names or short forms (comma-separated or a sequence) -> artifact names in registry order.

    Raises:
        ConfigError: an unknown name.
    """
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    chosen = set()
    for item in (i.strip().lower() for i in items if i and i.strip()):
        if item in FORMATS:
            chosen.add(item)
        elif item in ALIASES:
            chosen.update(ALIASES[item])
        else:
            raise ConfigError(f"unknown format '{item}' (choose from {', '.join([*FORMATS, *ALIASES])})")
    if not chosen:
        raise ConfigError("no format given (choose from " + ", ".join([*FORMATS, *ALIASES]) + ")")
    return tuple(n for n in FORMATS if n in chosen)


@dataclass(frozen=True)
class ExportConfig:
    """Everything `edgecnn export` needs besides the run directory."""

    formats: tuple = tuple(FORMATS)  # artifact names or short forms (see ALIASES)
    quant: Quantization = Quantization.PTQ  # how the int8 TFLite gets its quantization
    calib_samples: int = 300  # calibration images drawn from the training split
    calib_method: str = "minmax"  # ONNX quantize_static activation ranges: minmax | percentile (onnx.CALIB_METHODS)
    calib_percentile: float = 99.999  # calib_method "percentile": the histogram percentile kept
    onnx_weight_bits: str = "auto"  # int8 ONNX weights: "8", "7" (quantize_static's reduce_range) or "auto" (onnx.py)
    io: IoType = IoType.INT8  # int8 TFLite input/output type
    opset: int = 17  # ONNX opset
    tflite_batch: Optional[int] = 1  # fixed TFLite batch (None: dynamic, which XNNPACK does not fully take)
    seed: int = 0  # seeds the calibration draw and QAT
    qat_epochs: int = 3  # QAT fine-tuning epochs (best val_loss epoch kept)
    qat_lr: Optional[float] = None  # QAT learning rate; None: the run's learning rate / 10
    min_int8_macs: float = 0.8  # --quant auto: the least share of conv/dense MACs kept on int8 activations
    auto_qat: bool = True  # --quant auto: QAT when keeping layers in float does not meet the targets
    max_acc_drop: Optional[float] = None  # gate: points of test accuracy an artifact may lose (None: off)
    min_agreement: Optional[float] = None  # gate: top-1 agreement with the Keras model, fraction 0-1
    max_abs_diff: Optional[float] = None  # gate: max abs probability difference to the Keras model
    max_size_ratio: Optional[float] = None  # gate: int8/fp32 file size ratio per format
    max_class_drop: Optional[float] = None  # gate: points of one class's recall an artifact may lose
    strict: bool = False  # a broken gate writes nothing (otherwise the artifacts are written and the gate reported)
    progress: bool = False  # QAT: one line per fine-tuning epoch on stdout
    kernels: str = "xnnpack"  # TFLite CPU kernels that verify (parity, gates) and --quant auto judge (runtimes.KERNELS)

    @property
    def gates(self) -> Gates:
        """The parity gates, the same set `edgecnn bench` judges."""
        return Gates(max_acc_drop=self.max_acc_drop, min_agreement=self.min_agreement,
                     max_abs_diff=self.max_abs_diff, max_size_ratio=self.max_size_ratio,
                     max_class_drop=self.max_class_drop)

    def validate(self) -> "ExportConfig":
        """Check option values; return a copy with enums and format names resolved.

        Raises:
            ConfigError: an invalid value.
        """
        try:
            quant, io = Quantization(self.quant), IoType(self.io)
        except ValueError as e:
            raise ConfigError(f"{e} (quant: ptq|qat|auto, io: int8|float)") from None
        if self.calib_method not in _onnx.CALIB_METHODS:
            raise ConfigError(f"--calib-method {self.calib_method!r} is not one of {', '.join(_onnx.CALIB_METHODS)}")
        if not 50 < self.calib_percentile <= 100:
            raise ConfigError(f"--calib-percentile is a percentile above 50 and at most 100 "
                              f"(got {self.calib_percentile})")
        if self.onnx_weight_bits not in _onnx.WEIGHT_BITS:
            raise ConfigError(f"--onnx-weight-bits {self.onnx_weight_bits!r} is not one of "
                              f"{', '.join(_onnx.WEIGHT_BITS)}")
        if not 0 <= self.min_int8_macs <= 1:
            raise ConfigError(f"--min-int8-macs is a fraction between 0 and 1 (got {self.min_int8_macs})")
        if self.opset not in _onnx.OPSETS:
            raise ConfigError(f"--opset {self.opset} is not supported (choose {_onnx.OPSETS.start}..{_onnx.OPSETS.stop - 1})")
        check_kernels(self.kernels)
        if self.qat_epochs < 1:
            raise ConfigError("--qat-epochs must be at least 1")
        if self.qat_lr is not None and not self.qat_lr > 0:
            raise ConfigError("--qat-lr must be positive")
        if self.tflite_batch is not None and self.tflite_batch < 1:
            raise ConfigError("tflite_batch must be at least 1 (or None for a dynamic batch)")
        _ = self.gates  # validates the gate values
        from dataclasses import replace

        return replace(self, formats=resolve_formats(self.formats), quant=quant, io=io)


class ThresholdError(ExportError):
    """--strict: an artifact broke a parity gate. Nothing was written; `.result` holds the figures."""

    def __init__(self, message: str, result: "ExportResult"):
        super().__init__(message)
        self.result = result


@dataclass
class ExportResult:
    """What an export produced (or, under ThresholdError, would have)."""

    run_dir: Path
    export_dir: Path
    manifest: dict
    artifacts: list  # [{"name", **manifest entry, "size_ratio"}] in registry order
    warnings: list = field(default_factory=list)
    failures: list = field(default_factory=list)  # contracts.gates.Violation per broken gate
    written: bool = False
    seconds: float = 0.0

    @property
    def manifest_path(self) -> Path:
        from edgecnn.export.manifest import FILENAME

        return self.export_dir / FILENAME


def _size_ratios(entries: dict) -> dict:
    """int8 size / fp32 size per format, where both were exported."""
    out = {}
    for name, e in entries.items():
        twin = name.replace("int8", "fp32")
        if e.precision == "int8" and twin in entries:
            out[name] = e.size_bytes / entries[twin].size_bytes
    return out


def check_gates(gates: Gates, entries: dict, class_names=None) -> list:
    """The gates each artifact breaks (contracts.gates.Violation), in the words `edgecnn bench` uses."""
    ratios = _size_ratios(entries)
    return [v for name, e in entries.items()
            for v in gates.check(name, accuracy_drop=e.parity["accuracy_drop"], agreement=e.parity["top1_agreement"],
                                 max_abs_diff=e.parity["max_abs_diff"], size_ratio=ratios.get(name),
                                 accuracy=e.parity["accuracy"], n=e.parity.get("n"),
                                 class_drop=e.parity.get("class_drop"),
                                 worst=worst_class_record(e.parity, class_names))]


def _check_model(model, spec, num_classes: int) -> None:
    shape_in = tuple(int(d) for d in model.input_shape[1:])
    shape_out = int(model.output_shape[-1])
    if shape_in != tuple(spec.input_shape) or shape_out != num_classes:
        raise ShapeError(f"model.keras takes {shape_in} -> {shape_out} but the run records "
                         f"{tuple(spec.input_shape)} -> {num_classes}")


def _place(src: Path, dst: Path) -> None:
    """Copy a staged file to its final name atomically."""
    from edgecnn.io import atomic_path

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def export(run_dir, config: ExportConfig = ExportConfig(), data: Optional[str] = None) -> ExportResult:
    """Export a trained run to the configured formats and write RUN/export/.

    Args:
        run_dir: a run directory written by `edgecnn train`.
        config: formats, quantization and thresholds.
        data: where the run's data is now, when it moved (checked against what the run recorded).
    Returns:
        An `ExportResult` with the manifest and per-artifact figures.
    Raises:
        ConfigError: bad option, missing or incomplete run directory.
        ModelError: the model file cannot be read. ShapeError, ParityError: an artifact failed its check.
        ExportError: a conversion failed, too few calibration images, QAT impossible.
        ThresholdError: strict mode and an int8 artifact missed a threshold (nothing written).
    """
    from edgecnn.io import folder_lock
    from edgecnn.native import quiet_tensorflow
    from edgecnn.rundir import open_run

    quiet_tensorflow()
    t0 = time.perf_counter()
    config = config.validate()
    run = open_run(run_dir, data=data)
    with folder_lock(run.path, "edgecnn export"):  # one writer of a run and its export folder at a time
        _remove_stale(run.export_dir)
        return _export(run, config, t0)


def _remove_stale(export_dir: Path) -> None:
    """Staging folders and temporaries an interrupted export left (nobody else writes here: we hold the lock)."""
    if not export_dir.is_dir():
        return
    for p in export_dir.iterdir():
        if p.name.startswith(".staging-") and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(".") and ".tmp" in p.name and p.is_file():
            p.unlink(missing_ok=True)


def _other_kernels(fmt, path: Path, ds, reference: np.ndarray, kernels: str) -> dict:
    """An int8 artifact's parity on the arithmetic export did not verify it with: a .tflite's other CPU kernel
    sets, an .onnx's Q/DQ applied in float (see `verify.qdq_parity`)."""
    from edgecnn.export.verify import kernel_parity, qdq_parity

    if fmt.precision != "int8":
        return {}
    if fmt.format == "tflite":
        return kernel_parity(path, ds.test, ds.y_test, reference, skip=kernels)
    return qdq_parity(path, ds.test, ds.y_test, reference)


def _export(run, config: ExportConfig, t0: float) -> ExportResult:
    from edgecnn.contracts.manifest import ArtifactEntry, write_manifest
    from edgecnn.contracts.parity import one_class_warning
    from edgecnn.export.calibration import calibration_images
    from edgecnn.export.context import ExportContext
    from edgecnn.export.manifest import FILENAME, build_manifest
    from edgecnn.export.verify import verify
    from edgecnn.io import sha256

    spec = run.model_spec
    names = config.formats
    int8_wanted = any(FORMATS[n].precision == "int8" for n in names)
    ds = run.load_dataset()
    calib, warnings = (calibration_images(ds.train, config.calib_samples, config.seed) if int8_wanted
                       else (np.zeros((0, *ds.input_shape), np.float32), []))
    if config.quant == Quantization.QAT and not int8_wanted:
        warnings.append("--quant qat has no effect: no int8 format requested")
    model = run.load_model()
    _check_model(model, spec, ds.num_classes)
    reference = ds.test.predict_with(model)
    ref_pred = reference.argmax(1)
    ref_acc = float(np.mean(ref_pred == ds.y_test))
    stuck = one_class_warning(ref_pred, ds.y_test, ds.class_names, "test images", parity_follows=True)
    if stuck:
        warnings.append(stuck)

    export_dir = run.export_dir
    export_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=export_dir))
    try:
        ctx = ExportContext(config=config, run=run, model=model, spec=spec, ds=ds, calib=calib, reference=reference,
                            staging=staging, builders={n: f.build for n, f in FORMATS.items()}, warnings=warnings)
        entries = {}
        for name in names:
            fmt = FORMATS[name]
            built = ctx.artifact(name)
            par, ins, outs, used = verify(built.path, ds.test, ds.y_test, reference, input_shape=spec.input_shape,
                                          num_classes=ds.num_classes, tolerance=fmt.tolerance,
                                          kernels=config.kernels)
            entries[name] = ArtifactEntry(
                file=fmt.file, format=fmt.format, precision=fmt.precision, quant=built.quant,
                sha256=sha256(built.path), size_bytes=built.path.stat().st_size, inputs=tuple(ins),
                outputs=tuple(outs), parity=par, runtime=used, details=dict(built.info),
                parity_kernels=_other_kernels(fmt, built.path, ds, reference, config.kernels),
            )
        for name, ratio in _size_ratios(entries).items():
            entries[name].details["size_ratio_to_fp32"] = ratio
        manifest = build_manifest(run=run, arch=spec.arch, model_sha256=sha256(run.model_path),
                                  reference={"accuracy": ref_acc, "n": int(len(ds.y_test)),
                                             "smallest_class": smallest_class(ds.y_test, ds.class_names)},
                                  artifacts=entries,
                                  qat=config.quant == Quantization.QAT and int8_wanted, warnings=ctx.warnings)
        result = ExportResult(run_dir=run.path, export_dir=export_dir, manifest=manifest.to_dict(),
                              artifacts=[{"name": n, **e.to_dict()} for n, e in entries.items()],
                              warnings=ctx.warnings, failures=check_gates(config.gates, entries, ds.class_names))
        if config.strict and result.failures:
            raise ThresholdError("strict: parity gate failed: " + "; ".join(map(str, result.failures))
                                 + " (nothing written)", result)

        # a manifest is only ever next to the artifacts it describes: drop the old one first, write it last
        (export_dir / FILENAME).unlink(missing_ok=True)
        for name in names:
            _place(ctx.artifact(name).path, export_dir / FORMATS[name].file)
        _place(Path(__file__).resolve().parent.parent / "script" / DEVICE_SCRIPT, export_dir / DEVICE_SCRIPT)
        for name, fmt in FORMATS.items():  # artifacts of an earlier export that this manifest would not vouch for
            if name not in names:
                (export_dir / fmt.file).unlink(missing_ok=True)
        write_manifest(export_dir / FILENAME, manifest)
        result.written = True
        from edgecnn.report import refresh

        refresh(run.path)  # RUN/report.html shows the export
        result.seconds = time.perf_counter() - t0
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)
