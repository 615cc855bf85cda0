"""`edgecnn import`: a run directory from a Keras 3 model trained elsewhere, so export, bench, predict and the
on-device script work on it unchanged.

The run's model takes what every edgecnn model takes: float images in [0, 1] (the recorded preprocessing).
A model trained on another input range (`--input-range 0-255` or `-1-1`, or measured on the validation images
when left at auto) gets a Rescaling layer in front; one that outputs logits a Softmax behind; a binary
classifier with one output unit a two-class output [1 - p, p]. So its exports take and give what the device
script expects. The test metrics are measured on the data's test split, as `edgecnn train` measures them.

Python::

    from edgecnn.imported import ImportConfig, import_model
    result = import_model(ImportConfig(model="mine.keras", data="images/", out="runs/mine"))
    result.metrics["test_accuracy"]

CLI::

    edgecnn import mine.keras --data images/ --out runs/mine     # --input-range auto: measured
    edgecnn export runs/mine
"""
from __future__ import annotations

import re
import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from edgecnn.contracts.parity import chance_warning, one_class_warning
from edgecnn.data.duplicates import duplicate_warnings
from edgecnn.errors import ConfigError, ModelError

from edgecnn.models import IMPORTED as ARCH, float32_model  # ARCH: the run's spec names no edgecnn architecture
from edgecnn import imported_fit as measure
from edgecnn.imported_fit import AUTO, RANGES
from edgecnn.script.edgecnn_infer import ORIENTATIONS


@dataclass(frozen=True)
class ImportConfig:
    """What `edgecnn import` needs."""

    model: str  # a .keras file (Keras 3; loaded with safe_mode: no Lambda with code)
    data: str  # the data source its test metrics are measured on (digits, an .npz, an image folder)
    out: str  # the run directory to write
    image_size: Optional[tuple] = None  # (h, w) when the model's input size is not fixed
    input_range: str = AUTO  # what the model was trained on: 0-1, 0-255, -1-1, or auto (measured)
    seed: int = 0  # seeds the split, as `edgecnn train --seed`
    precise_bn: bool = False  # re-measure the BatchNorm moving statistics on training images (edgecnn.precise_bn)
    overwrite: bool = False  # replace a non-empty run directory
    orientation: str = AUTO  # how its photos were read in training: exif, stored, or auto (measured where it matters)

    def __post_init__(self):
        if self.input_range not in (*RANGES, AUTO):
            raise ConfigError(f"--input-range must be one of {', '.join(RANGES)} or {AUTO} (got {self.input_range})")
        if self.orientation not in (*ORIENTATIONS, AUTO):
            raise ConfigError(f"--orientation must be one of {', '.join(ORIENTATIONS)} or {AUTO} "
                              f"(got {self.orientation})")


@dataclass
class ImportResult:
    run_dir: Path
    metrics: dict
    wrapped: list  # what was added around the model: "Rescaling x255", "Softmax"
    input_range: str  # the range the model is fed, as asked or as measured (auto)
    range_fit: dict  # {range: {"accuracy", "loss", "batchnorm_mismatch"}} on the validation images, per input range
    warnings: list  # e.g. another input range classifies the validation images clearly better
    orientation: str = "stored"  # how image files are read: as asked, or as measured (auto)
    orientation_fit: Optional[dict] = None  # auto with photos that carry an EXIF orientation: {"images", "exif", "stored"}


# A Keras 2 SavedModel directory (tf.keras' `model.save("dir")` before Keras 3) loads only in tf_keras: a child
# process (tf_keras and Keras 3 are kept apart, as for QAT) loads it and writes it as .h5, which Keras 3 reads.
# A Lambda layer is refused, as Keras 3's safe_mode refuses one in a .keras file.
_SAVEDMODEL_CHILD = r"""
import sys
import tf_keras
m = tf_keras.models.load_model(sys.argv[1], compile=False)
lam = [l.name for l in m.submodules if type(l).__name__ == "Lambda"]
if lam:
    print("it has Lambda layers (" + ", ".join(lam) + "), code edgecnn will not load"); sys.exit(3)
m.save(sys.argv[2])
"""


def _from_savedmodel(path: Path, h5: Path) -> None:
    """Write the Keras 2 SavedModel directory `path` as the .h5 file `h5`, or raise a one-line ModelError."""
    import subprocess
    import sys

    if not (path / "saved_model.pb").is_file():
        raise ConfigError(f"{path}: a directory, not a model: give a .keras or .h5 file, or a SavedModel directory")
    if not (path / "keras_metadata.pb").is_file():
        raise ModelError(f"{path}: a SavedModel without Keras metadata (tf.saved_model.save, or Keras 3's "
                         f"model.export): edgecnn needs the Keras model; save it with model.save('mine.keras')")
    try:
        p = subprocess.run([sys.executable, "-c", _SAVEDMODEL_CHILD, str(path), str(h5)], capture_output=True,
                           text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{path}: tf_keras did not load the SavedModel in 600 s") from None
    if p.returncode != 0:
        said = (p.stdout.strip().splitlines() or [""])[-1] if p.returncode == 3 else \
            ([ln for ln in p.stderr.splitlines() if ln.strip()] or [f"exit {p.returncode}"])[-1]
        raise ModelError(f"{path}: a Keras 2 SavedModel that tf_keras cannot load as a model: {said[:200]}")


def _load(path: Path):
    import tempfile

    import keras

    if not path.exists():
        raise ConfigError(f"{path}: no such model file")
    try:
        if path.is_dir():
            with tempfile.TemporaryDirectory() as tmp:
                _from_savedmodel(path, Path(tmp) / "model.h5")
                model = keras.models.load_model(str(Path(tmp) / "model.h5"), compile=False)
        else:
            model = keras.models.load_model(str(path), compile=False)  # safe_mode: code in a Lambda is refused
    except (ConfigError, ModelError):
        raise
    except Exception as e:
        if "deserialization of a `Lambda` layer" in str(e):
            raise ModelError(f"{path}: it has a Lambda layer (Python code), which edgecnn does not load (Keras' "
                             f"safe_mode): rebuild the model with built-in layers (no Lambda is needed for the "
                             f"input range: --input-range does it), copy the weights over and save it again") from None
        unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", str(e))
        if unknown:
            registered = re.search(r"'registered_name': '([^']+)'", str(e).split("Could not locate", 1)[1])
            name = registered.group(1) if registered else unknown.group(1)
            raise ModelError(f"{path}: it has a custom class ({name}) that Keras does not know, code edgecnn does "
                             f"not load: rebuild the model with built-in layers, copy the weights over and save "
                             f"it again") from None
        raise ModelError(f"{path}: not a Keras 3 model edgecnn can load ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{path}: needs one image input and one class output, has {len(model.inputs)} and "
                         f"{len(model.outputs)}")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3:
        raise ModelError(f"{path}: the input must be images (N, H, W, C), got {list(model.inputs[0].shape)}")
    return model


def _two_classes(x, probs_ok: bool):
    """A one-output binary classifier's P(second class), or its logit, as the two classes' probabilities
    [1 - p, p]: fixed built-in layers (no custom layer), so every export and QAT's tf_keras rebuild take it."""
    import keras

    if not probs_ok:
        x = keras.layers.Activation("sigmoid", name="sigmoid")(x)
    # [1 - p, p] = p * [-1, 1] + [1, 0]. A logit head of Dense(2) and Softmax instead (softmax([-z/2, z/2])) is
    # exact too, but OpenVINO 2026.4's int8 CPU plugin returns a constant [0.996, 0] for a batch-1 model where a
    # one-unit Dense feeds Dense(2) and Softmax (README, import)
    return keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant([[-1.0, 1.0]]), trainable=False,
                              bias_initializer=keras.initializers.Constant([1.0, 0.0]), name="two_classes")(x)


def _wrap(model, input_shape, input_range: str, probs_ok: bool):
    """The model behind a Rescaling from [0, 1] and before a Softmax (or a binary classifier's two-class head),
    as needed: one flat functional graph."""
    import keras

    added = []
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    scale, offset = RANGES[input_range]
    if (scale, offset) != (1.0, 0.0):
        x = keras.layers.Rescaling(scale, offset, name="to_model_range")(x)
        added.append(f"Rescaling [0, 1] -> {input_range}")
    x = model(x)
    if int(model.outputs[0].shape[-1]) == 1:
        x = _two_classes(x, probs_ok)
        added.append("two-class output [1 - p, p] from its " + ("sigmoid" if probs_ok else "logit (sigmoid)"))
    elif not probs_ok:
        x = keras.layers.Softmax(name="probs")(x)
        added.append("Softmax (the model outputs logits)")
    return (keras.Model(inputs, x, name=model.name) if added else model), added


SETTLE_BATCH = 32  # the batch whose statistics are averaged (Keras' default training batch)


def _settled_per_range(model, ds, cfg: ImportConfig, src: Path) -> tuple:
    """({range: precise_bn.Snapshot}, images used): the model's trainable BatchNorm layers settled (edgecnn.precise_bn) on a fixed
    sample of training images fed in each input range, or only in the range asked for.

    Raises:
        ConfigError: the model has no trainable BatchNormalization layer.
    """
    from edgecnn.precise_bn import Settler, Snapshot, sample

    settler = Settler(model)
    if not settler.layers:
        raise ConfigError(f"{src}: --precise-bn: the model has no trainable BatchNormalization layer to settle")
    images = sample(ds.train, cfg.seed)
    out = {}
    for name, (scale, offset) in RANGES.items():
        if cfg.input_range in (AUTO, name):
            settler(images * scale + offset, SETTLE_BATCH)
            out[name] = Snapshot(settler.layers)
    return {name: out.get(name) or out[cfg.input_range] for name in RANGES}, len(images)


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
    model, low_precision = float32_model(_load(src))
    h, w, c = model.inputs[0].shape[1:]
    if (h is None or w is None) and not cfg.image_size:
        raise ConfigError(f"{src}: its input size is not fixed ({[h, w, c]}): pass --image-size H W")
    size = tuple(cfg.image_size or (int(h), int(w)))
    if c not in (1, 3):
        raise ModelError(f"{src}: takes {c}-channel images; edgecnn runs 1 (grey) or 3 (RGB)")
    data = DataConfig(source=cfg.data, image_size=size, channels=int(c), seed=cfg.seed,
                      orientation="stored" if cfg.orientation == AUTO else cfg.orientation)
    ds = load_dataset(data)
    n_out = int(model.outputs[0].shape[-1])
    if n_out == 1 and ds.num_classes != 2:
        raise DataError(f"{src.name} has one output (a binary classifier) but {cfg.data} has {ds.num_classes} "
                        f"classes")
    if n_out != ds.num_classes and n_out != 1:
        raise DataError(f"{cfg.data} has {ds.num_classes} classes but {src.name} outputs {n_out}")
    n_probe = min(256, len(ds.val))
    y_val = ds.y_val[:n_probe]
    from edgecnn.precise_bn import Snapshot, batchnorm_layers

    as_trained = Snapshot(batchnorm_layers(model))  # the statistics the model came with, which tell its range
    settled, settle_images = _settled_per_range(model, ds, cfg, src) if cfg.precise_bn else ({}, 0)

    def per_range(ds) -> tuple:  # (outputs, fit, input range, warnings) on the first validation images
        x_val, outputs = ds.val[:n_probe], {}
        as_trained.restore()
        mismatch = measure.batchnorm_mismatch(model, x_val) or {}
        for name, (scale, offset) in RANGES.items():
            if settled:  # each range is judged with the statistics measured in it
                settled[name].restore()
            outputs[name] = model.predict(x_val * scale + offset, verbose=0)
        fit = {name: {**measure.scores(p, y_val), **({"batchnorm_mismatch": mismatch[name]} if mismatch else {})}
               for name, p in outputs.items()}
        right = {name: measure.right_at_best(p, y_val) for name, p in outputs.items()}
        chosen, said = measure.choose_range(cfg.input_range, fit, n_probe, right)
        (settled[chosen] if settled else as_trained).restore()
        return outputs, fit, chosen, said

    outputs, range_fit, input_range, warnings = per_range(ds)
    orientation_fit = None
    if cfg.orientation == AUTO and ds.turned[0]:  # photos with an EXIF tag: read as its training read them
        orientation, orientation_fit, upright = measure.choose_orientation(model, ds, data, *RANGES[input_range])
        if orientation != data.orientation:  # the range again, on the photos read this way
            data, ds = dataclasses.replace(data, orientation=orientation), upright
            outputs, range_fit, input_range, warnings = per_range(ds)
    probe = outputs[input_range]
    probs_ok = measure.outputs_probabilities(probe)
    pred = measure.predicted(probe)
    (settled[input_range] if settled else as_trained).restore()
    stuck = one_class_warning(pred, y_val, ds.class_names, "validation images")
    if stuck:
        hint = " (--precise-bn re-measures them on the training images)" \
            if batchnorm_layers(model) and not settled else ""
        warnings.append(stuck + hint)
    else:
        warnings += measure.class_order_warning(pred, y_val, list(ds.class_names)) or \
            [w for w in [chance_warning(pred, y_val, ds.class_names, "validation images")] if w]
    copies = ds.duplicates()
    near = ds.near_copies()
    copies = {**copies, "near": near} if near else copies
    warnings += duplicate_warnings(copies, len(ds.test))
    run_model, added = _wrap(model, (*size, int(c)), input_range, probs_ok)
    if low_precision:
        added.insert(0, f"float32 computation (it computed in {low_precision})")
    if settled:
        added.append(f"BatchNorm statistics re-measured on {settle_images} training images "
                     f"({len(settled[input_range].layers)} layers)")
    out = Path(cfg.out)
    with folder_lock(out, "edgecnn import"):
        prepare_out_dir(out, overwrite=cfg.overwrite)
        with atomic_path(out / "model.keras") as tmp:
            run_model.save(tmp)
        write_config(out, data=data.to_dict(),
                     preprocessing=ds.preprocessing, class_names=ds.class_names,
                     model={"arch": ARCH, "input_shape": [*size, int(c)], "num_classes": ds.num_classes, "params": {},
                            "source": str(src.resolve()), "wrapped": added, "input_range": input_range,
                            "input_range_val_fit": range_fit,
                            **({"orientation_fit": orientation_fit} if orientation_fit else {})},
                     train={"imported": asdict(cfg), "seed": cfg.seed},
                     dataset_summary=ds.summary(copies))
        metrics = evaluate(run_model, ds)
        write_text(out / "classification_report.txt", metrics.pop("report_text"))
        write_json(out / "metrics.json", metrics)
        write_json(out / "history.json", {})
        refresh(out)
    return ImportResult(run_dir=out, metrics=metrics, wrapped=added, input_range=input_range,
                        range_fit=range_fit, warnings=warnings, orientation=data.orientation,
                        orientation_fit=orientation_fit)
