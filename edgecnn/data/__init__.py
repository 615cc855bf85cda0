"""Data: load a source, split it deterministically, and apply the recorded preprocessing.

Python::

    from edgecnn.data import DataConfig, load_dataset
    ds = load_dataset(DataConfig(source="digits", image_size=(28, 28), seed=0))
    ds.x_train.shape  # (1149, 28, 28, 1) float32 in [0, 1]

The preprocessing (`ds.preprocessing`) is a plain dict stored in the run's config.json and in the
export manifest; the one implementation of it lives in the on-device script (`edgecnn.script.edgecnn_infer`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.data.sources import SOURCES, RawData, load_raw
from edgecnn.script.edgecnn_infer import preprocess
from edgecnn.errors import DataError

__all__ = ["DataConfig", "Dataset", "load_dataset", "preprocess", "SOURCES"]


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split and preprocessed."""

    source: str = "digits"  # dataset name (digits, mnist, fashion_mnist, cifar10), .npz file, or image folder
    image_size: Optional[tuple] = None  # (h, w) to resize to; None keeps the source's size
    channels: Optional[int] = None  # 1 or 3; None keeps the source's channels
    val_fraction: float = 0.2  # share of the training pool held out for validation (when the source has none)
    test_fraction: float = 0.2  # share of all images held out for test (when the source has no test split)
    seed: int = 0  # seeds the split
    limit: Optional[int] = None  # keep at most this many training images (quick runs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size) if self.image_size else None
        return d

    def __post_init__(self):
        # a path is recorded absolute, so a run trained with --data ../images exports and benches from anywhere
        if self.source not in SOURCES and Path(self.source).exists():
            object.__setattr__(self, "source", str(Path(self.source).resolve()))
        if self.image_size is not None and (len(self.image_size) != 2 or any(int(v) < 1 for v in self.image_size)):
            raise DataError(f"--image-size must be two positive numbers H W (got {' '.join(map(str, self.image_size))})")
        if self.channels not in (None, 1, 3):
            raise DataError(f"--channels must be 1 or 3 (got {self.channels})")
        for name in ("val_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise DataError(f"--{name.replace('_', '-')} must be between 0 and 1 (got {getattr(self, name)})")
        if not 0 <= self.seed < 2 ** 32:
            raise DataError(f"--seed must be in 0..{2 ** 32 - 1} (got {self.seed})")
        if self.limit is not None and self.limit < 1:
            raise DataError(f"--limit must be >= 1 (got {self.limit})")

    @classmethod
    def from_dict(cls, d: dict) -> "DataConfig":
        d = dict(d)
        if d.get("image_size"):
            d["image_size"] = tuple(int(v) for v in d["image_size"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Dataset:
    """Preprocessed splits (float32 NHWC in [0, 1]) with their class names and the preprocessing record."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list
    preprocessing: dict  # {"image_size", "channels", "pixel_max", "resize"}
    origin: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict:
        return {
            "train": int(len(self.y_train)), "val": int(len(self.y_val)), "test": int(len(self.y_test)),
            "input_shape": list(self.input_shape), "classes": self.num_classes,
        }


def _shape_of(x) -> tuple:
    first = x[0] if len(x) else np.zeros((0, 0))
    return tuple(first.shape)


def _check_pixels(name: str, x) -> None:
    from edgecnn.script.edgecnn_infer import UsageError, check_pixels

    arrays = x if isinstance(x, list) else [x]
    try:
        for a in arrays:
            check_pixels(np.asarray(a), name)  # the device's rule
    except UsageError as e:
        raise DataError(str(e)) from None


def _apply(x, prep: dict) -> np.ndarray:
    if isinstance(x, list):  # images of varying sizes: one at a time
        return np.concatenate([preprocess(im[None], prep) for im in x]) if x else np.zeros((0,))
    return preprocess(x, prep)


def _take(x, idx):
    return [x[i] for i in idx] if isinstance(x, list) else x[idx]


def _split(x, y, fraction: float, seed: int, what: str):
    """Stratified split off `fraction`; falls back to a plain seeded shuffle when a class is too rare."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    n_out = int(round(len(y) * fraction))
    n_classes = len(np.unique(y))
    if n_out < 1 or len(y) - n_out < 1:
        raise DataError(f"too few images ({len(y)}) to hold out a {what} split; add images or lower the fraction")
    stratify = y if (n_out >= n_classes and len(y) - n_out >= n_classes and np.bincount(y).min() >= 2) else None
    keep, out = train_test_split(idx, test_size=n_out, random_state=seed, stratify=stratify)
    keep, out = np.sort(keep), np.sort(out)
    return _take(x, keep), y[keep], _take(x, out), y[out]


def load_dataset(config: DataConfig) -> Dataset:  # noqa: C901
    """Load, validate, split and preprocess a data source.

    Args:
        config: the data configuration.
    Returns:
        A `Dataset` with float32 splits in [0, 1].
    Raises:
        DataError: unknown source, unreadable or inconsistent data, too few images.
    """
    from edgecnn.script.edgecnn_infer import UsageError, check_labels

    raw: RawData = load_raw(config.source)
    n_classes = len(raw.class_names)
    if n_classes < 2:
        raise DataError(f"{config.source}: needs at least 2 classes, found {n_classes}")
    for name in ("train", "val", "test"):
        x, y = getattr(raw, f"x_{name}"), getattr(raw, f"y_{name}")
        if x is None:
            continue
        if len(x) != len(y):
            raise DataError(f"{config.source}: x_{name} has {len(x)} images but y_{name} has {len(y)} labels")
        try:
            check_labels(y, n_classes, f"{config.source}: y_{name}")  # the device's rule
        except UsageError as e:
            raise DataError(str(e)) from None
        _check_pixels(f"{config.source}: x_{name}", x)
        shape = _shape_of(x)
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[-1] not in (1, 3, 4)):
            raise DataError(f"{config.source}: x_{name} images must be HxW or HxWxC (C=1,3,4), got {shape}")

    missing = sorted(set(range(n_classes)) - set(np.unique(raw.y_train).tolist()))
    if missing:
        names = ", ".join(raw.class_names[i] for i in missing[:5])
        raise DataError(f"{config.source}: class(es) {names} have no training images (labels must cover 0..{n_classes - 1})")
    x_pool, y_pool = raw.x_train, raw.y_train
    if raw.x_test is None:
        x_pool, y_pool, x_test, y_test = _split(x_pool, y_pool, config.test_fraction, config.seed, "test")
    else:
        x_test, y_test = raw.x_test, raw.y_test
    if raw.x_val is None:
        x_train, y_train, x_val, y_val = _split(x_pool, y_pool, config.val_fraction, config.seed + 1, "validation")
    else:
        x_train, y_train, x_val, y_val = x_pool, y_pool, raw.x_val, raw.y_val
    if config.limit and len(y_train) > config.limit:
        idx = np.sort(np.random.default_rng(config.seed).permutation(len(y_train))[: config.limit])
        x_train, y_train = _take(x_train, idx), y_train[idx]
    if len(y_train) < n_classes:
        raise DataError(f"too few training images ({len(y_train)}) for {n_classes} classes")

    shape = _shape_of(x_train)
    src_channels = 1 if len(shape) == 2 else min(shape[-1], 3)
    sizes = {_shape_of([im])[:2] for im in (x_train if isinstance(x_train, list) else x_train[:1])}
    if config.image_size is None and len(sizes) > 1:
        raise DataError(f"{config.source}: images have different sizes {sorted(sizes)[:3]}...; pass --image-size H W")
    prep = {
        "image_size": list(config.image_size or shape[:2]),
        "channels": int(config.channels or src_channels),
        "pixel_max": float(raw.pixel_max),
        "resize": "bilinear",
    }
    if prep["channels"] not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {prep['channels']}")
    return Dataset(
        x_train=_apply(x_train, prep), y_train=np.asarray(y_train, np.int64),
        x_val=_apply(x_val, prep), y_val=np.asarray(y_val, np.int64),
        x_test=_apply(x_test, prep), y_test=np.asarray(y_test, np.int64),
        class_names=list(raw.class_names), preprocessing=prep, origin=raw.origin,
    )
