"""What a bench run measures: the artifacts, the test split they run on and the reference they are
compared with, from a run directory (its manifest) or from a single model file and a data source."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.contracts.manifest import FILENAME as MANIFEST
from edgecnn.contracts.manifest import Manifest, read_manifest
from edgecnn.errors import ConfigError
from edgecnn.runtimes import format_of


@dataclass
class Artifact:
    """One model file to run."""

    name: str  # manifest key ("tflite_int8"), "keras" for the trained model, or the file stem
    path: Path
    format: str  # keras | tflite | onnx
    precision: Optional[str] = None  # fp32 | int8 | ...
    entry: Optional[object] = None  # its contracts.manifest.ArtifactEntry, when there is one


@dataclass
class Target:
    """Artifacts, the evaluation split and the reference."""

    artifacts: list
    x: np.ndarray  # float32 NHWC in [0, 1]
    y: np.ndarray
    class_names: list
    reference: Optional[Artifact]  # the Keras model whose predictions the others are compared with
    reference_accuracy: Optional[float]  # from the manifest, used when the reference cannot run
    out_dir: Path
    origin: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=dict)
    manifest: Optional[Manifest] = None  # what the artifacts are checked against (sha256, I/O, classes)
    warnings: list = field(default_factory=list)  # what the images cannot show (a field set of training copies)


def _select(artifacts: list, names) -> list:
    names = [n for n in names if n]
    if not names:
        return artifacts
    known = [a.name for a in artifacts]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown artifact {', '.join(map(repr, unknown))} (this run has {', '.join(known)})")
    return [a for a in artifacts if a.name in names]


def _limit(x, y, limit):
    return (x[:limit], y[:limit]) if limit else (x, y)


def _manifest_artifacts(manifest: Manifest) -> list:
    return [Artifact(name=name, path=manifest.path_of(name), format=e.format, precision=e.precision, entry=e)
            for name, e in manifest.artifacts.items()]


def from_run(run_dir, cfg, data: Optional[str] = None) -> Target:
    """Artifacts of RUN/export/manifest.json plus the trained Keras model, on the run's test split.

    Raises:
        ConfigError: not a run directory, or no exports in it.
    """
    from edgecnn.rundir import open_run

    run = open_run(run_dir, data=data)
    mpath = run.export_dir / MANIFEST
    if not mpath.is_file():
        raise ConfigError(f"{run.path}: no exports to bench ({mpath} is missing); "
                          f"run `edgecnn export {run.path}` first")
    manifest = read_manifest(mpath)
    keras_art = Artifact("keras", run.model_path, "keras", "fp32")
    ds = run.load_dataset()
    x, y = _limit(ds.x_test, ds.y_test, cfg.limit)
    return Target(
        artifacts=_select([keras_art] + _manifest_artifacts(manifest), cfg.artifacts),
        x=x, y=y, class_names=list(ds.class_names), reference=keras_art,
        reference_accuracy=manifest.reference.get("accuracy") if not cfg.limit else None,
        out_dir=Path(cfg.out) if cfg.out else run.path / "bench",
        origin={"run_dir": str(run.path), "manifest": str(mpath)}, preprocessing=dict(ds.preprocessing),
        manifest=manifest,
    )


def _run_of(model: Path, manifest: Optional[Manifest]):
    """The run directory a model file came from, if it can be found."""
    from edgecnn.rundir import open_run

    candidates = [model.parent] if model.suffix == ".keras" else []
    if manifest is not None:
        candidates.append(model.parent.parent)
        src = manifest.source_run.get("path")
        if src:
            candidates.append(Path(src))
    for c in candidates:
        if (c / "config.json").is_file() and (c / "model.keras").is_file():
            try:
                return open_run(c)
            except ConfigError:
                continue
    return None


def from_model(model, data: Optional[str], cfg) -> Target:
    """One model file (.keras, .tflite, .onnx) on the test split of the run it came from, or on `data`.

    Preprocessing and class names come from the manifest beside the model (or the run's config.json
    for a .keras file). Without `data`, or with the run's own source, the run's test split is used (split as
    the run was: its seed and fractions); other data is `load_eval_split`'s: every image of a folder (labelled
    by class folder name, in the model's class order) or a source's test split.

    Raises:
        ConfigError: missing file, unknown format, no data to run on.
    """
    from edgecnn.data import DataConfig, load_dataset

    model = Path(model)
    if not model.is_file():
        raise ConfigError(f"{model}: no such model file")
    fmt = format_of(model)
    mpath = model.parent / MANIFEST
    manifest = read_manifest(mpath) if mpath.is_file() and fmt != "keras" else None
    run = _run_of(model, manifest)
    entry_name, entry = manifest.entry_for_file(model.name) if manifest else (None, None)
    art = Artifact(entry_name or ("keras" if fmt == "keras" else model.stem), model, fmt,
                   entry.precision if entry else ("fp32" if fmt == "keras" else None), entry)
    prep = manifest.preprocessing.to_dict() if manifest else (run.preprocessing if run else None)
    ref_acc = None
    names = (manifest.class_names if manifest else None) or (run.class_names if run else None)
    what, warnings = "test images", []
    if data is None or (run is not None and DataConfig(source=data).source == run.data_config.source):
        if run is None:
            raise ConfigError(f"{model}: no run recorded beside it; pass --data SOURCE (digits, an .npz, a folder)")
        ds = run.load_dataset()  # the run's own test split, split as it was trained (seed, fractions)
        ref_acc = manifest.reference.get("accuracy") if manifest and not cfg.limit else None
        x, y, prep = ds.test, ds.y_test, ds.preprocessing
        names = names or ds.class_names
    elif names:  # other images: a held-out or field folder in the model's class order, or a source's test split
        from edgecnn.data import load_eval_split

        kw = {"image_size": tuple(prep["image_size"]), "channels": int(prep["channels"]),
              "pixel_max": prep.get("pixel_max"), "orientation": prep.get("orientation", "stored")} \
            if prep else {}
        x, what = load_eval_split(data, list(names), **kw)
        y, prep = x.labels, x.prep
        if run is not None and hasattr(x.raw, "paths"):  # a folder: are its images copies of the run's own?
            from edgecnn.data.duplicates import field_warning

            copies = field_warning(x.raw.paths, run.data_config.source, data)
            if copies:
                warnings.append(copies)
    else:  # a model with no record of its classes: the source's own split and names
        ds = load_dataset(DataConfig(source=data))
        x, y, prep, names = ds.test, ds.y_test, ds.preprocessing, ds.class_names
    reference = art if fmt == "keras" else (Artifact("keras", run.model_path, "keras", "fp32") if run else None)
    x, y = (x[:cfg.limit], y[:cfg.limit]) if cfg.limit else (np.asarray(x), y)  # a Split reads only those
    return Target(
        artifacts=[art], x=x, y=y, class_names=list(names), reference=reference, reference_accuracy=ref_acc,
        out_dir=Path(cfg.out) if cfg.out else model.parent / f"bench_{model.stem}",
        origin={"model": str(model), "data": data or "run split", "manifest": str(mpath) if manifest else None,
                "run_dir": str(run.path) if run else None, "images": what},
        preprocessing=dict(prep), manifest=manifest, warnings=warnings,
    )


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
