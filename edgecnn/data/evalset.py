"""The images a model is evaluated on when they are not its run's own (`edgecnn bench --model M --data SOURCE`):
a held-out or field folder, whole, labelled by class folder name in the model's class order; an .npz in the
on-device script's form; or a source's test split."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.data.sources import RawData, _pixel_max, load_raw
from edgecnn.data.split import NpzArray, Split, check_raw_pixels, raw_shape, raw_sizes
from edgecnn.errors import DataError


def _labels_for(raw: RawData, y: np.ndarray, class_names: list, source: str) -> np.ndarray:
    """`y` in the model's class order. An image folder's classes are matched by name (a field folder may hold
    some of the classes: its own sorted order would number them otherwise); a source whose classes are bare
    numbers keeps its labels."""
    names = [str(c) for c in raw.class_names]
    if names == list(class_names):
        return y
    if all(c in class_names for c in names):
        return np.array([class_names.index(c) for c in names], np.int64)[y]
    if raw.origin.get("source") == "folder" or names != [str(i) for i in range(len(names))]:
        unknown = [c for c in names if c not in class_names]
        shown = ", ".join(repr(c) for c in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        known = ", ".join(map(str, class_names[:10])) + (", ..." if len(class_names) > 10 else "")
        raise DataError(f"{source}: class(es) {shown} are not among the model's {len(class_names)} classes ({known})")
    return y


def _script_npz(source: str) -> Optional[RawData]:
    """An .npz in the on-device script's form (`x` and labels `y`, optional `class_names`), or None."""
    if not str(source).endswith(".npz") or not Path(source).is_file():
        return None
    try:
        with np.load(source, allow_pickle=False) as z:
            if "x_test" in z.files or "x" not in z.files:
                return None
            if "y" not in z.files:
                raise DataError(f"{source}: no labels 'y' beside its images 'x' to evaluate against")
            y = z["y"].reshape(-1).astype(np.int64)
            names = [str(c) for c in z["class_names"].tolist()] if "class_names" in z.files else \
                [str(i) for i in range(int(y.max()) + 1 if y.size else 0)]
    except (OSError, ValueError) as e:
        raise DataError(f"{source}: not a readable .npz file ({e})") from None
    x = NpzArray(str(source), "x")
    return RawData(x_train=x, y_train=y, pixel_max=_pixel_max([x]), class_names=names,
                   origin={"source": "npz", "path": str(Path(source).resolve())})


def load_eval_split(source: str, class_names: list, image_size=None, channels=None, pixel_max=None,
                    orientation: str = "stored") -> tuple:
    """The images a model is evaluated on when they are not its run's own: an image folder's every image (a
    held-out or field set; labels from the class folders' names, in the model's class order), or a source's
    test split (an .npz's x_test/y_test, a named dataset's); an .npz in the on-device script's form (`x`, `y`)
    is every image of it. Preprocessed as `image_size`/`channels` say (the model's). An .npz's raw pixels are
    on the model's recorded `pixel_max` when given, as the on-device script reads an .npz (0-16 for digits);
    image files are 8-bit, read as `orientation` says (the model's recorded preprocessing.orientation).

    Returns:
        (a `Split`, what it holds in words: "images: all of FOLDER" or "test images of SOURCE").
    Raises:
        DataError: unreadable source, a class the model does not know, labels out of range.
    """
    from edgecnn.script.edgecnn_infer import UsageError, check_labels

    raw = _script_npz(source) or load_raw(source, orientation)
    if raw.x_test is not None:
        x, y, what = raw.x_test, np.asarray(raw.y_test, np.int64), f"test images of {source}"
    else:
        x, y, what = raw.x_train, np.asarray(raw.y_train, np.int64), f"images: all of {source}"
    y = _labels_for(raw, y, list(class_names), source)
    try:
        check_labels(y, len(class_names), source)
    except UsageError as e:
        raise DataError(str(e)) from None
    check_raw_pixels(source, x)
    shape = raw_shape(x)
    if image_size is None and len(raw_sizes(x)) > 1:
        raise DataError(f"{source}: images have different sizes; the model's input size is needed to resize them")
    prep = {"image_size": list(image_size or shape[:2]),
            "channels": int(channels or (1 if len(shape) == 2 else min(shape[-1], 3))),
            "pixel_max": float(pixel_max if pixel_max and raw.origin.get("source") == "npz" else raw.pixel_max),
            "resize": "bilinear", "orientation": orientation}
    return Split(x, np.arange(len(y)), y, prep), what
