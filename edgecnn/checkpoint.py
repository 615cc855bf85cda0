"""Fault tolerance of a training run at (almost) no cost to its speed.

Keras' `BackupAndRestore` plus a best-model `ModelCheckpoint` write two weight files after every epoch:
on digits (0.4 s epochs) that was 0.09 s an epoch, a fifth of the training time. `RunCheckpoint` keeps the
best weights in memory and writes the backup, the best weights and the per-epoch log together, at most
every `interval_s` seconds, and once more when training is interrupted (Ctrl-C, an error), so `--resume`
continues from the last completed epoch. A hard kill loses at most `interval_s` of training.

On disk (RUN/):
    backup/latest.weights.h5, backup/training_metadata.json   model + optimizer, epochs done (Keras' format)
    best.weights.npz                                           best weights by val_loss, as of the backup
    history.csv                                                one row per completed epoch (trimmed on resume)
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.io import atomic_path
from edgecnn.models.metrics import BALANCED_ACCURACY

BACKUP_DIR = "backup"  # BackupAndRestore state, removed when a run finishes
LOG_CSV = "history.csv"  # per-epoch log, appended across resumed sessions
BEST = "best.weights.npz"  # best weights so far (interrupted runs only; model.keras holds them at the end)


def read_log(path: Path) -> dict:
    """history.csv -> {"epoch": [...], "loss": [...], ...}."""
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    hist: dict = {}
    for r in rows:
        for k, v in r.items():
            hist.setdefault(k, []).append(int(v) if k == "epoch" else float(v))
    return hist


def epochs_done(out: Path) -> int:
    """Completed epochs recorded by the last backup of an interrupted run (0 when there is none)."""
    meta = out / BACKUP_DIR / "training_metadata.json"
    return int(json.loads(meta.read_text())["epoch"]) if meta.exists() else 0


def trim_log(out: Path, epochs: int) -> None:
    """Drop log rows of epochs after the last backup: a resumed run trains them again."""
    path = out / LOG_CSV
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) < epochs]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(kept)


def load_best(out: Path) -> Optional[list]:
    path = out / BEST
    if not path.exists():
        return None
    with np.load(path) as z:
        return [z[f"w{i}"] for i in range(len(z.files))]


def make_checkpoint(out: Path, interval_s: float, best_loss: float = math.inf):
    """A `RunCheckpoint` callback for a run directory (Keras imported here, not at module import)."""
    import keras

    class RunCheckpoint(keras.callbacks.BackupAndRestore):
        """BackupAndRestore that writes at most every `interval_s` s and on `flush()`, with the best weights."""

        # No per-batch hook: any callback with one makes Keras wait for every batch's logs (no async dispatch),
        # which cost about 10% of a digits epoch.
        on_train_batch_end = keras.callbacks.Callback.on_train_batch_end

        def __init__(self):
            super().__init__(str(out / BACKUP_DIR), save_freq="epoch", delete_checkpoint=True)
            self.interval_s = interval_s
            self.best_loss = best_loss
            self.best_weights: Optional[list] = None  # set when this session improves on best_loss
            self._saved_at = time.monotonic()
            self._unsaved = self._best_unsaved = False

        def on_epoch_end(self, epoch, logs=None):
            self._current_epoch, self._last_batch_seen = epoch + 1, 0
            loss = (logs or {}).get("val_loss")
            if loss is not None and float(loss) < self.best_loss:
                self.best_loss, self.best_weights = float(loss), self.model.get_weights()
                self._best_unsaved = True
            self._unsaved = True
            if time.monotonic() - self._saved_at >= self.interval_s:
                self.flush()

        def flush(self) -> None:
            """Write the state as of the last completed epoch (nothing when none completed since the last write)."""
            if not self._unsaved:
                return
            if self._best_unsaved:
                with atomic_path(out / BEST) as tmp:
                    np.savez(tmp, **{f"w{i}": w for i, w in enumerate(self.best_weights)})
            self._save_model()
            self._saved_at = time.monotonic()
            self._unsaved = self._best_unsaved = False

    return RunCheckpoint()


def epoch_lines(total_epochs: int, write=print, keras_module=None, prefix: str = "epoch"):
    """A Keras callback printing one line per epoch: loss and accuracy, their validation figures, the epoch's
    time and an ETA (an upper bound: early stopping usually ends sooner). It has no batch hook, so Keras keeps
    its asynchronous dispatch (a batch hook costs a fifth of the training time on small models)."""
    import time

    if keras_module is None:
        import keras as keras_module

    class EpochLines(keras_module.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.t_start = time.perf_counter()
            self.first = None

        def on_epoch_begin(self, epoch, logs=None):
            self.t_epoch = time.perf_counter()
            if self.first is None:
                self.first = epoch

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            took = time.perf_counter() - self.t_epoch
            done = epoch - self.first + 1
            mean = (time.perf_counter() - self.t_start) / done
            left = max(0, total_epochs - epoch - 1) * mean
            figures = "  ".join(f"{k} {logs[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy",
                                                                BALANCED_ACCURACY) if k in logs)
            eta = f"ETA <= {left / 60:.1f} min" if left >= 60 else f"ETA <= {left:.0f} s"
            write(f"{prefix} {epoch + 1}/{total_epochs}  {figures}  {took:.1f} s  {eta}", flush=True)

    return EpochLines()
