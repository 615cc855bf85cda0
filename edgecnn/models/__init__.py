"""The model factory: one spec builds the same architecture in Keras 3 and in tf_keras.

Python::

    import keras
    from edgecnn.models import ModelSpec, build, copy_weights
    spec = ModelSpec("simple_cnn", input_shape=(8, 8, 1), num_classes=10)
    k3 = build(spec)                      # Keras 3 (training, tuning, export)
    import tf_keras
    k2 = build(spec, tf_keras)            # legacy Keras 2 (quantization-aware training)
    copy_weights(k3, k2)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgecnn.errors import ModelError
from edgecnn.models import architectures as A

IMPORTED = "imported"  # the spec of `edgecnn import`'s runs: the model file is the architecture
COMMON_DEFAULTS = {"optimizer": "adam", "learning_rate": 1e-3}
OPTIMIZERS = ("adam", "sgd", "rmsprop")


@dataclass(frozen=True)
class Architecture:
    """A named architecture: its builder, default hyperparameters and tuning search space."""

    name: str
    builder: Callable  # (keras_module, input_shape, num_classes, **hyperparameters) -> model
    defaults: dict  # architecture hyperparameters (optimizer and learning rate are common)
    min_size: int  # smallest input height/width the layers accept
    search_space: Callable  # (keras_tuner.HyperParameters) -> dict of hyperparameters
    description: str = ""
    open_params: bool = False  # a custom builder: any --param is passed to it as is


def _simple_cnn_space(hp) -> dict:
    return {
        "filters": hp.Choice("filters", [16, 32, 64]),
        "l2": hp.Float("l2", 1e-5, 1e-2, sampling="log"),
        "learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"),
        "optimizer": hp.Choice("optimizer", list(OPTIMIZERS)),
        "dropout": hp.Float("dropout", 0.0, 0.5, step=0.1),
        "activation": hp.Choice("activation", ["relu", "tanh"]),
    }


def _lr_space(hp) -> dict:
    return {
        "learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"),
        "optimizer": hp.Choice("optimizer", list(OPTIMIZERS)),
    }


def _cifar_space(hp) -> dict:
    return {**_lr_space(hp), "filters": hp.Choice("filters", [16, 32, 64]),
            "dense_units": hp.Choice("dense_units", [128, 256, 512]),
            "dropout": hp.Float("dropout", 0.0, 0.4, step=0.1)}


def _mobilenet_space(hp) -> dict:
    return {**_lr_space(hp), "dropout": hp.Float("dropout", 0.0, 0.5, step=0.1)}


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("simple_cnn", A.simple_cnn,
                     {"filters": 64, "dense_units": 128, "l2": 1e-4, "dropout": 0.3, "activation": "relu",
                      "bn_momentum": 0.9},
                     4, _simple_cnn_space, "Conv-BN-Act-Pool x2, Dense-BN-Act-Dropout head"),
        Architecture("convnet", A.convnet, {}, 18, _lr_space, "Keras book MNIST convnet (valid padding)"),
        Architecture("tf_cnn", A.tf_cnn, {"dense_units": 64}, 18, _lr_space,
                     "TensorFlow tutorial CNN: Conv32-Pool-Conv64-Pool-Conv64-Dense64"),
        Architecture("cifar_cnn", A.cifar_cnn, {"filters": 32, "dense_units": 512, "dropout": 0.25}, 10, _cifar_space,
                     "Keras CIFAR-10 example CNN: two conv blocks, Dense, softmax"),
        Architecture("vgg_cifar", A.vgg_cifar, {"l2": 0.0, "bn_momentum": 0.9}, 8, _lr_space,
                     "VGG-style 3x2 conv blocks, Dense(256)"),
        Architecture("resnet8", A.resnet8, {"l2": 1e-4, "bn_momentum": 0.9}, 8, _lr_space, "MLPerf Tiny ResNet-8"),
        Architecture("mobilenet_v2", A.mobilenet_v2,
                     {"alpha": 0.35, "dropout": 0.2, "weights": None, "bn_momentum": 0.9},
                     32, _mobilenet_space, "keras.applications MobileNetV2 (alpha, random init)"),
    )
}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: architecture, input shape, classes, hyperparameters."""

    arch: str = "simple_cnn"  # key of ARCHITECTURES
    input_shape: tuple = (8, 8, 1)  # (h, w, c) after preprocessing
    num_classes: int = 10  # number of output classes
    params: dict = field(default_factory=dict)  # hyperparameters overriding the defaults

    def resolved(self) -> dict:
        """Defaults merged with the overrides, each checked against its default's type and range.

        Raises:
            ModelError: an unknown hyperparameter, or a value of the wrong type or out of range.
        """
        if self.arch == IMPORTED:  # a model trained elsewhere: only the optimizer settings (QAT fine-tunes it)
            return {**COMMON_DEFAULTS, **self.params}
        arch = get_architecture(self.arch)
        defaults = {**COMMON_DEFAULTS, **arch.defaults}
        unknown = set() if arch.open_params else set(self.params) - set(defaults)
        if unknown:
            raise ModelError(
                f"unknown hyperparameter(s) for {self.arch}: {', '.join(sorted(unknown))} "
                f"(accepts {', '.join(sorted(defaults))})"
            )
        params = dict(self.params)
        for key, value in params.items():
            if key in defaults:
                _check_param(key, value, defaults[key])
                if isinstance(defaults[key], float) and isinstance(value, int) and not isinstance(value, bool):
                    params[key] = float(value)  # --param learning_rate=1: Keras' optimizers refuse an int
                elif type(defaults[key]) is int and isinstance(value, float):
                    params[key] = int(value)  # filters=32.0 (whole, as _check_param made sure)
        return {**defaults, **params}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(arch=d["arch"], input_shape=tuple(d["input_shape"]), num_classes=int(d["num_classes"]),
                   params=dict(d.get("params", {})))


# (low, high, low inclusive): the range a numeric hyperparameter must lie in
RANGES = {"learning_rate": (0, 10, False), "l2": (0, 1, True), "dropout": (0, 1, True), "alpha": (0, 4, False),
          "bn_momentum": (0, 1, True), "filters": (1, 4096, True), "dense_units": (1, 65536, True)}


def _check_param(key: str, value, default) -> None:
    numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
    if numeric and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value):
        raise ModelError(f"--param {key}={value!r}: must be a number (default {default})")
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) \
            and not value.is_integer():
        raise ModelError(f"--param {key}={value!r}: must be a whole number (default {default})")
    if key in RANGES and numeric:
        lo, hi, inclusive = RANGES[key]
        if not ((value >= lo if inclusive else value > lo) and value <= hi):
            raise ModelError(f"--param {key}={value!r}: must be {'>=' if inclusive else '>'} {lo} and <= {hi}")
    if key == "optimizer" and value not in OPTIMIZERS:
        raise ModelError(f"--param optimizer={value!r}: choose {', '.join(OPTIMIZERS)}")
    if isinstance(default, str) and not isinstance(value, str):
        raise ModelError(f"--param {key}={value!r}: must be a name (default {default!r})")


def custom_architecture(name: str) -> Architecture:
    """`package.module:function`: a builder of your own with the built-in signature
    `build(keras_module, input_shape, num_classes, **params)`, imported by name (recorded so in config.json, and
    imported again by export and QAT: only open runs whose code you trust).

    Raises:
        ModelError: the module or function cannot be imported, or is not callable.
    """
    import importlib

    module, _, func = name.partition(":")
    try:
        builder = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise ModelError(f"--arch {name}: cannot import {func} from {module} ({type(e).__name__}: {e}); the module "
                         "must be importable (on PYTHONPATH or in the current folder)") from None
    if not callable(builder):
        raise ModelError(f"--arch {name}: {func} is not a function")
    return Architecture(name, builder, {}, 1, _lr_space, f"custom builder {name}", open_params=True)


def get_architecture(name: str) -> Architecture:
    """Look an architecture up by name (or import `module:function`); raise a one-line error naming the choices."""
    if ":" in name:
        return custom_architecture(name)
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ModelError(f"unknown architecture '{name}' (choose {', '.join(ARCHITECTURES)})") from None


def check_input(spec: ModelSpec) -> None:
    """Raise `ModelError` when the input shape cannot go through the architecture."""
    arch = get_architecture(spec.arch)
    h, w, c = spec.input_shape
    if min(h, w) < arch.min_size:
        raise ModelError(
            f"images of {h}x{w} are too small for {spec.arch} (needs at least {arch.min_size}x{arch.min_size}); "
            f"pass --image-size {arch.min_size} {arch.min_size} or larger"
        )
    if spec.arch == "mobilenet_v2" and spec.resolved().get("weights") == "imagenet":
        if c != 3:
            raise ModelError("imagenet weights need 3-channel input: pass --channels 3")
        imagenet_weights(spec)


IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
IMAGENET_SIZES = (96, 128, 160, 192, 224)


def imagenet_weights(spec: ModelSpec) -> Path:
    """The Keras cache file that `keras.applications.MobileNetV2(weights="imagenet", include_top=False)` reads
    for this spec (edgecnn never downloads it: training stays offline).

    Raises:
        ModelError: an alpha with no published weights, or the file is not in the cache (the message names it
        and the command that fetches it on a connected machine).
    """
    import os

    alpha = float(spec.resolved()["alpha"])
    if alpha not in IMAGENET_ALPHAS:
        raise ModelError(f"imagenet weights exist for alpha {', '.join(map(str, IMAGENET_ALPHAS))} only (got {alpha})")
    h, w, _ = spec.input_shape
    rows = h if h == w and h in IMAGENET_SIZES else 224  # Keras loads the 224 weights for other sizes
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5"
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()
    path = home / "models" / name
    if not path.is_file():
        raise ModelError(
            f"imagenet weights are not in the Keras cache ({path}); on a connected machine run `python -c \"import "
            f"keras; keras.applications.MobileNetV2(alpha={alpha}, input_shape=({rows}, {rows}, 3), include_top=False, "
            f"weights='imagenet')\"` and copy ~/.keras/models/{name} here, or drop --param weights=imagenet")
    return path


def build(spec: ModelSpec, keras_module: Any = None):
    """Build `spec` with `keras_module` (Keras 3 by default, or `tf_keras`), uncompiled.

    Raises:
        ModelError: unknown architecture or hyperparameter, input too small.
    """
    if keras_module is None:
        import keras as keras_module
    check_input(spec)
    hp = spec.resolved()
    if spec.arch == "mobilenet_v2" and hp.get("weights") == "imagenet":
        hp["weights"] = str(imagenet_weights(spec))  # the cached file itself: Keras never tries to download
    arch = get_architecture(spec.arch)
    try:
        return arch.builder(keras_module, spec.input_shape, spec.num_classes, **hp)
    except OSError as e:  # a weights file that is in the cache but unreadable
        raise ModelError(f"cannot build {spec.arch}: {e}") from None
    except ValueError as e:  # e.g. Keras rejecting a shape the min_size check did not foresee
        raise ModelError(f"cannot build {spec.arch} for input {spec.input_shape}: {e}") from None


def make_optimizer(keras_module: Any, name: str, learning_rate: float):
    """An optimizer by name for either Keras flavour."""
    opts = {"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}
    if name not in opts:
        raise ModelError(f"unknown optimizer '{name}' (choose {', '.join(opts)})")
    kwargs = {"momentum": 0.9} if name == "sgd" else {}
    return getattr(keras_module.optimizers, opts[name])(learning_rate=learning_rate, **kwargs)


def compile_model(model, spec: ModelSpec, keras_module: Any = None, learning_rate: float | None = None,
                  balanced: bool = False):
    """Compile for sparse-label classification with the spec's optimizer (keywords only: Keras 3's third
    positional argument is loss_weights). `balanced` (Keras 3 only) adds the balanced accuracy beside accuracy
    (`edgecnn.models.metrics`); `saveable` compiles it out again before the model is saved."""
    if keras_module is None:
        import keras as keras_module
    hp = spec.resolved()
    metrics = ["accuracy"]
    if balanced:
        from edgecnn.models.metrics import balanced_accuracy_metric

        metrics.append(balanced_accuracy_metric(spec.num_classes))
    model.compile(
        optimizer=make_optimizer(keras_module, hp["optimizer"], learning_rate or hp["learning_rate"]),
        loss="sparse_categorical_crossentropy",
        metrics=metrics,
    )
    return model


def saveable(model):
    """`model` compiled with accuracy alone and its own optimizer (state kept): what `model.save` writes then
    loads anywhere, without edgecnn's metric classes."""
    model.compile(optimizer=model.optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def copy_weights(src, dst) -> None:
    """Copy every weight of `src` into `dst` (same architecture, possibly the other Keras flavour).

    Raises:
        ModelError: the two models do not have the same weight layout.
    """
    ws, wd = src.get_weights(), dst.get_weights()
    if len(ws) != len(wd) or any(a.shape != b.shape for a, b in zip(ws, wd)):
        raise ModelError(f"weight layouts differ: {len(ws)} vs {len(wd)} arrays")
    dst.set_weights(ws)


def all_layers(model) -> list:
    """Every layer of a Keras model, breadth first, the layers of nested models included (after the nested model
    itself); not the model."""
    found, queue = [], list(getattr(model, "layers", []) or [])
    while queue:
        layer = queue.pop(0)
        found.append(layer)
        queue.extend(getattr(layer, "layers", []) or [])
    return found


LOW_PRECISION = ("mixed_float16", "mixed_bfloat16", "float16", "bfloat16")


def _float32_config(o, key=None):
    """A serialized Keras object with every float16/bfloat16 dtype policy (and tensor dtype) made float32."""
    if isinstance(o, dict):
        if o.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") \
                and (o.get("config") or {}).get("name") in LOW_PRECISION:
            return {**o, "config": {**o["config"], "name": "float32"}}
        return {k: _float32_config(v, k) for k, v in o.items()}
    if isinstance(o, list):
        return [_float32_config(v) for v in o]
    return "float32" if key == "dtype" and o in LOW_PRECISION else o


def float32_model(model):
    """(the model computing in float32, the lower precision it computed in, or None). A model trained with
    Keras' mixed precision (`mixed_float16` on a GPU) computes its layers in float16, which the TFLite
    converter cannot translate ("Could not translate MLIR to FlatBuffer" on its Conv2D); its variables are
    float32 already, so the same graph with float32 policies and the same weights is the model, computed
    exactly."""
    import keras

    try:
        config = keras.saving.serialize_keras_object(model)
    except Exception:  # noqa: BLE001  only a mixed-precision model needs this; any other goes on as loaded
        return model, None
    converted = _float32_config(config)
    if converted == config:
        return model, None
    was = sorted({n for n in LOW_PRECISION if f"'name': '{n}'" in repr(config)})
    clone = keras.saving.deserialize_keras_object(converted)
    clone.set_weights([np.asarray(w).astype(v.dtype) for w, v in zip(model.get_weights(), clone.weights)])
    return clone, ", ".join(was)
