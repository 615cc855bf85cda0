"""Bayesian hyperparameter search with KerasTuner, then the best configuration retrained in full.

Python::

    from edgecnn.train import TrainConfig
    from edgecnn.tune import TuneConfig, tune
    result = tune(TuneConfig(train=TrainConfig(out="runs/t"), max_trials=10))
    result.best_params, result.train.metrics["test_accuracy"]

CLI::

    edgecnn train --tune --max-trials 10 --out runs/t
    edgecnn tune --max-trials 10 --out runs/t          # the same
    edgecnn tune --max-trials 10 --out runs/t --resume  # continue an interrupted search

The search space is the architecture's (`Architecture.search_space`); the tuner's state lives in
RUN/tuner/, the best hyperparameters in RUN/best_hyperparameters.json.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

from edgecnn.data import load_dataset
from edgecnn.errors import ConfigError, MissingDependencyError
from edgecnn.io import folder_lock, read_json, write_json
from edgecnn.models import ModelSpec, build, compile_model
from edgecnn.rundir import prepare_out_dir
from edgecnn.models.metrics import BALANCED_ACCURACY
from edgecnn.train import TrainConfig, TrainResult, data_errors, fit_run, seed_everything
from edgecnn.train_inputs import fit_inputs
from edgecnn.tune_device import DeviceBudget
from edgecnn.tune_trials import TUNER_DIR, make_tuner, trial_records

BEST_FILE = "best_hyperparameters.json"
TRIALS_FILE = "trials.json"  # every trial: hyperparameters, objective, seconds; and the defaults' objective
OBJECTIVES = ("val_accuracy", BALANCED_ACCURACY)  # what a search can maximise (TuneConfig.objective)


@dataclass(frozen=True)
class TuneConfig:
    """Search settings; `train` carries the data, architecture and the final retrain's settings."""

    train: TrainConfig = field(default_factory=TrainConfig)  # data, architecture, out, seed, and the full retrain
    max_trials: int = 10  # models the Bayesian search tries
    trial_epochs: int = 8  # short training per trial
    objective: str = "auto"  # what the search maximises: val_accuracy, or val_balanced_accuracy (the mean
    # per-class recall on validation); auto: the second with balanced class weights, else the first
    retrain: bool = True  # retrain the best configuration in full afterwards
    workers: int = 0  # 0: trials one after another in this process; N: KerasTuner's chief and N worker processes
    worker_threads: int = 0  # threads per worker (0: this machine's cores shared among the workers)
    chief: Optional[str] = None  # HOST:PORT the chief's oracle listens on, for workers on other machines
    worker_of: Optional[str] = None  # HOST:PORT of a chief: run one worker for it (on this machine) and exit
    worker_index: int = 0  # this worker's number with --worker-of (each machine's workers distinct)
    budget: Optional[DeviceBudget] = None  # measure each trial's int8 model on a device, and penalise the trials
    # over its limits (edgecnn.tune_device)

    def __post_init__(self):
        if self.objective == "auto":
            object.__setattr__(self, "objective", BALANCED_ACCURACY if self.train.balanced else "val_accuracy")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective '{self.objective}' (choose auto, {', '.join(OBJECTIVES)})")
        if self.max_trials < 1 or self.trial_epochs < 1:
            raise ConfigError("--max-trials and --trial-epochs must be at least 1")
        if self.workers < 0 or self.worker_threads < 0 or self.worker_index < 0:
            raise ConfigError("--workers, --worker-threads and --worker-index must be >= 0")
        for name in ("chief", "worker_of"):
            value = getattr(self, name)
            if value is not None:
                host, _, port = value.rpartition(":")
                if not host or not port.isdigit() or not 0 < int(port) < 65536:
                    raise ConfigError(f"--{name.replace('_', '-')} must be HOST:PORT (got {value})")
        if self.chief and self.worker_of:
            raise ConfigError("--chief and --worker-of contradict each other: a machine serves the oracle or joins one")

    @property
    def balanced(self) -> bool:
        """The search maximises the balanced accuracy: trials (and the defaults) compile it in."""
        return self.objective == BALANCED_ACCURACY

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("train", "budget")}
        return dict(d, train=self.train.to_dict(), budget=asdict(self.budget) if self.budget else None)

    @classmethod
    def from_dict(cls, d: dict) -> "TuneConfig":
        d = dict(d)
        budget = d.pop("budget", None)
        return cls(train=TrainConfig.from_dict(d.pop("train")), budget=DeviceBudget(**budget) if budget else None,
                   **d)


@dataclass
class TuneResult:
    """The best hyperparameters, the trials' scores and the retrained run (when retrain is on)."""

    best_params: dict
    trials: list  # [{"trial_id", "score", "params", "seconds"}], best first
    train: TrainResult | None
    run_dir: Path
    defaults_score: float | None = None  # the objective of the architecture's default hyperparameters
    used_defaults: bool = False  # True when the search found nothing better than the defaults: they are retrained
    device: dict = field(default_factory=dict)  # budget, Pareto front, plot (with a device budget)
    objective: str = "val_accuracy"  # what the search maximised (each trial record holds it under this name)


def tune(cfg: TuneConfig) -> TuneResult:
    """Run (or resume) a Bayesian search, save the best hyperparameters, and retrain them in full.

    Raises:
        ConfigError: non-empty run directory without --overwrite/--resume; bad trial count.
        MissingDependencyError: keras-tuner (or the tensorboard it imports) is not installed.
    """
    try:
        import keras  # noqa: F401  (a missing keras-tuner, or the tensorboard it imports, is one line before
        import keras_tuner  # noqa: F401  anything starts)
    except ImportError as e:
        raise MissingDependencyError("keras-tuner tensorboard", f"tuning ({e})") from None
    from edgecnn.native import quiet_tensorflow

    quiet_tensorflow()  # as train does: each trial's model traces its own predict function, and TensorFlow
    # advises about retracing after the fifth

    tcfg = cfg.train
    out = Path(tcfg.out)
    if cfg.worker_of:  # a worker for a chief elsewhere: trials only, no retrain, no run directory of its own
        join(cfg, out)
        return TuneResult(best_params={}, trials=[], train=None, run_dir=out)
    ds = load_dataset(tcfg.data).prepare()
    if tcfg.resume and not (out / TUNER_DIR).exists():
        raise ConfigError(f"{out}: nothing to resume (no tuner state there)")
    with folder_lock(out, "edgecnn tune"):  # a second writer of the same run is refused, not silently lost
        prepare_out_dir(out, overwrite=tcfg.overwrite, resume=tcfg.resume)
        return _search(cfg, tcfg, out, ds)


def _score(history, objective: str):
    values = (history.history if hasattr(history, "history") else history or {}).get(objective) or []
    return float(max(values)) if values else None


def trial_calibration(cfg, ds):
    """What the per-trial int8 conversion and measurement need: calibration images, the preprocessing and the
    class names (None without --measure-on or a budget)."""
    if cfg.budget is None:
        return None
    from edgecnn.export.calibration import calibration_images

    return {"calib": calibration_images(ds.train, 100, cfg.train.seed)[0], "preprocessing": ds.preprocessing,
            "class_names": ds.class_names}


def search_kwargs(cfg, ds, verbose: int) -> dict:
    """What `tuner.search` gets: the (streamed when large) splits, the trial epochs, early stopping."""
    import keras

    from edgecnn import precise_bn

    tcfg = cfg.train
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=3)]
    if tcfg.precise_bn:
        callbacks.insert(0, precise_bn.callback(ds.train, tcfg.seed, tcfg.batch_size))
    return dict(fit_inputs(ds, tcfg.batch_size, tcfg.seed, tcfg.stream, class_weight=tcfg.class_weight),
                epochs=cfg.trial_epochs, verbose=verbose,
                callbacks=callbacks)


def _defaults_score(cfg, tcfg, ds, probe) -> tuple:
    """The objective of the architecture's default hyperparameters, trained like a trial, and its device figures
    when the search measures them (on the trials' `probe`)."""
    spec = ModelSpec(tcfg.arch, tuple(ds.input_shape), ds.num_classes, dict(tcfg.params))
    seed_everything(tcfg.seed)
    model = compile_model(build(spec), spec, balanced=cfg.balanced)
    with data_errors():  # outside the trials (with --workers, the chief's only fit), a broken file is one line too
        history = model.fit(**search_kwargs(cfg, ds, 0))
    figures = None
    if cfg.budget is not None:
        from edgecnn.tune_device import measure

        figures = measure(model, probe, cfg.budget)
    return _score(history, cfg.objective), figures


def _search(cfg, tcfg, out: Path, ds) -> "TuneResult":
    import time

    say = print if tcfg.progress else (lambda *_, **__: None)
    probe = trial_calibration(cfg, ds)
    seed_everything(tcfg.seed)
    workers = {}
    t0 = time.perf_counter()
    if cfg.workers or cfg.chief:  # KerasTuner's chief/worker engine: an oracle server and worker processes
        from edgecnn.tune_workers import supervise

        tuner = make_tuner(cfg, out, ds.input_shape, ds.num_classes)
        tuner.oracle.verbose = tcfg.verbose  # KerasTuner's own trial tables only with -vv
        tuner.save()  # as KerasTuner's chief does before serving
        workers = supervise(cfg, out, tuner.oracle, say)  # this process is the chief: it serves the oracle
    else:
        tuner = make_tuner(cfg, out, ds.input_shape, ds.num_classes, say, probe)
        tuner.search(**search_kwargs(cfg, ds, tcfg.verbose))
    search_seconds = round(time.perf_counter() - t0, 2)
    best_trials = tuner.oracle.get_best_trials(1)
    if not best_trials:
        raise ConfigError(f"{out}: the search ended with no completed trial")
    best = best_trials[0].hyperparameters.values
    timed = trial_records(tuner, cfg.max_trials, cfg.objective)
    write_json(out / BEST_FILE, {"objective": cfg.objective, "best": best,
                                 "trials": [{k: t[k] for k in ("trial_id", "score", "params")} for t in timed]})
    say("defaults: training the architecture's default hyperparameters like a trial, for comparison")
    defaults, defaults_figures = _defaults_score(cfg, tcfg, ds, probe)
    best_trial = timed[0] if timed else {}
    best_score = best_trial.get(cfg.objective, best_trial.get("score"))
    # The defaults are held to the trials' budget: defaults over it cannot "serve as well" as a trial inside it.
    defaults_over = (cfg.budget.violations(defaults_figures)
                     if cfg.budget is not None and cfg.budget.active and defaults_figures else [])
    not_better = bool(defaults is not None and (best_score is None or best_score <= defaults) and
                      (not defaults_over or best_trial.get("over_budget", True)))
    device = {}
    if cfg.budget is not None:
        from edgecnn.tune_device import pareto_front, plot_pareto

        front = pareto_front(timed, objective=cfg.objective)
        for t in timed:
            t["pareto"] = t["trial_id"] in front
        plot = plot_pareto(timed, front, out / "pareto.png", cfg.budget, cfg.objective)
        inside = [t for t in timed if not t.get("over_budget")]
        device = {"budget": asdict(cfg.budget), "pareto_front": front, "plot": plot.name if plot else None,
                  "inside_budget": len(inside),
                  "defaults_figures": {**defaults_figures, "over_budget": bool(defaults_over)} if defaults_figures
                  else defaults_figures,
                  "best_inside_budget": inside[0]["trial_id"] if inside else None}
        if cfg.budget.active and not inside:
            say(f"note: no trial met the budget ({'; '.join(cfg.budget.violations(best_trial))} for the best); "
                "the retrained model is " + ("the defaults" if not_better else "the best over it"))
    # What is retrained: the best configuration measured, the defaults included (a tie keeps the defaults)
    retrain_params = dict(tcfg.params) if not_better else {**tcfg.params, **best}
    write_json(out / TRIALS_FILE, {"objective": cfg.objective, "best": best, "trials": timed,
                                   "defaults_score": defaults, "search_beat_defaults": not not_better,
                                   "retrained": "defaults" if not_better else best_trial.get("trial_id"),
                                   "workers": workers, "search_seconds": search_seconds, "device": device})
    result = TuneResult(best_params=dict(best), trials=timed, train=None, run_dir=out, defaults_score=defaults,
                        used_defaults=not_better, device=device, objective=cfg.objective)
    if cfg.retrain:
        from edgecnn.train import BACKUP_DIR

        resume = tcfg.resume and (out / BACKUP_DIR).exists()  # an interrupted retrain continues
        final = replace(tcfg, params=retrain_params, resume=resume, overwrite=False)
        result.train = fit_run(out, final, ds)
    return result


def load_best(run_dir: str | Path) -> dict:
    """The best hyperparameters a search saved in `run_dir`."""
    return read_json(Path(run_dir) / BEST_FILE)["best"]


def run_worker(cfg, out: Path) -> None:
    """A worker of a distributed search, in this process: runs the trials the chief's oracle hands it (the
    KERASTUNER_* environment says where) until it is told to stop."""
    from edgecnn.native import quiet_tensorflow
    from edgecnn.tune_workers import set_threads

    set_threads()
    quiet_tensorflow()
    ds = load_dataset(cfg.train.data)
    seed_everything(cfg.train.seed)
    ds.prepare("train", "val")
    say = print if cfg.train.progress else (lambda *a, **k: None)
    tuner = make_tuner(cfg, out, ds.input_shape, ds.num_classes, say, trial_calibration(cfg, ds))
    tuner.search(**search_kwargs(cfg, ds, 0))


def join(cfg, out: Path) -> None:
    """`edgecnn tune --worker-of HOST:PORT`: one worker on this machine for a chief elsewhere, until it is done."""
    from edgecnn.tune_workers import role_env

    host, _, port = cfg.worker_of.rpartition(":")
    os.environ.update(role_env(f"worker{cfg.worker_index}", host, int(port), cfg.worker_threads))
    out.mkdir(parents=True, exist_ok=True)
    run_worker(cfg, out)


def main(argv=None) -> int:
    """`python -m edgecnn.tune worker RUN/tune_job.json` (started by `tune_workers.supervise`)."""
    role, job = list(argv if argv is not None else sys.argv[1:])[:2]
    if role != "worker":
        raise SystemExit("usage: python -m edgecnn.tune worker RUN/tune_job.json")
    run_worker(TuneConfig.from_dict(json.loads(Path(job).read_text())), Path(job).parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
