"""The run directory: what `edgecnn train` writes and every later stage reads.

Layout::

    RUN/model.keras            the trained Keras 3 model (best validation weights)
    RUN/config.json            data config, preprocessing, class names, model spec, train config, seed
    RUN/history.json           per-epoch metrics
    RUN/metrics.json           test_accuracy, test_loss, per-class precision/recall/F1
    RUN/classification_report.txt, curves.png, confusion_matrix.png
    RUN/export/                artifacts and manifest.json (edgecnn export)

Python::

    from edgecnn.rundir import open_run
    run = open_run("runs/d")
    model, ds = run.load_model(), run.load_dataset()
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgecnn import __version__
from edgecnn.errors import ConfigError, ModelError
from edgecnn.io import read_json, write_json

CONFIG = "config.json"
MODEL = "model.keras"
SCHEMA = "edgecnn.run/1"


def prepare_out_dir(out: str | os.PathLike, overwrite: bool = False, resume: bool = False) -> Path:
    """Create `out`, refusing a non-empty folder unless `overwrite` or `resume`.

    Raises:
        ConfigError: the folder exists, is not empty, and neither flag is set.
    """
    import shutil

    from edgecnn.io import LOCK

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder")
    entries = [p for p in out.iterdir() if p.name != LOCK] if out.exists() else []
    if entries and not (overwrite or resume) and not unfinished_start(entries):
        raise ConfigError(f"{out} is not empty: pass --overwrite to replace it or --resume to continue it")
    if entries and (overwrite and not resume or unfinished_start(entries) and not resume):
        for p in entries:  # a plain re-run after a start that never finished an epoch begins again
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


# what a training start writes before its first epoch is saved: nothing there can be resumed
START_FILES = {CONFIG, "history.csv", "history.json"}


def unfinished_start(entries) -> bool:
    """True when a run folder holds only what a start writes before its first saved epoch (a bad option or a kill
    in the first epoch): nothing to resume, so a plain re-run may begin again there."""
    return bool(entries) and all(Path(p).name in START_FILES for p in entries)


def write_config(out: Path, *, data: dict, preprocessing: dict, class_names: list, model: dict,
                 train: dict, dataset_summary: dict) -> Path:
    """Write RUN/config.json: everything needed to rebuild the model and its preprocessing."""
    return write_json(out / CONFIG, {
        "schema": SCHEMA,
        "edgecnn_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": data,
        "preprocessing": preprocessing,
        "class_names": list(class_names),
        "model": model,
        "train": train,
        "dataset": dataset_summary,
    })


@dataclass
class Run:
    """A finished training run, read back from its folder."""

    path: Path
    config: dict
    data_override: Optional[str] = None  # the run's data moved: where it is now (checked against the record)

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    @property
    def preprocessing(self) -> dict:
        """The recorded preprocessing; a run recorded before `orientation` existed read files as stored."""
        prep = self.config["preprocessing"]
        return {**prep, "orientation": prep.get("orientation", "stored")}

    @property
    def class_names(self) -> list:
        return self.config["class_names"]

    @property
    def model_spec(self):
        from edgecnn.models import ModelSpec

        return ModelSpec.from_dict(self.config["model"])

    @property
    def data_config(self):
        from edgecnn.data import DataConfig

        recorded = dict(self.config["data"])
        if self.data_override:
            recorded["source"] = self.data_override
        return DataConfig.from_dict(recorded)

    def load_model(self):
        """The trained Keras 3 model."""
        import keras

        try:
            return keras.models.load_model(self.model_path, compile=False)
        except Exception as e:
            raise ModelError(f"{self.model_path}: cannot load the Keras model ({type(e).__name__}: {e})") from None

    def load_dataset(self):
        """The run's data splits, rebuilt from the recorded data config (deterministic from its seed).

        Raises:
            ConfigError: the rebuilt preprocessing differs from the one recorded.
        """
        from edgecnn.data import load_dataset

        try:
            return self._checked(load_dataset(self.data_config))
        except ConfigError as e:
            if not self.data_override:
                raise
            raise ConfigError(f"{e}; --data with a run directory is where the run's own data moved to: to run its "
                              f"models on other images, `edgecnn bench --model {self.export_dir / 'model_int8.tflite'}"
                              f" --data {self.data_override}`") from None

    def _checked(self, ds):
        """`ds` if it is the run's data split as the run split it; ConfigError naming what differs."""
        where = f"{self.data_override}: not the data of {self.path}" if self.data_override else \
            f"{self.path}: the data source changed since training"
        if ds.class_names != self.class_names:
            raise ConfigError(f"{where} (classes {ds.class_names[:5]}... != recorded {self.class_names[:5]}...)")
        if ds.preprocessing != self.preprocessing:
            raise ConfigError(f"{where} (preprocessing {ds.preprocessing} != recorded {self.preprocessing})")
        recorded = self.config.get("dataset") or {}
        found = ds.summary()
        for k in ("train", "val", "test"):  # the same images, split the same way (the split is seeded)
            if k in recorded and recorded[k] != found[k]:
                raise ConfigError(f"{where} ({found['train'] + found['val'] + found['test']} images, split "
                                  f"{found['train']}/{found['val']}/{found['test']}; the run recorded "
                                  f"{recorded['train']}/{recorded['val']}/{recorded['test']})")
        if recorded.get("split_sha256") and recorded["split_sha256"] != found["split_sha256"]:
            raise ConfigError(f"{where}: the same counts, but the splits hold other images than the run's (split "
                              f"fingerprint {found['split_sha256']}, recorded {recorded['split_sha256']}), so its "
                              f"test figures would include images the model trained on; train the run again")
        return ds


def open_run(path: str | os.PathLike, data: Optional[str] = None) -> Run:
    """Open a run directory written by `edgecnn train`; `data` is where its data is now, if it moved (checked
    against the recorded class names, image shape and image counts when the data is loaded).

    Raises:
        ConfigError: missing folder, missing or unreadable config.json or model.keras.
    """
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{p}: no such run directory")
    cfg = p / CONFIG
    if not cfg.is_file():
        raise ConfigError(f"{p}: not a run directory (no {CONFIG}; run `edgecnn train --out {p}` first)")
    try:
        config = read_json(cfg)
    except Exception as e:
        raise ConfigError(f"{cfg}: unreadable ({e})") from None
    missing = [k for k in ("data", "preprocessing", "class_names", "model") if k not in config]
    if missing:
        raise ConfigError(f"{cfg}: incomplete, missing {', '.join(missing)}")
    if not (p / MODEL).is_file():
        raise ConfigError(f"{p}: incomplete run directory (no {MODEL})")
    if data:
        from edgecnn.data import DataConfig

        data = DataConfig(source=data).source  # absolute, as training records it
        if not Path(data).exists():
            raise ConfigError(f"--data {data}: no such file or folder")
    return Run(path=p, config=config, data_override=data)
