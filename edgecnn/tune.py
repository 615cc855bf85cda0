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

from dataclasses import dataclass, field, replace
from pathlib import Path

from edgecnn.data import load_dataset
from edgecnn.errors import ConfigError, MissingDependencyError
from edgecnn.io import folder_lock, read_json, write_json
from edgecnn.models import ModelSpec, build, compile_model, get_architecture
from edgecnn.rundir import prepare_out_dir
from edgecnn.train import TrainConfig, TrainResult, fit_inputs, fit_run, seed_everything

TUNER_DIR = "tuner"
BEST_FILE = "best_hyperparameters.json"
TRIALS_FILE = "trials.json"  # every trial: hyperparameters, objective, seconds; and the defaults' objective


@dataclass(frozen=True)
class TuneConfig:
    """Search settings; `train` carries the data, architecture and the final retrain's settings."""

    train: TrainConfig = field(default_factory=TrainConfig)  # data, architecture, out, seed, and the full retrain
    max_trials: int = 10  # models the Bayesian search tries
    trial_epochs: int = 8  # short training per trial
    objective: str = "val_accuracy"  # what the search maximises
    retrain: bool = True  # retrain the best configuration in full afterwards


@dataclass
class TuneResult:
    """The best hyperparameters, the trials' scores and the retrained run (when retrain is on)."""

    best_params: dict
    trials: list  # [{"trial_id", "score", "params", "seconds"}], best first
    train: TrainResult | None
    run_dir: Path
    defaults_score: float | None = None  # the objective of the architecture's default hyperparameters
    used_defaults: bool = False  # True when the search found nothing better than the defaults


def _hypermodel(cfg: TrainConfig, input_shape, num_classes):
    space = get_architecture(cfg.arch).search_space

    def build_model(hp):
        params = {**cfg.params, **space(hp)}
        spec = ModelSpec(cfg.arch, tuple(input_shape), num_classes, params)
        return compile_model(build(spec), spec)

    return build_model


def tune(cfg: TuneConfig) -> TuneResult:
    """Run (or resume) a Bayesian search, save the best hyperparameters, and retrain them in full.

    Raises:
        ConfigError: non-empty run directory without --overwrite/--resume; bad trial count.
        MissingDependencyError: keras-tuner (or the tensorboard it imports) is not installed.
    """
    if cfg.max_trials < 1 or cfg.trial_epochs < 1:
        raise ConfigError("--max-trials and --trial-epochs must be at least 1")
    try:
        import keras
        import keras_tuner
    except ImportError as e:
        raise MissingDependencyError("keras-tuner tensorboard", f"tuning ({e})") from None

    tcfg = cfg.train
    out = Path(tcfg.out)
    ds = load_dataset(tcfg.data).prepare()
    if tcfg.resume and not (out / TUNER_DIR).exists():
        raise ConfigError(f"{out}: nothing to resume (no tuner state there)")
    with folder_lock(out, "edgecnn tune"):  # a second writer of the same run is refused, not silently lost
        prepare_out_dir(out, overwrite=tcfg.overwrite, resume=tcfg.resume)
        return _search(cfg, tcfg, out, ds, keras, keras_tuner)


def _score(history, objective: str):
    values = (history.history if hasattr(history, "history") else history or {}).get(objective) or []
    return float(max(values)) if values else None


def _tuner_class(keras_tuner, seconds: dict, say, max_trials: int, objective: str):
    """BayesianOptimization that times each trial and reports it in one line as it ends."""
    import time

    class TimedBayesian(keras_tuner.BayesianOptimization):
        def run_trial(self, trial, *args, **kwargs):
            t0 = time.perf_counter()
            histories = super().run_trial(trial, *args, **kwargs)
            seconds[trial.trial_id] = round(time.perf_counter() - t0, 2)
            runs = histories if isinstance(histories, list) else [histories]
            score = max((v for v in (_score(h, objective) for h in runs) if v is not None), default=None)
            params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in trial.hyperparameters.values.items())
            say(f"trial {len(seconds)}/{max_trials}: {objective} {score if score is None else f'{score:.4f}'}  "
                f"{seconds[trial.trial_id]:.1f} s  {params}")
            return histories

    return TimedBayesian


def _defaults_score(cfg, tcfg, ds, keras) -> float | None:
    """The objective of the architecture's default hyperparameters, trained like a trial."""
    spec = ModelSpec(tcfg.arch, tuple(ds.input_shape), ds.num_classes, dict(tcfg.params))
    seed_everything(tcfg.seed)
    model = compile_model(build(spec), spec)
    history = model.fit(**fit_inputs(ds, tcfg.batch_size, tcfg.seed, tcfg.stream), epochs=cfg.trial_epochs,
                        verbose=0, callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=3)])
    return _score(history, cfg.objective)


def _search(cfg, tcfg, out: Path, ds, keras, keras_tuner) -> "TuneResult":
    say = print if tcfg.progress else (lambda *_: None)
    seconds: dict = {}
    seed_everything(tcfg.seed)
    tuner = _tuner_class(keras_tuner, seconds, say, cfg.max_trials, cfg.objective)(
        hypermodel=_hypermodel(tcfg, ds.input_shape, ds.num_classes),
        objective=cfg.objective,
        max_trials=cfg.max_trials,
        seed=tcfg.seed,
        directory=str(out),
        project_name=TUNER_DIR,
        overwrite=False,  # an existing oracle is reloaded: an interrupted search resumes
    )
    tuner.search(
        **fit_inputs(ds, tcfg.batch_size, tcfg.seed, tcfg.stream), epochs=cfg.trial_epochs, verbose=tcfg.verbose,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=3)],
    )
    best = tuner.get_best_hyperparameters(1)[0].values
    trials = [
        {"trial_id": t.trial_id, "score": t.score, "params": t.hyperparameters.values}
        for t in tuner.oracle.get_best_trials(num_trials=cfg.max_trials)
    ]
    write_json(out / BEST_FILE, {"objective": cfg.objective, "best": best, "trials": trials})
    earlier = (read_json(out / TRIALS_FILE) if (out / TRIALS_FILE).is_file() else {}).get("trials") or []
    known = {t["trial_id"]: t.get("seconds") for t in earlier}  # times of trials run before a resume
    timed = [dict(t, seconds=seconds.get(t["trial_id"], known.get(t["trial_id"]))) for t in trials]
    say("defaults: training the architecture's default hyperparameters like a trial, for comparison")
    defaults = _defaults_score(cfg, tcfg, ds, keras)
    best_score = trials[0]["score"] if trials else None
    not_better = defaults is not None and (best_score is None or best_score <= defaults)
    write_json(out / TRIALS_FILE, {"objective": cfg.objective, "best": best, "trials": timed,
                                   "defaults_score": defaults, "search_beat_defaults": not not_better})
    result = TuneResult(best_params=dict(best), trials=timed, train=None, run_dir=out, defaults_score=defaults,
                        used_defaults=not_better)
    if cfg.retrain:
        from edgecnn.train import BACKUP_DIR

        resume = tcfg.resume and (out / BACKUP_DIR).exists()  # an interrupted retrain continues
        final = replace(tcfg, params={**tcfg.params, **best}, resume=resume, overwrite=False)
        result.train = fit_run(out, final, ds)
    return result


def load_best(run_dir: str | Path) -> dict:
    """The best hyperparameters a search saved in `run_dir`."""
    return read_json(Path(run_dir) / BEST_FILE)["best"]
