"""`bench()`: every artifact on every backend that runs its format; one row each, never aborting."""
from __future__ import annotations

import datetime as _dt
import gc
import os
import platform
import time
from typing import Optional

import numpy as np

from edgecnn.bench.config import BenchConfig, BenchResult
from edgecnn.bench.sources import Artifact, Target, from_model, from_run
from edgecnn.bench.timing import timed_stats
from edgecnn.contracts.parity import manifest_mismatch, one_class_warning, parity, smallest_class
from edgecnn.contracts.rows import REFUSED, Row, at_device
from edgecnn.data.split import map_chunks
from edgecnn.errors import ConfigError, IntegrityError, ShapeError
from edgecnn.native import MemoryWindow, native_stderr, one_line
from edgecnn.runtimes import RUNTIMES, Unavailable, get_runtimes


def host_info() -> dict:
    """What the local rows ran on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"name": platform.node(), "machine": platform.machine(), "cpu": cpu, "cpus": os.cpu_count(),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


class _Reference:
    """The reference predictions every row is compared with."""

    def __init__(self, probs: Optional[np.ndarray], accuracy: Optional[float]):
        self.probs = probs
        self.pred = None if probs is None else probs.argmax(axis=1)
        self.accuracy = accuracy


def _parity(row: Row, probs: np.ndarray, y: np.ndarray, ref: _Reference, class_names=None) -> None:
    p = parity(probs, ref.probs, y, ref.accuracy)
    for k, v in p.row_fields(class_names).items():
        setattr(row, k, v)
    row.accuracy_drop = p.accuracy_drop if ref.accuracy is not None else None


def label(r: Row) -> str:
    """How a row is named in gate messages: 'tflite_int8 on tflite (xnnpack) @ pi@board'."""
    where = r.backend + (f" ({r.accelerator})" if r.accelerator else "")
    return f"{r.artifact} on {where}{at_device(r.device, ' @ ')}"


def check_gates(rows, gates, n=None) -> list:
    """The gates each ok row breaks (contracts.gates.Violation); `n`: the test images every row ran."""
    return [v for r in rows if r.status == "ok"
            for v in gates.check(label(r), accuracy_drop=r.accuracy_drop, agreement=r.agreement,
                                 max_abs_diff=r.max_abs_diff, accuracy=r.accuracy, n=n, class_drop=r.class_drop,
                                 worst=r.worst_class)]


def _check_shape(sess, x: np.ndarray, artifact: Artifact) -> None:
    want, have = tuple(sess.input_shape), tuple(x.shape[1:])
    if len(want) != len(have) or any(w is not None and w != h for w, h in zip(want, have)):
        raise ShapeError(f"the model takes input {list(want)} but the data is {list(have)} "
                         f"(wrong data source or preprocessing for {artifact.path.name})")


def _mixed_note(artifact: Artifact, backend) -> Optional[str]:
    """A mixed int8/float model (`--quant auto` kept layers in float, or ops the converter has no int8 kernel
    for) on a target that needs full int8."""
    details = (artifact.entry.details or {}) if artifact.entry else {}
    kept = (details.get("auto") or {}).get("kept_float")
    if kept and backend.integer_only:
        return (f"unsuitable: a mixed model ({len(kept)} layer(s) kept in float by --quant auto) does not run "
                f"fully on {backend.name}; export with --quant ptq or qat for it")
    islands = details.get("float_ops")
    if islands and backend.integer_only:
        return (f"unsuitable: {len(islands)} op(s) compute in float ({', '.join(sorted({o['op'] for o in islands}))}"
                f"; no int8 kernel in the converter) and do not run on {backend.name}")
    return None


def measure(artifact: Artifact, backend, variant: str, target: Target, cfg: BenchConfig, ref: _Reference,
            device: str, session=None, load_ms: Optional[float] = None):
    """One row: load, first inference, latency, accuracy and parity, throughput, the row's own peak memory.
    Returns (row, probs)."""
    with native_stderr(), MemoryWindow() as mem:  # runtimes log set-up and teardown on the process's stderr
        row, probs = _measure(artifact, backend, variant, target, cfg, ref, device, session, load_ms)
    if row.status == "ok":
        row.peak_rss_mb, row.footprint_mb = mem.peak_mb, mem.footprint_mb
    return row, probs


def _measure(artifact, backend, variant, target, cfg, ref, device, session, load_ms):
    row = Row(artifact=artifact.name, file=artifact.path.name, format=artifact.format, precision=artifact.precision,
              backend=backend.name, accelerator=variant or None, device=device, threads=cfg.threads, batch=cfg.batch)
    ignored = backend.ignored(cfg)
    if ignored:
        row.add_note(", ".join("--" + o.replace("_", "-") for o in ignored) + f" do(es) not apply to {backend.name}")
    if artifact.path.is_file():
        row.size_bytes = artifact.path.stat().st_size
        try:
            _integrity(row, artifact, target, cfg)
        except IntegrityError as e:  # never open a file that is not the one the manifest describes
            row.status, row.reason, row.integrity = "failed", str(e), REFUSED[0]
            return row, None
    else:
        row.status, row.reason = "failed", f"{artifact.path}: no such file"
        return row, None
    sess, probs, fn = session, None, None
    try:
        if sess is None:
            sess, load_ms = backend.load(artifact.path, cfg, variant)
        row.load_ms = load_ms
        row.runtime, row.accelerator, row.threads = sess.runtime, sess.accelerator or row.accelerator, sess.threads
        row.add_note(sess.note)
        row.add_note(_mixed_note(artifact, backend))
        _check_shape(sess, target.x, artifact)
        if target.manifest is not None and artifact.format != "keras":
            try:
                target.manifest.check_model(artifact.name if artifact.entry else None, sess, artifact.path.name)
            except ConfigError:
                row.integrity = REFUSED[1]
                raise
        if not sess.runs:  # a compiler's estimates: nothing to time or compare
            for k, v in sess.extras(target.x).items():
                setattr(row, k, v)
            return row, None
        fn = sess.runner(target.x[:1])
        t0 = time.perf_counter()
        fn()
        row.first_ms = (time.perf_counter() - t0) * 1e3
        if cfg.timing:
            row.latency = timed_stats(fn, cfg)
        probs = map_chunks(sess.predict, target.x)
        if probs.shape != (len(target.y), len(target.class_names)):
            raise ShapeError(f"outputs shape {list(probs.shape)}, expected [{len(target.y)}, "
                             f"{len(target.class_names)}] (one probability per class)")
        _parity(row, probs, target.y, ref, target.class_names)
        if artifact.entry is not None and row.backend in ("tflite", "tflm"):
            entry = artifact.entry.to_dict()
            # TFLite Micro: its own figures; a manifest from before they were recorded has the reference kernels'
            kernels = row.accelerator if row.backend == "tflite" else \
                "tflm" if "accuracy" in (entry.get("parity_kernels") or {}).get("tflm", {}) else "reference"
            row.add_note(manifest_mismatch(entry, kernels, row.accuracy, row.agreement, len(target.y)))
        if artifact.entry is not None and row.backend in ("onnxruntime", "openvino"):
            row.add_note(_saturated(artifact.entry, row.agreement))
        if cfg.timing:
            _throughput(row, sess, target.x, cfg)
        row.timing_includes_copies = bool(sess.includes_copies) if cfg.timing else None
        for k, v in sess.extras(target.x).items():
            setattr(row, k, v)
    except Unavailable as e:
        row.status, row.reason = "skipped", str(e)
    except Exception as e:  # one failing row never aborts the run
        if os.environ.get("EDGECNN_DEBUG") == "1":
            raise
        row.status, row.reason, probs = "failed", one_line(e), None
        for k in ("accuracy", "accuracy_drop", "agreement", "max_abs_diff", "first_ms", "latency", "throughput_ips"):
            setattr(row, k, None)  # half a measurement is not a result
    finally:
        fn = None  # the timed closure holds the runtime: drop it before closing
        if sess is not None and session is None:
            sess.close()
        sess = None
        gc.collect()  # runtimes log their teardown: let it happen inside measure()'s capture
    return row, probs


def _integrity(row: Row, artifact: Artifact, target: Target, cfg: BenchConfig) -> None:
    """row.integrity: the artifact against its manifest's sha256 (the keras model against the one exported)."""
    m = target.manifest
    if artifact.format == "keras":
        want = m.source_run.get("model_sha256") if m is not None else None
        if want:
            from edgecnn.io import sha256

            row.integrity = "verified" if sha256(artifact.path) == want else "unverified"
            if row.integrity != "verified":
                row.add_note("model.keras is not the model the manifest's artifacts were exported from")
        return
    if m is None:
        row.integrity = "unverified"
        row.add_note("unverified: no manifest beside the model")
        return
    row.integrity = m.check_file(artifact.name if artifact.entry else None, artifact.path, cfg.allow_modified)
    if row.integrity == "unverified":
        row.add_note(f"unverified: {artifact.path.name} is not in the manifest")
    elif row.integrity.startswith("modified"):
        row.add_note("the file differs from the manifest's sha256: run with --allow-modified")


def _saturated(entry, agreement: Optional[float]) -> Optional[str]:
    """A note when an int8 model agrees with the Keras model more than 2 points less than export measured, on a CPU
    whose x86 int8 kernels saturate on full-range 8-bit weights; None otherwise."""
    from edgecnn.runtimes.base import saturation_note

    verified = (entry.parity or {}).get("top1_agreement")
    if entry.precision != "int8" or agreement is None or not isinstance(verified, (int, float)) \
            or agreement >= verified - 0.02:
        return None
    why = saturation_note()
    return (f"agreement {agreement:.4f} against {verified:.4f} where export verified it: {why}7-bit weights avoid it "
            "(the int8 ONNX of `edgecnn export --onnx-weight-bits 7`)") if why else None


def _throughput(row: Row, sess, x: np.ndarray, cfg: BenchConfig) -> None:
    median = row.median_ms
    if cfg.batch == 1 or not sess.batch_ok:
        row.throughput_ips = 1e3 / median if median else None
        if cfg.batch > 1:
            row.batch = 1
            row.add_note(f"batch {cfg.batch} not possible (fixed batch or batch-1 runtime): throughput at batch 1")
        return
    stats = timed_stats(sess.runner(x[np.arange(cfg.batch) % len(x)]), cfg)
    row.throughput_ips = cfg.batch * 1e3 / stats["median_ms"] if stats["median_ms"] else None


def _reference(target: Target, cfg: BenchConfig, backends: list, device: str, rows: list) -> _Reference:
    """Run the Keras reference first: it is the keras row (when selected) and the baseline of every other row."""
    art = target.reference
    if art is None:
        return _Reference(None, target.reference_accuracy)
    from edgecnn.native import quiet_tensorflow

    quiet_tensorflow()  # the reference needs TensorFlow: import it without its start-up log lines
    keras_backend = RUNTIMES["keras"]
    wanted = any(b.name == "keras" for b in backends) and any(a is art for a in target.artifacts)
    try:
        sess, load_ms = keras_backend.load(art.path, cfg, "")
    except Exception as e:
        if wanted:
            rows.append(Row(artifact=art.name, file=art.path.name, format="keras", precision=art.precision,
                            backend="keras", device=device, status="failed", reason=one_line(e)))
        return _Reference(None, target.reference_accuracy)
    try:
        if wanted:
            row, probs = measure(art, keras_backend, "", target, cfg, _Reference(None, None), device, sess, load_ms)
            if probs is not None:
                row.accuracy_drop, row.agreement, row.max_abs_diff = 0.0, 1.0, 0.0
            rows.append(row)
        else:
            probs = map_chunks(sess.predict, target.x) if sess.input_shape == tuple(target.x.shape[1:]) else None
    finally:
        sess.close()
    if probs is None:
        return _Reference(None, target.reference_accuracy)
    return _Reference(probs, float(np.mean(probs.argmax(axis=1) == target.y)))


def bench(run_dir=None, *, model=None, data: Optional[str] = None, config: Optional[BenchConfig] = None,
          progress=None) -> BenchResult:
    """Run every artifact on every selected backend and write the reports.

    Args:
        run_dir: a run directory with RUN/export/manifest.json (bench all its artifacts and the Keras model).
        model: instead of `run_dir`, one model file (.keras, .tflite, .onnx) ...
        data: ... and the data source whose test split it runs on (default: the run it came from); with
            `run_dir`, where the run's data is now if it moved (checked against what the run recorded).
        config: what to run and how to time it; the parity gates.
        progress: optional callable(str) told about each row as it starts.
    Returns:
        A `BenchResult`: the rows, the files written, and the gate violations (empty when all pass).
    Raises:
        ConfigError: bad options, no run directory or exports, unknown backend, provider or artifact.
    """
    cfg = config or BenchConfig()
    if (run_dir is None) == (model is None):
        raise ConfigError("bench needs a run directory or --model FILE (not both)")
    backends = get_runtimes(cfg.backends)
    opts = cfg.runtime_options()
    variants = {b.name: b.variants(opts) for b in backends}  # validates provider names before any work
    if cfg.delegate:
        from edgecnn.runtimes.tflite import parse_delegate

        parse_delegate(cfg.delegate)
    target = from_run(run_dir, cfg, data) if run_dir is not None else from_model(model, data, cfg)
    host = host_info()
    device = f"local {host['machine']}"
    rows: list = []
    checkpoint = _row_writer(target.out_dir, rows) if cfg.write else (lambda: None)  # before any row is measured
    say = progress or (lambda s: None)
    say("keras reference")
    ref = _reference(target, cfg, backends, device, rows)
    predictions = {}
    for art in target.artifacts:
        if art is target.reference:
            continue
        for backend in backends:
            if art.format not in backend.formats:
                continue
            for variant in variants[backend.name]:
                say(f"{art.name} on {backend.name}{' ' + variant if variant else ''}")
                row, probs = measure(art, backend, variant, target, cfg, ref, device)
                rows.append(row)
                checkpoint()
                if probs is not None:
                    predictions.setdefault(art.name, probs)
    if cfg.remote:
        from edgecnn.bench.remote import remote_rows

        say(f"remote: {', '.join(cfg.remote)}")
        rows.extend(remote_rows(cfg, target, ref.probs, ref.accuracy))
    stuck = None if ref.pred is None else one_class_warning(ref.pred, target.y, target.class_names, "test images",
                                                             parity_follows=True)
    result = BenchResult(
        rows=rows, violations=check_gates(rows, cfg.gates, int(len(target.y))), host=host,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        settings={**cfg.to_dict(), "source": target.origin, "test_images": int(len(target.y)),
                  "smallest_class": smallest_class(target.y, target.class_names),
                  "reference_accuracy": ref.accuracy, "timing": _timing_text(cfg),
                  "memory": "peak_rss_mb: the process's peak resident memory during the row (kernel high-water "
                            "mark reset per row); footprint_mb: its rise above the memory at the row's start"},
        warnings=list(target.warnings) + ([stuck] if stuck else []),
    )
    if cfg.write:
        from edgecnn.bench.report import write_reports

        write_reports(result, target, ref.pred, predictions, cfg)
        run_dir_of = target.origin.get("run_dir")
        if run_dir_of and run_dir is not None and not cfg.out:  # the run's own bench: RUN/report.html shows it
            from edgecnn.report import refresh

            refresh(run_dir_of)
    return result


def _row_writer(out_dir, rows: list):
    """Check that the report folder can be written before measuring anything; then rewrite a partial
    bench.json after each row, so a failure late in a long run loses no row.

    Raises:
        ConfigError: the folder cannot be written (read-only file system, full disk, no permission).
    """
    from pathlib import Path

    from edgecnn.bench.config import SCHEMA
    from edgecnn.io import write_json

    path = Path(out_dir) / "bench.json"

    def write() -> None:
        write_json(path, {"schema": SCHEMA, "partial": True, "rows": [r.to_dict() for r in rows]})

    try:
        write()
    except OSError as e:
        raise ConfigError(f"cannot write {out_dir}: {e.strerror or e}") from None
    return write


def _timing_text(cfg: BenchConfig) -> str:
    if not cfg.timing:
        return "off"
    what = "set input + invoke + get output" if cfg.include_copies else "invoke only (tensor copies outside)"
    return (f"{what}; warm-up >= {cfg.warmup_runs} runs and >= {cfg.warmup_min_s} s, then >= {cfg.runs} runs "
            f"and >= {cfg.min_s} s (at most {cfg.max_s} s); time.perf_counter per run")
