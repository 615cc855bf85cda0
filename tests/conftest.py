"""Shared fixtures: quiet TensorFlow, tiny data sets made in tmp, and one trained digits run per session."""
from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# hermetic: no cached keras.datasets downloads, no user keras.json
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="edgecnn-keras-home-")
# image folders' preprocessed-image cache (edgecnn/data/cache.py): never the user's ~/.cache
os.environ["EDGECNN_CACHE"] = tempfile.mkdtemp(prefix="edgecnn-cache-")

import numpy as np
import pytest


def make_npz(path, n_train=60, n_test=20, shape=(10, 10), classes=3, dtype=np.uint8, seed=0, **extra):
    """A tiny learnable .npz: class k images are bright in horizontal band k."""
    rng = np.random.default_rng(seed)

    def images(n):
        y = np.arange(n) % classes
        x = rng.integers(0, 60, size=(n, *shape)).astype(np.float32)
        band = shape[0] // classes
        for i, k in enumerate(y):
            x[i, k * band:(k + 1) * band] += 180
        x = np.clip(x, 0, 255)
        return (x.astype(dtype) if dtype == np.uint8 else (x / 255).astype(dtype)), y

    x_train, y_train = images(n_train)
    x_test, y_test = images(n_test)
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


def make_folder(root, classes=("cat", "dog"), per_class=12, size=(12, 12), mode="L", seed=0):
    """A folder of PNGs, one subfolder per class; class k is bright on the left (k=0) or right (k=1) half."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, cls in enumerate(classes):
        d = root / cls
        d.mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 60, size=size).astype(np.uint8)
            half = size[1] // 2
            a[:, k * half:(k + 1) * half] += 150
            im = Image.fromarray(a, mode="L")
            (im.convert(mode) if mode != "L" else im).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A simple_cnn trained briefly on the default digits data (about 0.97 test accuracy)."""
    from edgecnn.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "digits"
    train(TrainConfig(out=str(out), epochs=12, patience=12))
    return out
