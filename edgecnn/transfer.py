"""The transfer-learning recipe `edgecnn train` runs when `--freeze-epochs` is set: the head alone on a frozen
base, then the layers from `--fine-tune-at` at `--fine-tune-lr`, BatchNorm kept frozen."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgecnn.checkpoint import epochs_done
from edgecnn.errors import ConfigError
from edgecnn.models import compile_model


def is_head(layer) -> bool:
    """The classifier head a transfer-learning recipe trains first: layers named head_* and the output `probs`."""
    return layer.name.startswith("head_") or layer.name == "probs"


def set_trainable(model, phase: str, fine_tune_at=None) -> None:
    """`head`: only the head trains (the base frozen; its BatchNorm layers run in inference mode).
    `fine`: layers from `fine_tune_at` (an index or a layer name; None: all) train too, BatchNorm kept frozen.
    `all`: every layer trainable again, as the architecture built it (what model.keras records)."""
    import keras

    start = 0
    if isinstance(fine_tune_at, str):
        names = [layer.name for layer in model.layers]
        if fine_tune_at not in names:
            raise ConfigError(f"--fine-tune-at {fine_tune_at}: no layer of that name in {model.name}")
        start = names.index(fine_tune_at)
    elif fine_tune_at is not None:
        start = int(fine_tune_at)
    for i, layer in enumerate(model.layers):
        if phase == "all":
            layer.trainable = True
        elif phase == "head":
            layer.trainable = is_head(layer)
        else:
            layer.trainable = is_head(layer) or (i >= start and not isinstance(layer, keras.layers.BatchNormalization))


def fit(model, spec, cfg, out: Path, fit_kw: dict, scope: Callable) -> None:
    """`freeze_epochs` epochs of the head alone on a frozen base, then the layers from `fine_tune_at` unfrozen at
    `fine_tune_lr` (default: a tenth of the learning rate); `cfg` is the run's TrainConfig. `scope()` is the
    distribution strategy's scope, in which the model is compiled again for each phase."""
    lr = float(spec.resolved()["learning_rate"])
    if not (cfg.resume and epochs_done(out) >= cfg.freeze_epochs):  # a resumed run past phase 1 skips it
        set_trainable(model, "head")
        with scope():
            compile_model(model, spec, balanced=cfg.balanced)
        model.fit(**fit_kw, epochs=cfg.freeze_epochs)
    set_trainable(model, "fine", cfg.fine_tune_at)
    with scope():
        compile_model(model, spec, learning_rate=cfg.fine_tune_lr or lr / 10, balanced=cfg.balanced)
    if cfg.epochs > cfg.freeze_epochs:
        model.fit(**fit_kw, epochs=cfg.epochs, initial_epoch=cfg.freeze_epochs)
    set_trainable(model, "all")
