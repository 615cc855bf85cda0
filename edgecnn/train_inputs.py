"""What `model.fit` reads in training, tuning trials and QAT: the training input (arrays in memory, or a
`tf.data` pipeline that preprocesses each batch from the raw pixels), the validation data, the augmentation of
training batches and the class weights."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from edgecnn.data import Dataset


@dataclass(frozen=True)
class AugmentConfig:
    """Random geometric augmentation applied to training batches only (never to the exported model)."""

    shift: float = 0.1  # max translation, fraction of height/width
    rotation: float = 0.05  # max rotation, fraction of a full turn
    zoom: float = 0.1  # max zoom in or out, fraction
    flip: bool = False  # horizontal flips; off for digits and text, on for natural images


IN_MEMORY_MB = 512  # "auto" holds the float32 train and validation splits in memory up to this size


def _augmenter(aug: AugmentConfig, seed: int):
    import keras

    L = keras.layers
    layers = [
        L.RandomTranslation(aug.shift, aug.shift, fill_mode="constant", seed=seed),
        L.RandomRotation(aug.rotation, fill_mode="constant", seed=seed + 1),
        L.RandomZoom(aug.zoom, fill_mode="constant", seed=seed + 2),
    ]
    if aug.flip:
        layers.append(L.RandomFlip("horizontal", seed=seed + 3))
    return keras.Sequential(layers, name="augment")


def streams(ds: Dataset, stream: str) -> bool:
    """Whether training reads batches from the raw pixels (`on`), holds float32 splits in memory (`off`), or
    (`auto`) streams image folders always and other sources when their float32 splits exceed IN_MEMORY_MB."""
    if stream != "auto":
        return stream == "on"
    from edgecnn.data.split import ImageFiles

    big = (ds.train.float32_bytes + ds.val.float32_bytes) > IN_MEMORY_MB * 2 ** 20
    return big or isinstance(ds.train.raw, ImageFiles)


def class_weights(labels, num_classes: int, mode: str = "none") -> Optional[dict]:
    """`model.fit`'s class_weight for `mode`: None, or for "balanced" scikit-learn's n / (classes x count) per
    class present in `labels` (the training split's)."""
    if mode in (None, "none"):
        return None
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    present = np.flatnonzero(counts)
    return {int(c): float(len(labels) / (len(present) * counts[c])) for c in present}


def fit_inputs(ds: Dataset, batch_size: int, seed: int, stream: str, augment=None,
               class_weight: str = "none") -> dict:
    """Keyword arguments for `model.fit`: the training input and validation data, and the class weights of
    `class_weight` ("none" or "balanced", from the training labels).

    In memory without augmentation: NumPy arrays, the input path of a plain `fit`. Otherwise a `tf.data`
    pipeline: per-batch preprocessing from the raw pixels (streaming) or slices of the float32 arrays,
    then the augmentation on training batches.
    """
    weights = class_weights(ds.y_train, ds.num_classes, class_weight)
    extra = {"class_weight": weights} if weights else {}
    if not streams(ds, stream):
        if augment is None:
            return {"x": ds.x_train, "y": ds.y_train, "batch_size": batch_size, "shuffle": True,
                    "validation_data": (ds.x_val, ds.y_val), **extra}
        import tensorflow as tf

        data = (tf.data.Dataset.from_tensor_slices((ds.x_train, ds.y_train))
                .shuffle(len(ds.y_train), seed=seed, reshuffle_each_iteration=True).batch(batch_size))
        val = (ds.x_val, ds.y_val)
    else:
        for split in (ds.train, ds.val):
            split.prepare()  # bad pixels fail now, not in the middle of an epoch
        data = ds.train.dataset(batch_size, shuffle=True, seed=seed)
        val = ds.val.dataset(batch_size)  # as a plain fit validates arrays: in batches of the training batch
    if augment is not None:
        import tensorflow as tf

        aug = _augmenter(augment, seed)
        data = data.map(lambda x, y: (tf.clip_by_value(aug(x, training=True), 0.0, 1.0), y), num_parallel_calls=1)
    return {"x": data.prefetch(2), "validation_data": val, "shuffle": False,  # shuffled above; Keras warns otherwise
            **extra}
