"""`edgecnn import`: a run directory from a Keras 3 model trained elsewhere, so export, bench, predict and the
on-device script work on it unchanged.

The run's model takes what every edgecnn model takes: float images in [0, 1] (the recorded preprocessing).
A model trained on another input range (`--input-range 0-255` or `-1-1`) gets a Rescaling layer in front, and
one that outputs logits a Softmax behind, so its exports take and give what the device script expects. The
test metrics are measured on the data's test split, as `edgecnn train` measures them.

Python::

    from edgecnn.imported import ImportConfig, import_model
    result = import_model(ImportConfig(model="mine.keras", data="images/", out="runs/mine"))
    result.metrics["test_accuracy"]

CLI::

    edgecnn import mine.keras --data images/ --out runs/mine --input-range 0-255
    edgecnn export runs/mine
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.errors import ConfigError, ModelError

from edgecnn.models import IMPORTED as ARCH  # the run's spec names no edgecnn architecture
RANGES = {"0-1": (1.0, 0.0), "0-255": (255.0, 0.0), "-1-1": (2.0, -1.0)}  # input range -> (scale, offset) from [0, 1]


@dataclass(frozen=True)
class ImportConfig:
    """What `edgecnn import` needs."""

    model: str  # a .keras file (Keras 3; loaded with safe_mode: no Lambda with code)
    data: str  # the data source its test metrics are measured on (digits, an .npz, an image folder)
    out: str  # the run directory to write
    image_size: Optional[tuple] = None  # (h, w) when the model's input size is not fixed
    input_range: str = "0-1"  # what the model was trained on: 0-1, 0-255 or -1-1
    seed: int = 0  # seeds the split, as `edgecnn train --seed`
    overwrite: bool = False  # replace a non-empty run directory

    def __post_init__(self):
        if self.input_range not in RANGES:
            raise ConfigError(f"--input-range must be one of {', '.join(RANGES)} (got {self.input_range})")


@dataclass
class ImportResult:
    run_dir: Path
    metrics: dict
    wrapped: list  # what was added around the model: "Rescaling x255", "Softmax"


def _load(path: Path):
    import keras

    if not path.is_file():
        raise ConfigError(f"{path}: no such model file")
    try:
        model = keras.models.load_model(str(path), compile=False)  # safe_mode: code in a Lambda is refused
    except Exception as e:
        raise ModelError(f"{path}: not a Keras 3 model edgecnn can load ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{path}: needs one image input and one class output, has {len(model.inputs)} and "
                         f"{len(model.outputs)}")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3:
        raise ModelError(f"{path}: the input must be images (N, H, W, C), got {list(model.inputs[0].shape)}")
    return model


def _wrap(model, input_shape, input_range: str, probs_ok: bool):
    """The model behind a Rescaling from [0, 1] and before a Softmax, as needed: one flat functional graph."""
    import keras

    added = []
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    scale, offset = RANGES[input_range]
    if (scale, offset) != (1.0, 0.0):
        x = keras.layers.Rescaling(scale, offset, name="to_model_range")(x)
        added.append(f"Rescaling [0, 1] -> {input_range}")
    x = model(x)
    if not probs_ok:
        x = keras.layers.Softmax(name="probs")(x)
        added.append("Softmax (the model outputs logits)")
    return (keras.Model(inputs, x, name=model.name) if added else model), added


def import_model(cfg: ImportConfig) -> ImportResult:
    """Write a run directory for a model trained elsewhere: model.keras (wrapped as needed), config.json with the
    preprocessing, metrics.json and the report.

    Raises:
        ConfigError: bad options or a used run directory. ModelError: a model edgecnn cannot take.
        DataError: the data cannot be loaded, or its classes do not match the model's outputs.
    """
    from edgecnn.data import DataConfig, load_dataset
    from edgecnn.errors import DataError
    from edgecnn.io import atomic_path, folder_lock, write_json, write_text
    from edgecnn.native import quiet_tensorflow
    from edgecnn.report import refresh
    from edgecnn.rundir import prepare_out_dir, write_config
    from edgecnn.train import evaluate

    quiet_tensorflow()
    src = Path(cfg.model)
    model = _load(src)
    h, w, c = model.inputs[0].shape[1:]
    if (h is None or w is None) and not cfg.image_size:
        raise ConfigError(f"{src}: its input size is not fixed ({[h, w, c]}): pass --image-size H W")
    size = tuple(cfg.image_size or (int(h), int(w)))
    if c not in (1, 3):
        raise ModelError(f"{src}: takes {c}-channel images; edgecnn runs 1 (grey) or 3 (RGB)")
    ds = load_dataset(DataConfig(source=cfg.data, image_size=size, channels=int(c), seed=cfg.seed))
    n_out = int(model.outputs[0].shape[-1])
    if n_out != ds.num_classes:
        raise DataError(f"{cfg.data} has {ds.num_classes} classes but {src.name} outputs {n_out}")
    scale, offset = RANGES[cfg.input_range]
    probe = model.predict(ds.test[:16] * scale + offset, verbose=0)
    probs_ok = bool(np.all(probe >= -1e-6) and np.allclose(probe.sum(axis=1), 1.0, atol=1e-3))
    run_model, added = _wrap(model, (*size, int(c)), cfg.input_range, probs_ok)
    out = Path(cfg.out)
    with folder_lock(out, "edgecnn import"):
        prepare_out_dir(out, overwrite=cfg.overwrite)
        with atomic_path(out / "model.keras") as tmp:
            run_model.save(tmp)
        write_config(out, data=DataConfig(source=cfg.data, image_size=size, channels=int(c), seed=cfg.seed).to_dict(),
                     preprocessing=ds.preprocessing, class_names=ds.class_names,
                     model={"arch": ARCH, "input_shape": [*size, int(c)], "num_classes": n_out, "params": {},
                            "source": str(src.resolve()), "wrapped": added},
                     train={"imported": asdict(cfg), "seed": cfg.seed}, dataset_summary=ds.summary())
        metrics = evaluate(run_model, ds)
        write_text(out / "classification_report.txt", metrics.pop("report_text"))
        write_json(out / "metrics.json", metrics)
        write_json(out / "history.json", {})
        refresh(out)
    return ImportResult(run_dir=out, metrics=metrics, wrapped=added)
