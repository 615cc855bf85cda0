"""`--remote USER@HOST[:PORT]`: the tflite artifacts on boards over SSH, shown as rows in the same table.

The SSH work lives in `edgecnn.device.remote.run_remote` (the on-device script reports the bench row
keys); this module hands it the artifacts, the manifest and the test split, and adds parity against
the local Keras reference from the probabilities the board sends back.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgecnn.contracts.parity import manifest_mismatch, parity
from edgecnn.contracts.rows import REFUSED, Row
from edgecnn.runtimes.base import RuntimeOptions
from edgecnn.script.edgecnn_infer import integrity_refusal


def _failed(host: str, reason: str) -> Row:
    return Row(artifact="*", backend="tflite", device=host, status="failed", reason=reason)


def remote_rows(cfg, target, ref_probs, ref_accuracy=None) -> list:
    """Rows from each host in `cfg.remote` ("SPEC" or "SPEC NAME"), `cfg.remote_jobs` hosts at a time; a host that
    fails is one failed row, the others go on."""
    try:
        from edgecnn.device.fleet import run_fleet
        from edgecnn.device.remote import write_npz
    except ImportError:
        return [_failed(h, "remote benchmarking needs edgecnn.device.remote, which this installation lacks")
                for h in cfg.remote]
    artifacts = [a for a in target.artifacts if a.format == "tflite"]
    manifest = target.origin.get("manifest")
    if not artifacts or not manifest:
        why = "no tflite artifact to run" if not artifacts else "the export manifest is needed beside the model"
        return [_failed(h, why) for h in cfg.remote]
    names = {a.path.name: a for a in artifacts}
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgecnn-bench-") as tmp:
        npz = write_npz(Path(tmp) / "data.npz", target.x, target.y)
        got = run_fleet(cfg.remote, [a.path for a in artifacts], manifest, npz, jobs=cfg.remote_jobs,
                        timeout=cfg.remote_timeout, threads=cfg.threads, runs=cfg.runs,
                        warmup=max(1, cfg.warmup_runs), min_s=cfg.min_s, warmup_min_s=cfg.warmup_min_s,
                        max_s=cfg.max_s, allow_modified=cfg.allow_modified,
                        accept_new_host_keys=cfg.accept_new_host_keys,
                        kernels=RuntimeOptions.of(cfg).kernels)
        rows += [_adapt(d, names, ref_probs, ref_accuracy, target.y, target.class_names) for d in got]
    return rows


def _adapt(d: dict, names: dict, ref_probs, ref_accuracy, labels=None, class_names=None) -> Row:
    """A board's row dict -> Row, named like the local artifact, with parity against the local reference."""
    row = Row.from_dict(d)
    art = names.get(d.get("file") or "")
    if art is not None:
        row.artifact, row.precision, row.format = art.name, art.precision, "tflite"
        row.size_bytes = row.size_bytes or art.path.stat().st_size
    row.backend = row.backend or "tflite"
    if row.status == "failed" and integrity_refusal(row.reason):  # the script refused it on the board
        row.integrity = REFUSED[0]
    probs = d.get("probs")
    if row.status == "ok" and probs is not None:
        p = parity(np.asarray(probs, dtype=np.float32), ref_probs, labels, ref_accuracy)
        for k, v in p.row_fields(class_names).items():
            setattr(row, k, v)
        row.accuracy_drop = p.accuracy_drop if ref_accuracy is not None else None
        noted = d.get("manifest_predictions") == "differ" or (
            d.get("manifest_accuracy") is not None and abs(d["manifest_accuracy"] - d["accuracy"]) > 1e-9)
        if art is not None and art.entry is not None and not noted:  # the script has not said so already:
            # a board's kernels (its XNNPACK build, say) may round int8 otherwise than export's
            row.add_note(manifest_mismatch(art.entry.to_dict(), row.accelerator, p.accuracy, p.agreement, p.n))
    return row
