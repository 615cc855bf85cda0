"""Train a classifier into a run directory.

Python::

    from edgecnn.data import DataConfig
    from edgecnn.train import TrainConfig, train
    result = train(TrainConfig(out="runs/d", data=DataConfig(source="digits")))
    result.metrics["test_accuracy"]

CLI::

    edgecnn train --out runs/d                       # digits, simple_cnn, defaults that reach >= 0.99
    edgecnn train --data my.npz --arch resnet8 --out runs/r --image-size 32 32
    edgecnn train --out runs/d --resume              # continue an interrupted run

The run directory layout is described in `edgecnn.rundir`.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.checkpoint import (BACKUP_DIR, BEST, LOG_CSV, epochs_done, load_best, make_checkpoint, read_log,
                                trim_log)
from edgecnn.data import DataConfig, Dataset, load_dataset
from edgecnn.data.duplicates import duplicate_warnings
from edgecnn.errors import ConfigError, DataError
from edgecnn.models import ModelSpec, build, compile_model, saveable
from edgecnn.io import atomic_path, folder_lock, write_json, write_text
from edgecnn.rundir import CONFIG, MODEL, prepare_out_dir, write_config
from edgecnn import precise_bn, transfer
from edgecnn.train_inputs import AugmentConfig, fit_inputs


STRATEGIES = ("default", "mirrored", "multiworker")
STREAMS = ("auto", "on", "off")
CLASS_WEIGHTS = ("none", "balanced")


def distribution(name: str):
    """The tf.distribute strategy for `name` (None for "default"): its scope builds and compiles the model, and
    Keras' fit splits each batch across its replicas."""
    if name == "default":
        return None
    import tensorflow as tf

    return tf.distribute.MirroredStrategy() if name == "mirrored" else tf.distribute.MultiWorkerMirroredStrategy()


def _scope(strategy):
    """The strategy's scope, where the model's variables are made (a null context without a strategy)."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


@dataclass(frozen=True)
class TrainConfig:
    """Everything `edgecnn train` needs; recorded in RUN/config.json."""

    out: str = "runs/digits"  # run directory
    data: DataConfig = field(default_factory=DataConfig)  # data source, split and preprocessing
    arch: str = "simple_cnn"  # architecture name (edgecnn.models.ARCHITECTURES)
    params: dict = field(default_factory=dict)  # hyperparameter overrides (filters, l2, dropout, learning_rate, ...)
    epochs: int = 60  # upper bound; early stopping usually ends sooner
    batch_size: int = 32  # small batches let BatchNorm statistics settle on small datasets
    patience: int = 10  # early-stopping patience in epochs (on val_loss)
    lr_patience: int = 4  # epochs without val_loss improvement before the learning rate halves
    augment: Optional[AugmentConfig] = None  # None: no augmentation
    precise_bn: bool = True  # BatchNorm statistics re-measured for the weights before each validation (precise_bn.py)
    seed: int = 0  # seeds Python, NumPy and TensorFlow (and the data split unless data.seed is set apart)
    overwrite: bool = False  # replace a non-empty run directory
    resume: bool = False  # continue an interrupted run in `out` from its last completed epoch
    backup_every_s: float = 10.0  # write the resume state at most this often (and when interrupted); 0: every epoch
    verbose: int = 0  # Keras fit verbosity (0 silent, 1 progress bar, 2 one line per epoch)
    progress: bool = False  # one line per epoch on stdout: loss, accuracy, validation figures, ETA
    freeze_epochs: int = 0  # transfer learning: epochs of the head alone on a frozen base first (0: no freezing)
    fine_tune_at: Optional[object] = None  # then unfreeze from this layer (index or name; None: every layer)
    fine_tune_lr: Optional[float] = None  # learning rate after unfreezing (None: a tenth of learning_rate)
    stream: str = "auto"  # on: preprocess batches from the raw pixels as training reads them (memory independent
    # of the number of images); off: float32 splits in memory; auto: on for image folders and for splits whose
    # float32 form exceeds train_inputs.IN_MEMORY_MB
    class_weight: str = "none"  # balanced: each class's loss weighted n / (classes x its count), so a rare class
    # counts as much as a common one (digits' eights against the rest, 10 of 1,097: 12-30% of test eights found
    # unweighted, 67-72% balanced)
    strategy: str = "default"  # default (one device) | mirrored (every GPU, or every logical device, of this
    # machine: tf.distribute.MirroredStrategy) | multiworker (several machines: MultiWorkerMirroredStrategy + TF_CONFIG)

    def __post_init__(self):
        """Every option checked before anything is written (a bad one never leaves a half-made run)."""
        for name, low in (("epochs", 1), ("batch_size", 1), ("patience", 0), ("lr_patience", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= {low} (got {getattr(self, name)})")
        if not 0 <= self.seed < 2 ** 32:
            raise ConfigError(f"--seed must be in 0..{2 ** 32 - 1} (got {self.seed})")
        if self.backup_every_s < 0:
            raise ConfigError(f"--backup-every must be >= 0 seconds (got {self.backup_every_s:g})")
        if self.freeze_epochs < 0 or self.freeze_epochs >= self.epochs:
            raise ConfigError(f"--freeze-epochs must be in 0..{self.epochs - 1} (below --epochs; got {self.freeze_epochs})")
        if self.fine_tune_lr is not None and not self.fine_tune_lr > 0:
            raise ConfigError(f"--fine-tune-lr must be > 0 (got {self.fine_tune_lr})")
        if isinstance(self.fine_tune_at, int) and self.fine_tune_at < 0:
            raise ConfigError(f"--fine-tune-at must be a layer index >= 0 or a layer name (got {self.fine_tune_at})")
        if self.stream not in STREAMS:
            raise ConfigError(f"unknown --stream '{self.stream}' (choose {', '.join(STREAMS)})")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ConfigError(f"unknown --class-weight '{self.class_weight}' (choose {', '.join(CLASS_WEIGHTS)})")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown --strategy '{self.strategy}' (choose {', '.join(STRATEGIES)})")
        ModelSpec(self.arch, params=dict(self.params)).resolved()  # unknown names, wrong types, out of range

    @property
    def balanced(self) -> bool:
        """Balanced class weights: the loss weighs classes equally and fitting logs the balanced accuracy."""
        return self.class_weight == "balanced"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data"] = self.data.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["data"] = DataConfig.from_dict(d.get("data", {}))
        if d.get("augment") is not None:
            d["augment"] = AugmentConfig(**d["augment"])
        return cls(**d)


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    metrics: dict  # test_accuracy, test_loss, per_class, ...
    history: dict  # per-epoch lists
    spec: ModelSpec
    dataset: dict  # split sizes and input shape
    seconds: float
    files: list = field(default_factory=list)
    replicas: int = 1  # devices the batches were split across (--strategy)
    warnings: list = field(default_factory=list)  # what the user should know about the result (one line each)
    cache: str = ""  # an image folder's disk cache of preprocessed images: where, or why not (Dataset.cache_line)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow ops deterministic."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # already enabled, or not supported by this build
        pass


@contextlib.contextmanager
def data_errors(kind: type = DataError):
    """Inside: a DataError raised while tf.data prepared a batch reaches us wrapped in a TensorFlow error; it
    leaves as `kind` (DataError or a subclass), one line. Other errors, and DataErrors already ours, pass."""
    try:
        yield
    except DataError:
        raise
    except Exception as e:
        line = next((ln for ln in str(e).splitlines() if "DataError" in ln), None)
        if line is not None:
            raise kind(line.split("DataError:", 1)[-1].strip()) from None
        raise


def _callbacks(out: Path, cfg: TrainConfig, history: dict) -> list:
    import keras

    best_so_far = min(history.get("val_loss", [np.inf]))
    return [
        make_checkpoint(out, cfg.backup_every_s, best_so_far),  # backup + best weights (see edgecnn.checkpoint)
        keras.callbacks.CSVLogger(str(out / LOG_CSV), append=True),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=cfg.lr_patience, min_lr=1e-5),
    ]


def fit_run(out: Path, cfg: TrainConfig, ds: Optional[Dataset] = None, extra_callbacks=()) -> TrainResult:
    """Train into an already prepared run directory (used by `train` and by tuning's final retrain)."""
    from edgecnn import reporting

    t0 = time.perf_counter()
    ds = ds or load_dataset(cfg.data)
    spec = ModelSpec(arch=cfg.arch, input_shape=ds.input_shape, num_classes=ds.num_classes, params=dict(cfg.params))
    spec.resolved()  # unknown hyperparameters fail before TensorFlow starts
    from edgecnn.models import check_input

    check_input(spec)
    seed_everything(cfg.seed)
    copies = ds.duplicates()
    summary = ds.summary(copies)
    write_config(out, data=cfg.data.to_dict(), preprocessing=ds.preprocessing, class_names=ds.class_names,
                 model=spec.to_dict(), train=cfg.to_dict(), dataset_summary=summary)
    if cfg.resume:
        trim_log(out, epochs_done(out))
    else:
        import shutil

        shutil.rmtree(out / BACKUP_DIR, ignore_errors=True)
        for stale in (out / LOG_CSV, out / BEST):
            stale.unlink(missing_ok=True)
    strategy = distribution(cfg.strategy)
    with _scope(strategy):
        model = compile_model(build(spec), spec, balanced=cfg.balanced)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    callbacks = _callbacks(out, cfg, read_log(out / LOG_CSV))
    if cfg.precise_bn:
        callbacks.append(precise_bn.callback(ds.train, cfg.seed, cfg.batch_size))
    if cfg.progress and not cfg.verbose:
        from edgecnn.checkpoint import epoch_lines

        callbacks.append(epoch_lines(cfg.epochs))
    checkpoint = callbacks[0]
    try:
        fit_kw = dict(fit_inputs(ds, cfg.batch_size, cfg.seed, cfg.stream, cfg.augment, cfg.class_weight),
                      callbacks=callbacks + list(extra_callbacks), verbose=cfg.verbose)
        with data_errors():
            if cfg.freeze_epochs:
                transfer.fit(model, spec, cfg, out, fit_kw, scope=lambda: _scope(strategy))
            else:
                model.fit(**fit_kw, epochs=cfg.epochs)
    except BaseException:
        checkpoint.flush()  # Ctrl-C or an error: `--resume` continues from the last completed epoch
        raise
    best = checkpoint.best_weights or load_best(out)  # this session's best, else the one before an interruption
    if best is not None:
        model.set_weights(best)
    if cfg.balanced:
        with _scope(strategy):
            saveable(model)  # the balanced accuracy compiled out: the saved model loads without edgecnn
    with atomic_path(out / MODEL) as tmp:
        model.save(tmp)
    (out / BEST).unlink(missing_ok=True)
    history = read_log(out / LOG_CSV)
    write_json(out / "history.json", history)
    metrics = evaluate(model, ds)
    near = ds.near_copies()  # now: reading every image before training grew its peak memory
    if near:
        copies = {**copies, "near": near}
        summary = ds.summary(copies)
        config = json.loads((out / CONFIG).read_text())
        write_json(out / CONFIG, {**config, "dataset": summary})
    write_json(out / "metrics.json", metrics)
    write_text(out / "classification_report.txt", metrics.pop("report_text"))
    reporting.plot_curves(history, out / "curves.png")
    reporting.plot_confusion(np.asarray(metrics["confusion_matrix"]), ds.class_names, out / "confusion_matrix.png",
                             title=f"{spec.arch} on test split (accuracy {metrics['test_accuracy']:.4f})")
    from edgecnn.report import refresh

    refresh(out)  # RUN/report.html
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    return TrainResult(run_dir=out, metrics=metrics, history=history, spec=spec, dataset=summary,
                       seconds=time.perf_counter() - t0, files=files, replicas=replicas,
                       warnings=duplicate_warnings(copies, len(ds.test))
                       + result_warnings(metrics, ds.y_train, cfg.class_weight), cache=ds.cache_line())


IMBALANCED = 10  # the largest training class this many times the smallest: imbalanced


def result_warnings(metrics: dict, y_train=None, class_weight: str = "none") -> list:
    """A model stuck on one class for the whole test split, or no more accurate than answering the largest class
    (parity against it proves little), and an imbalanced training split whose rare class the model misses
    (test recall below 0.5) without --class-weight: said when training ends rather than discovered at export."""
    from edgecnn.contracts.parity import one_class_on_test

    stuck = one_class_on_test(metrics)
    out = [stuck + " Train longer, or check the learning rate and the labels."] if stuck else []
    per_class = metrics.get("per_class") or {}
    if y_train is None or class_weight != "none" or not per_class:
        return out
    counts = np.bincount(np.asarray(y_train, np.int64), minlength=len(per_class))
    names = list(per_class)
    if counts.min() == 0 or counts.max() < IMBALANCED * counts.min():
        return out
    missed = [n for n in names if per_class[n]["support"] and per_class[n]["recall"] < 0.5]
    if missed:
        worst = min(missed, key=lambda n: per_class[n]["recall"])
        big, small = names[int(counts.argmax())], names[int(counts.argmin())]
        out.append(f"the training split is imbalanced ({big} {counts.max():,} images, {small} {counts.min():,}: "
                   f"{counts.max() / counts.min():.0f}x) and the model finds {per_class[worst]['recall']:.0%} of the "
                   f"test split's {worst}: --class-weight balanced weighs rare classes up")
    return out


def evaluate(model, ds: Dataset) -> dict:
    """Test-split metrics: accuracy, loss, per-class precision/recall/F1, confusion matrix, text report."""
    from sklearn.metrics import classification_report, confusion_matrix

    probs = ds.test.predict_with(model)
    pred = probs.argmax(axis=1)
    eps = 1e-7
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(pred)), ds.y_test], eps, 1.0))))
    labels = list(range(ds.num_classes))
    names = [str(c) for c in ds.class_names]
    rep = classification_report(ds.y_test, pred, labels=labels, target_names=names, output_dict=True, zero_division=0)
    # The macro average is over the classes the test split holds or the model predicts (scikit-learn's default):
    # a class with neither has no F1 at all, and counting it as 0 halved macro F1 on a 40-class folder whose
    # small classes left no image for the test split.
    present = sorted(set(ds.y_test.tolist()) | set(pred.tolist()))
    absent = [names[k] for k in labels if k not in present]
    text = classification_report(ds.y_test, pred, labels=present, target_names=[names[k] for k in present],
                                 digits=4, zero_division=0)
    if absent:
        text += (f"\n{len(absent)} class(es) with no test image and never predicted, left out of the averages: "
                 f"{', '.join(absent)}\n")
    return {
        "test_accuracy": float(np.mean(pred == ds.y_test)),
        "test_loss": loss,
        "test_samples": int(len(pred)),
        "per_class": {n: {k: float(rep[n][k]) for k in ("precision", "recall", "f1-score", "support")} for n in names},
        "macro_f1": float(np.mean([rep[names[k]]["f1-score"] for k in present])),
        "macro_f1_classes": len(present),
        "confusion_matrix": confusion_matrix(ds.y_test, pred, labels=labels).tolist(),
        "report_text": text,
    }


def train(cfg: TrainConfig, extra_callbacks=()) -> TrainResult:
    """Train `cfg.arch` on `cfg.data` and write the run directory.

    Args:
        cfg: the training configuration.
        extra_callbacks: more Keras callbacks (tests use one to interrupt a run).
    Returns:
        A `TrainResult` with the test metrics.
    Raises:
        ConfigError: the run directory is not empty (without overwrite/resume), or nothing to resume.
        DataError, ModelError: bad data or architecture.
    """
    from edgecnn.native import quiet_tensorflow

    quiet_tensorflow()
    out = Path(cfg.out)
    if cfg.overwrite and cfg.resume:
        raise ConfigError("--overwrite and --resume contradict each other")
    if cfg.backup_every_s < 0:
        raise ConfigError(f"--backup-every must be >= 0 seconds (got {cfg.backup_every_s:g})")
    if cfg.resume:
        if not (out / BACKUP_DIR).exists() or not (out / "config.json").exists():
            from edgecnn.rundir import unfinished_start

            started = out.is_dir() and unfinished_start([p for p in out.iterdir() if not p.name.startswith(".")])
            raise ConfigError(f"{out}: nothing to resume ({'a start that never saved an epoch' if started else 'no interrupted run there'}); "
                              "run the same command without --resume to begin again")
        from edgecnn.io import read_json

        recorded = TrainConfig.from_dict(read_json(out / "config.json")["train"])
        cfg = replace(recorded, out=str(out), resume=True, verbose=cfg.verbose, progress=cfg.progress)
    ds = load_dataset(cfg.data).prepare()  # data errors come before the run directory is touched
    with folder_lock(out, "edgecnn train"):  # a second writer of the same run is refused, not silently lost
        prepare_out_dir(out, overwrite=cfg.overwrite, resume=cfg.resume)
        return fit_run(out, cfg, ds, extra_callbacks)
