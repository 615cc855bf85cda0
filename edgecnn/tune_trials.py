"""The KerasTuner side of a search: the hypermodel (the architecture's search space, the user's --param held
fixed), a BayesianOptimization tuner that times each trial and measures its int8 model against a device budget,
and the trial records read back from its oracle. `edgecnn.tune` runs the search and decides what is retrained.
"""
from __future__ import annotations

import os
from pathlib import Path

from edgecnn.contracts.rows import trial_number, trial_params
from edgecnn.errors import DataError
from edgecnn.models import ModelSpec, build, compile_model, get_architecture
from edgecnn.train import TrainConfig, data_errors

TUNER_DIR = "tuner"  # RUN/tuner/: KerasTuner's state (an interrupted search resumes from it)


def hypermodel(cfg: TrainConfig, input_shape, num_classes, balanced: bool = False):
    """`build_model(hp)` for KerasTuner; `balanced` compiles in the balanced accuracy (the search's objective)."""
    space = get_architecture(cfg.arch).search_space

    def build_model(hp):
        params = {**space(hp), **cfg.params}  # the user's --param wins (and is Fixed in the search: make_tuner)
        spec = ModelSpec(cfg.arch, tuple(input_shape), num_classes, params)
        return compile_model(build(spec), spec, balanced=balanced)

    return build_model


SECONDS, WORKER = "trial_seconds", "worker"  # figures each trial reports to the oracle besides the objective


def worker_index() -> int:
    """This process's worker number in a distributed search (KERASTUNER_TUNER_ID=worker<N>), else -1."""
    tid = os.environ.get("KERASTUNER_TUNER_ID", "")
    return int(tid[6:]) if tid.startswith("worker") and tid[6:].isdigit() else -1


def _tuner_class(keras_tuner, say, cfg):
    """BayesianOptimization that times each trial, measures its int8 model on the device when a budget or
    --measure-on asks, reports it in one line, and records its figures in the oracle (a metrics dict crosses
    the chief's gRPC channel whole and survives a resume)."""
    import time

    budget, objective, max_trials = cfg.budget, cfg.objective, cfg.max_trials

    class SearchDataError(DataError, keras_tuner.errors.FatalError):
        """A broken file: a user error, and one KerasTuner does not retry."""

    class TimedBayesian(keras_tuner.BayesianOptimization):
        probe = None  # trial_calibration(): what the per-trial int8 conversion and measurement need

        def on_trial_begin(self, trial):
            super().on_trial_begin(trial)
            from edgecnn.tune_workers import mark_trial

            mark_trial(self.project_dir, trial.trial_id)

        def _try_build(self, hp):
            self._last_model = super()._try_build(hp)
            return self._last_model

        def run_trial(self, trial, *args, **kwargs):
            from keras_tuner.src.engine import tuner_utils

            t0 = time.perf_counter()
            # a file that breaks breaks every trial: a FatalError ends the search now, where KerasTuner would
            with data_errors(SearchDataError):  # print a traceback per failed trial and give up after three
                histories = super().run_trial(trial, *args, **kwargs)
            took = round(time.perf_counter() - t0, 2)
            metrics = tuner_utils.convert_to_metrics_dict(histories, keras_tuner.Objective(objective, "max"))
            metrics.update({SECONDS: took, WORKER: float(worker_index())})
            score = metrics.get(objective)
            extra = ""
            if budget is not None:
                from edgecnn.tune_device import PENALTY, SCORE, measure

                figures = measure(self._last_model, self.probe, budget)
                broken = budget.violations(figures)
                metrics.update({k: float(v) for k, v in figures.items() if isinstance(v, (int, float))})
                metrics["over_budget"] = float(bool(broken))
                metrics[SCORE] = (score or 0.0) - (PENALTY if broken else 0.0)
                extra = (f"  int8 {figures['int8_size_bytes'] / 1024:.1f} KiB"
                         + (f", {figures['int8_latency_ms']:.3f} ms" if figures.get("int8_latency_ms") is not None
                            else "")
                         + (f", arena {figures['arena_bytes'] / 1024:.1f} KiB" if figures.get("arena_bytes") else "")
                         + (f" on {budget.measure_on}") + (f"  OVER BUDGET: {'; '.join(broken)}" if broken else ""))
            params = trial_params(trial.hyperparameters.values)
            who = f"worker{worker_index()} " if worker_index() >= 0 else ""
            say(f"{who}trial {trial_number(trial.trial_id)}/{max_trials}: {objective} "
                f"{score if score is None else f'{score:.4f}'}  {took:.1f} s{extra}  {params}", flush=True)
            return metrics

    return TimedBayesian


def make_tuner(cfg, out: Path, input_shape, num_classes: int, say=lambda *a, **k: None, probe=None):
    """The search's tuner on RUN/tuner/ (reloaded when it exists: an interrupted search resumes). In a worker of a
    distributed search the KERASTUNER_* environment makes its oracle a client of the chief's, which serves this
    same tuner's oracle (tune_workers.supervise). With a device budget the objective is `score` (the search's
    objective, minus one over the budget)."""
    import contextlib
    import io

    import keras_tuner

    from edgecnn.tune_device import SCORE

    tcfg = cfg.train
    constrained = cfg.budget is not None and cfg.budget.active
    fixed = keras_tuner.HyperParameters()  # --param KEY=VALUE holds KEY at VALUE: the search varies the others
    for k, v in tcfg.params.items():
        if isinstance(v, (bool, int, float, str)):
            fixed.Fixed(k, v)
    reloading = io.StringIO()  # KerasTuner prints "Reloading Tuner from ..." on stdout, which broke --json
    with contextlib.redirect_stdout(reloading):
        tuner = _tuner_class(keras_tuner, say, cfg)(
            hypermodel=hypermodel(tcfg, input_shape, num_classes, balanced=cfg.balanced),
            hyperparameters=fixed,
            tune_new_entries=True,
            objective=keras_tuner.Objective(SCORE if constrained else cfg.objective, "max"),
            max_trials=cfg.max_trials,
            seed=tcfg.seed,
            directory=str(out),
            project_name=TUNER_DIR,
            overwrite=False,
        )
    if reloading.getvalue().strip():
        say(f"resuming the search in {out / TUNER_DIR}")
    tuner.probe = probe
    return tuner


def trial_records(tuner, max_trials: int, objective: str = "val_accuracy") -> list:
    """Every trial the oracle holds, best first: id, score, hyperparameters, seconds, worker, status, the
    validation accuracy and `objective` (under their names), and the device figures when measured."""
    from edgecnn.tune_device import FIGURES

    out = []
    for t in tuner.oracle.get_best_trials(num_trials=max_trials):
        def last(name):
            return t.metrics.get_last_value(name) if t.metrics.exists(name) else None

        worker = last(WORKER)
        rec = {"trial_id": t.trial_id, "score": t.score, "params": t.hyperparameters.values,
               "seconds": last(SECONDS), "worker": None if worker is None or worker < 0 else f"worker{int(worker)}",
               "status": str(t.status)}
        for k in dict.fromkeys(("val_accuracy", objective, *FIGURES, "over_budget")):
            v = last(k)
            if v is not None:
                rec[k] = int(v) if k in ("int8_size_bytes", "arena_bytes", "sram_bytes", "cpu_ops") else \
                    bool(v) if k == "over_budget" else v
        out.append(rec)
    return out
