"""Data sources, a registry by name: the embedded `digits`, the `keras.datasets` images, an `.npz` file,
and a folder of images with one subfolder per class. Each returns raw pixels and what they mean."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgecnn.data.split import ImageFiles, NpzArray, scan_images
from edgecnn.errors import DataError
# one rule for what training and the device read
from edgecnn.script.edgecnn_infer import heif_hint, image_suffixes, is_data_folder, walk_images


@dataclass
class RawData:
    """Raw pixels as the source gives them. Splits the source lacks are None and get carved out later."""

    x_train: list | np.ndarray | NpzArray | ImageFiles  # (N,H,W[,C]) pixels, a list of (H,W[,C]) arrays of
    # varying sizes, an .npz member read on first use, or image files decoded when asked
    y_train: np.ndarray
    pixel_max: float  # value of a white pixel: 16 for digits, 255 for uint8, 1 for float images
    class_names: list[str]
    x_test: list | np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_val: list | np.ndarray | None = None
    y_val: np.ndarray | None = None
    origin: dict = field(default_factory=dict)  # where the pixels came from, for the record


def _digits(_: str) -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    return RawData(
        x_train=d.images.astype(np.float32),
        y_train=d.target.astype(np.int64),
        pixel_max=16.0,
        class_names=[str(i) for i in range(10)],
        origin={"source": "sklearn.datasets.load_digits"},
    )


_KERAS_DATASETS = {
    "mnist": ("mnist.npz", [str(i) for i in range(10)]),
    "fashion_mnist": (
        "fashion-mnist",
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    ),
    "cifar10": (
        "cifar-10-batches-py",
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    ),
}


def _keras_dataset(name: str) -> RawData:
    import keras

    fname, class_names = _KERAS_DATASETS[name]
    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as e:  # offline: urllib/HTTP errors surface as many types
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
        raise DataError(
            f"could not load '{name}' ({type(e).__name__}): it downloads once on a connected machine; run "
            f"`python -c \"import keras; keras.datasets.{name}.load_data()\"` there and copy {fname} into {cache}, "
            f"or save it as an .npz with x_train, y_train, x_test, y_test and pass --data FILE.npz"
        ) from None
    return RawData(
        x_train=x_train, y_train=y_train.reshape(-1), x_test=x_test, y_test=y_test.reshape(-1),
        pixel_max=255.0, class_names=class_names, origin={"source": f"keras.datasets.{name}"},
    )


def _pixel_max(arrays: list) -> float:
    """A white pixel's value: 255 for uint8; otherwise 1 when every value is in [0, 1], else 255."""
    if all(a.dtype == np.uint8 for a in arrays):
        return 255.0
    loaded = [a.load() if isinstance(a, NpzArray) else a for a in arrays]
    hi = max(float(np.max(a)) if a.size else 0.0 for a in loaded)
    return 1.0 if hi <= 1.0 else 255.0


def _npz(path: str) -> RawData:
    """An .npz whose pixel arrays are read on first use (headers now): a split never asked for is never read."""
    try:
        z = np.load(path, allow_pickle=False)
        files = set(z.files)
    except Exception as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in files]
    if missing:
        raise DataError(f"{path}: missing keys {', '.join(missing)} (needs x_train, y_train, x_test, y_test)")
    has_val = "x_val" in files and "y_val" in files
    xs = {k: NpzArray(path, k) for k in ("x_train", "x_test") + (("x_val",) if has_val else ())}
    try:  # object arrays need pickle, which is never allowed
        ys = {k: z[k] for k in ("y_train", "y_test", "y_val") if k in files}
        names = z["class_names"] if "class_names" in files else None
    except ValueError as e:
        raise DataError(f"{path}: cannot read its arrays ({e}); save numbers, not objects") from None
    for x in xs.values():
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{path}: images must be numeric, got dtype {x.dtype}")
    labels = np.concatenate([y.reshape(-1) for y in ys.values()])
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise DataError(f"{path}: labels must be integers")
    if names is not None:
        class_names = [str(c) for c in names.tolist()]
    else:
        class_names = [str(i) for i in range(int(labels.max()) + 1)] if labels.size else []
    return RawData(
        x_train=xs["x_train"], y_train=ys["y_train"].reshape(-1).astype(np.int64),
        x_test=xs["x_test"], y_test=ys["y_test"].reshape(-1).astype(np.int64),
        x_val=xs.get("x_val"),
        y_val=ys["y_val"].reshape(-1).astype(np.int64) if has_val else None,
        pixel_max=_pixel_max(list(xs.values())), class_names=class_names,
        origin={"source": "npz", "path": str(Path(path).resolve())},
    )


def _folder(path: str, orientation: str = "stored") -> RawData:
    """A folder with one subfolder of images per class: file names and headers now, pixels when asked for. A class
    folder's own subfolders are read too, as Keras' image_dataset_from_directory reads them (cat/2019/*.jpg)."""
    root = Path(path)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and is_data_folder(p.name))
    if not classes:
        raise DataError(f"{path}: no class subfolders (expected one folder of images per class)")
    files, labels, skipped = [], [], Counter()  # skipped: what class folders hold besides images, by kind
    for label, cls in enumerate(classes):
        images, other = walk_images(str(root / cls))
        found = [Path(p) for p in images]
        skipped.update("hidden" if n.startswith(".") else "folder" if n.endswith("/") else
                       os.path.splitext(n)[1].lower() or "no suffix" for n in other)
        if not found:
            hint = heif_hint(other)
            raise DataError(f"{path}: class folder '{cls}' has no images ({', '.join(image_suffixes())})"
                            + (f"; its {hint}" if hint else ""))
        files += found
        labels += [label] * len(found)
    origin = {"source": "folder", "path": str(root.resolve())}
    if skipped:
        origin["not_images"] = dict(sorted(skipped.items()))
    return RawData(
        x_train=scan_images(files, orientation), y_train=np.asarray(labels, dtype=np.int64), pixel_max=255.0,
        class_names=classes, origin=origin,
    )


# name -> loader(arg). Paths are dispatched by what they are, names by this table.
SOURCES: dict[str, Callable[[str], RawData]] = {
    "digits": _digits,
    **{name: _keras_dataset for name in _KERAS_DATASETS},
}


def load_raw(source: str, orientation: str = "stored") -> RawData:
    """Load a source by name, `.npz` path or image folder path; an image folder's files are read as `orientation`
    says ("exif": upright by their EXIF tag, "stored": as stored).

    Raises:
        DataError: unknown name, missing path, unreadable or incomplete data.
    """
    if source in SOURCES:
        return SOURCES[source](source)
    p = Path(source)
    if p.suffix == ".npz" or p.is_file():
        if not p.exists():
            raise DataError(f"{source}: no such file")
        return _npz(source)
    if p.is_dir():
        return _folder(source, orientation)
    if os.sep in source or p.suffix:
        raise DataError(f"{source}: no such file or folder")
    raise DataError(f"unknown dataset '{source}' (choose {', '.join(SOURCES)}, an .npz file or an image folder)")
