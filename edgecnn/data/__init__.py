"""Data: load a source, split it deterministically, and apply the recorded preprocessing.

Python::

    from edgecnn.data import DataConfig, load_dataset
    ds = load_dataset(DataConfig(source="digits", image_size=(28, 28), seed=0))
    ds.x_train.shape  # (1149, 28, 28, 1) float32 in [0, 1], the whole split preprocessed
    for x in ds.test.chunks(256): ...  # or a piece at a time; ds.train.dataset(32, shuffle=True) for tf.data

The preprocessing (`ds.preprocessing`) is a plain dict stored in the run's config.json and in the
export manifest; the one implementation of it lives in the on-device script (`edgecnn.script.edgecnn_infer`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.data.evalset import load_eval_split
from edgecnn.data.sources import SOURCES, RawData, load_raw
from edgecnn.data.split import ImageFiles, Split, check_raw_pixels, map_chunks, raw_shape, raw_sizes
from edgecnn.script.edgecnn_infer import ORIENTATIONS, preprocess
from edgecnn.errors import DataError

__all__ = ["DataConfig", "Dataset", "Split", "load_dataset", "load_eval_split", "map_chunks", "preprocess", "SOURCES",
           "turned_line"]


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
    orientation: str = "exif"  # image files: "exif" upright as a viewer shows them, "stored" as stored (Keras' loader)
    group_by: str = "none"  # images a split keeps together: "subfolder" of a class folder, "near" copies (data/groups.py)

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
        if self.orientation not in ORIENTATIONS:
            raise DataError(f"--orientation must be one of {', '.join(ORIENTATIONS)} (got {self.orientation})")
        from edgecnn.data.groups import GROUP_BY

        if self.group_by not in GROUP_BY:
            raise DataError(f"--group-by must be one of {', '.join(GROUP_BY)} (got {self.group_by})")

    @classmethod
    def from_dict(cls, d: dict) -> "DataConfig":
        d = dict(d)
        d.setdefault("orientation", "stored")  # a run recorded before the field read files as stored
        if d.get("image_size"):
            d["image_size"] = tuple(int(v) for v in d["image_size"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Dataset:
    """The three splits (`Split`: raw pixels preprocessed per batch), their class names and the preprocessing.

    `ds.train`, `ds.val`, `ds.test` stream; `ds.x_train` (and x_val, x_test) preprocess a whole split into one
    float32 array, which is what small data and tests want and what large data must avoid.
    """

    train: Split
    val: Split
    test: Split
    class_names: list
    preprocessing: dict  # {"image_size", "channels", "pixel_max", "resize", "orientation"}
    origin: dict = field(default_factory=dict)
    grouping: dict = field(default_factory=dict)  # --group-by: {"by", "groups", "images", "largest"} (data/groups.py)
    _arrays: dict = field(default_factory=dict, repr=False)

    def _array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.asarray(getattr(self, name))
        return self._arrays[name]

    x_train = property(lambda self: self._array("train"))
    x_val = property(lambda self: self._array("val"))
    x_test = property(lambda self: self._array("test"))
    y_train = property(lambda self: self.train.labels)
    y_val = property(lambda self: self.val.labels)
    y_test = property(lambda self: self.test.labels)

    def prepare(self, *names: str) -> "Dataset":
        """Read the named splits' .npz members now (all three by default), so bad pixels fail before a run
        directory is touched; image files were checked by their headers when the folder was opened."""
        for name in names or ("train", "val", "test"):
            getattr(self, name).prepare()
        return self

    @property
    def input_shape(self) -> tuple:
        return tuple(self.train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self, copies: Optional[dict] = None) -> dict:
        """Split sizes, input shape, classes, what an image folder held besides images, its photos with an EXIF
        orientation, `copies` (`duplicates()`, when measured) and the split fingerprint."""
        out = {
            "train": len(self.train), "val": len(self.val), "test": len(self.test),
            "input_shape": list(self.input_shape), "classes": self.num_classes,
        }
        if self.origin.get("not_images"):  # an image folder's other files (hidden, .txt, ...), left out, by kind
            out["not_images"] = self.origin["not_images"]
        turned, files = self.turned
        if turned:  # photos a viewer shows turned (EXIF Orientation): how many, of how many, and how they are read
            out["exif_turned"] = {"images": turned, "of": files,
                                  "read": self.preprocessing.get("orientation", "stored")}
        if copies:
            out["duplicates"] = copies
        if self.grouping:
            out["groups"] = self.grouping
        out["split_sha256"] = self.split_fingerprint()
        return out

    @property
    def turned(self) -> tuple:
        """(image files of the source whose EXIF Orientation turns or mirrors them, image files): (0, 0) for arrays."""
        raws = [r for r in {id(s.raw): s.raw for s in (self.train, self.val, self.test)}.values()
                if isinstance(r, ImageFiles)]
        return sum(r.turned for r in raws), sum(len(r) for r in raws)

    def duplicates(self) -> dict:
        """Byte-identical image files across classes and splits (data/duplicates.py: `find`), or {} (none, or not
        one image folder split three ways)."""
        if not self._one_folder:
            return {}
        from edgecnn.data.duplicates import find

        return find(self.train.raw.paths, {"train": self.train, "val": self.val, "test": self.test},
                    self.origin.get("path"))

    def near_copies(self) -> dict:
        """Test images that are near copies of training or validation images (data/near_copies.py: `find`) for
        any source whose images are cheap to read again (arrays, and folders that are cached or small), or
        {"skipped": why}, or {} when there are none. Training looks once it has trained: reading every image
        before it left the memory allocator's heap larger for the whole training (peak RSS +240 MB at 20,000
        96x96 PNGs)."""
        from edgecnn.data import near_copies

        why = self._not_cached()
        if why:
            return {"skipped": f"near copies not looked for: the photos are not cached ({why})"}
        found = near_copies.find(self.test, {"train": self.train, "val": self.val},
                                 self._image_name if self._one_folder else None)
        return found if found["near"] else {}

    @property
    def _one_folder(self) -> bool:
        """One image folder split three ways."""
        raw = self.train.raw
        return isinstance(raw, ImageFiles) and self.val.raw is raw and self.test.raw is raw

    def _image_name(self, split: str, i: int) -> str:
        from edgecnn.data.duplicates import _name

        return _name(self.train.raw.paths, int(getattr(self, split).index[i]), self.origin.get("path"))

    def _not_cached(self) -> str:
        """Why an image folder's photos, which would pay to cache (data/cache.py: `worth_caching`), are not
        cached, or "" (cached, not worth it, or not a folder)."""
        raw = self.train.raw
        if not isinstance(raw, ImageFiles):
            return ""
        from edgecnn.data.cache import worth_caching

        cache, why = raw.cache(self.preprocessing)
        return why if cache is None and worth_caching(raw.sizes, self.preprocessing) else ""

    def cache_line(self) -> str:
        """Where an image folder's preprocessed images are cached (data/cache.py), or why they are not when
        caching would pay; "" for other sources."""
        raw = self.train.raw
        if not isinstance(raw, ImageFiles):
            return ""
        cache, _ = raw.cache(self.preprocessing)
        if cache is not None:
            return f"{cache.filled()} of {cache.n} images cached as float32 in {cache.path}"
        why = self._not_cached()
        return f"not cached: {why}" if why else ""

    def split_fingerprint(self) -> str:
        """The first 16 hex digits of a SHA-256 over which source images each split holds (their positions), in
        train, val, test order: a run records it so that a later stage refuses a split that is not the one it
        was trained with (the same counts can hold other images, and then the test figures include training
        images)."""
        import hashlib

        h = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            h.update(np.asarray(split.index, "<i8").tobytes() + b"|")
        return h.hexdigest()[:16]


def turned_line(dataset: dict) -> str:
    """"412 of 3,000 images carry an EXIF orientation; read upright, ..." from a dataset summary (`Dataset.summary`,
    a run's config.json "dataset") of an image folder with photos a viewer turns; "" otherwise."""
    turned = dataset.get("exif_turned")
    if not turned:
        return ""
    n = turned["of"]
    how = "read upright, as a viewer shows them (--orientation stored: as stored, as Keras' loader reads them)" \
        if turned["read"] == "exif" else "read as stored, turned or mirrored (--orientation exif: upright, as a " \
                                        "viewer shows them)"
    return f"{turned['images']:,} of {n:,} images carry an EXIF orientation; {how}"


def _split(idx: np.ndarray, y: np.ndarray, fraction: float, seed: int, what: str):
    """Stratified split of positions `idx` (labels `y`) off `fraction` (scikit-learn's); when a class is too rare
    for it, `_held_out_per_class`. Returns (kept positions, their labels, held-out positions, their labels), each
    in source order."""
    from sklearn.model_selection import train_test_split

    n_out = int(round(len(y) * fraction))
    n_classes = len(np.unique(y))
    if n_out < 1 or len(y) - n_out < 1:
        raise DataError(f"too few images ({len(y)}) to hold out a {what} split; add images or lower the fraction")
    if n_out >= n_classes and len(y) - n_out >= n_classes and np.bincount(y).min(initial=2) >= 2:
        keep, out = train_test_split(np.arange(len(y)), test_size=n_out, random_state=seed, stratify=y)
    else:
        out = _held_out_per_class(y, n_out, seed)
        if not len(out):
            raise DataError(f"too few images a class ({len(y)} images, {n_classes} classes) to hold out a {what} "
                            f"split; add images")
        keep = np.setdiff1d(np.arange(len(y)), out)
    keep, out = np.sort(keep), np.sort(out)
    return idx[keep], y[keep], idx[out], y[out]


def _split_grouped(idx: np.ndarray, y: np.ndarray, groups: np.ndarray, fraction: float, seed: int, what: str):
    """`_split` that keeps each group (`groups`: an id per position) on one side: whole groups are held out, in a
    seeded order, while each class stays within its share of the held-out images and keeps an image. Without a
    group of two or more images, `_split` itself (the same split as without --group-by)."""
    _, groups = np.unique(groups, return_inverse=True)
    if not len(y) or np.bincount(groups).max() <= 1:
        return _split(idx, y, fraction, seed, what)
    classes, counts = np.unique(y, return_counts=True)
    quota = {int(c): int(round(k * fraction)) for c, k in zip(classes, counts)}
    left = {int(c): int(k) for c, k in zip(classes, counts)}
    order = np.argsort(groups, kind="stable")
    members = np.split(order, np.flatnonzero(np.diff(groups[order])) + 1)
    labels = y.tolist()
    out = []
    for g in np.random.default_rng(seed).permutation(len(members)).tolist():
        m = members[g]
        need = {}
        for i in m.tolist():
            need[labels[i]] = need.get(labels[i], 0) + 1
        if all(quota[c] >= n and left[c] > n for c, n in need.items()):
            for c, n in need.items():
                quota[c] -= n
                left[c] -= n
            out.append(m)
    if not out:
        sizes = np.bincount(groups)
        raise DataError(f"no group of images fits a {what} split of {fraction} of {len(y)} images without taking a "
                        f"class's every image ({len(sizes)} groups, the largest of {sizes.max()} images): add images "
                        f"or groups, or --group-by none")
    out = np.sort(np.concatenate(out))
    keep = np.setdiff1d(np.arange(len(y)), out)
    return idx[keep], y[keep], idx[out], y[out]


def _groups(config: "DataConfig", raw: RawData, prep: dict) -> Optional[np.ndarray]:
    """Group ids of the source's pool images (raw.x_train) for --group-by, or None for none."""
    from edgecnn.data import groups

    if config.group_by == "none":
        return None
    if config.group_by == "subfolder":
        if not isinstance(raw.x_train, ImageFiles):
            raise DataError(f"{config.source}: --group-by subfolder needs an image folder (class/session/image.jpg)")
        return groups.subfolder_groups(raw.x_train.paths, raw.origin["path"])
    return groups.near_groups_of(Split(raw.x_train, np.arange(len(raw.y_train)), raw.y_train, prep))


def _held_out_per_class(y: np.ndarray, n_out: int, seed: int) -> np.ndarray:
    """Positions to hold out, about `n_out`, shared among the classes by their size (largest remainder, ties
    seeded), each class keeping at least one image. A plain shuffle instead left 5 of a 40-class folder's
    classes (1 or 2 images each) without a training image, which the model then cannot predict."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * (n_out / len(y))
    take = np.minimum(np.floor(quota).astype(np.int64), counts - 1)
    order = np.lexsort((rng.random(len(classes)), -(quota - take)))  # largest remainder first, ties at random
    while take.sum() < n_out and np.any(take < counts - 1):
        for k in order:
            if take.sum() < n_out and take[k] < counts[k] - 1:
                take[k] += 1
    return np.concatenate([rng.permutation(np.flatnonzero(y == c))[:t] for c, t in zip(classes, take)]
                          + [np.zeros(0, np.int64)])


def load_dataset(config: DataConfig) -> Dataset:  # noqa: C901
    """Open, validate and split a data source. Pixels are read and preprocessed only when a split is used.

    Args:
        config: the data configuration.
    Returns:
        A `Dataset` whose splits yield float32 images in [0, 1].
    Raises:
        DataError: unknown source, unreadable or inconsistent data, too few images.
    """
    from edgecnn.data.groups import summary as group_summary
    from edgecnn.script.edgecnn_infer import UsageError, check_labels

    raw: RawData = load_raw(config.source, config.orientation)
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
        check_raw_pixels(f"{config.source}: x_{name}", x)
        shape = raw_shape(x)
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[-1] not in (1, 3, 4)):
            raise DataError(f"{config.source}: x_{name} images must be HxW or HxWxC (C=1,3,4), got {shape}")

    missing = sorted(set(range(n_classes)) - set(np.unique(raw.y_train).tolist()))
    if missing:
        names = ", ".join(raw.class_names[i] for i in missing[:5])
        raise DataError(f"{config.source}: class(es) {names} have no training images (labels must cover 0..{n_classes - 1})")
    shape = raw_shape(raw.x_train)
    src_channels = 1 if len(shape) == 2 else min(shape[-1], 3)
    sizes = raw_sizes(raw.x_train)
    if config.image_size is None and len(sizes) > 1:
        raise DataError(f"{config.source}: images have different sizes {sorted(sizes)[:3]}...; pass --image-size H W")
    prep = {
        "image_size": list(config.image_size or shape[:2]),
        "channels": int(config.channels or src_channels),
        "pixel_max": float(raw.pixel_max),
        "resize": "bilinear",
        "orientation": config.orientation,
    }
    if prep["channels"] not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {prep['channels']}")
    pool, y_pool = np.arange(len(raw.y_train)), np.asarray(raw.y_train, np.int64)
    groups = _groups(config, raw, prep)

    def split(idx, y, fraction, seed, what):
        return _split(idx, y, fraction, seed, what) if groups is None else \
            _split_grouped(idx, y, groups[idx], fraction, seed, what)

    if raw.x_test is None:
        pool, y_pool, test_idx, y_test = split(pool, y_pool, config.test_fraction, config.seed, "test")
        test_raw = raw.x_train
    else:
        test_raw, test_idx, y_test = raw.x_test, np.arange(len(raw.y_test)), raw.y_test
    if raw.x_val is None:
        train_idx, y_train, val_idx, y_val = split(pool, y_pool, config.val_fraction, config.seed + 1, "validation")
        val_raw = raw.x_train
    else:
        train_idx, y_train, val_raw, val_idx, y_val = pool, y_pool, raw.x_val, np.arange(len(raw.y_val)), raw.y_val
    if config.limit and len(y_train) > config.limit:
        keep = np.sort(np.random.default_rng(config.seed).permutation(len(y_train))[: config.limit])
        train_idx, y_train = train_idx[keep], y_train[keep]
    if len(y_train) < n_classes:
        raise DataError(f"too few training images ({len(y_train)}) for {n_classes} classes")

    return Dataset(
        train=Split(raw.x_train, train_idx, y_train, prep),
        val=Split(val_raw, val_idx, y_val, prep),
        test=Split(test_raw, test_idx, y_test, prep),
        class_names=list(raw.class_names), preprocessing=prep, origin=raw.origin,
        grouping={} if groups is None else group_summary(groups, config.group_by),
    )
