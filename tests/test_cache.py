"""The disk cache of an image folder's preprocessed images (edgecnn/data/cache.py): the same float32 the
device's preprocessing makes, read from the files once, refreshed when a file or the preprocessing changes,
CRC-checked per row, and held to its size cap."""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import make_folder
from edgecnn.data import DataConfig, load_dataset
from edgecnn.data.split import ImageFiles


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("EDGECNN_CACHE", str(d))
    return d


@pytest.fixture
def reads(monkeypatch):
    """Counts the image files decoded."""
    count = {"n": 0}
    real = ImageFiles.read

    def counted(self, i):
        count["n"] += 1
        return real(self, i)

    monkeypatch.setattr(ImageFiles, "read", counted)
    return count


def _load(folder, size=(8, 8), channels=None):
    return load_dataset(DataConfig(source=str(folder), image_size=size, channels=channels))


def test_cached_images_are_the_devices_pixels_and_are_read_once(tmp_path, cache, reads, monkeypatch):
    folder = make_folder(tmp_path / "imgs", per_class=10, size=(40, 30), mode="RGB")
    ds = _load(folder)
    first = ds.test[:]
    assert reads["n"] == len(ds.test)
    again = _load(folder)  # another process, a later stage: a new Dataset on the same files
    assert np.array_equal(again.test[::-1], first[::-1]) and reads["n"] == len(ds.test)  # nothing decoded
    assert np.array_equal(again.train[:], ds.train[:])
    monkeypatch.setenv("EDGECNN_CACHE", "off")
    plain = _load(folder)
    assert plain.cache_line() == "not cached: EDGECNN_CACHE=off"
    assert np.array_equal(plain.test[:], first) and np.array_equal(plain.x_train, ds.x_train)
    line = again.cache_line()
    assert line.startswith(f"{len(ds.train) + len(ds.test)} of 20 images cached") and str(cache) in line


def test_a_changed_file_or_preprocessing_is_read_afresh(tmp_path, cache, reads):
    folder = make_folder(tmp_path / "imgs", per_class=10, size=(40, 30))
    ds = _load(folder)
    ds.test[:]
    n = reads["n"]
    f = ds.test.raw.paths[int(ds.test.index[0])]
    st = os.stat(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))  # edited: a new key, every image read again
    _load(folder).test[:]
    assert reads["n"] == 2 * n
    _load(folder, size=(10, 10)).test[:]
    assert reads["n"] == 3 * n
    assert len(list(cache.glob("*.npy"))) == 3


def test_a_corrupt_row_is_read_from_its_file_again(tmp_path, cache, reads):
    folder = make_folder(tmp_path / "imgs", per_class=10, size=(40, 30))
    ds = _load(folder)
    good = ds.test[:]
    (npy,) = cache.glob("*.npy")
    data = np.load(npy, mmap_mode="r+")  # the cache is a plain .npy
    row = int(ds.test.index[1])
    assert np.array_equal(data[row], good[1])
    data[row, 0, 0, 0] += 0.5
    data.flush()
    del data
    n = reads["n"]
    assert np.array_equal(_load(folder).test[:], good)
    assert reads["n"] == n + 1  # that row alone


def test_small_images_and_caches_over_the_cap_are_not_cached(tmp_path, cache, monkeypatch):
    folder = make_folder(tmp_path / "imgs", per_class=10, size=(12, 12))
    assert _load(folder, size=(12, 12)).test.raw.cache({"image_size": [12, 12], "channels": 1, "pixel_max": 255.0,
                                                        "resize": "bilinear"})[0] is None
    assert _load(folder, size=(12, 12)).cache_line() == ""  # near the input's size: not worth it, not said
    monkeypatch.setenv("EDGECNN_CACHE_GB", "0.000001")  # about 1 KiB
    ds = _load(folder, size=(8, 8))
    assert "over the 1e-06 GiB cap" in ds.cache_line()
    assert ds.test[:].shape == (len(ds.test), 8, 8, 1) and not list(cache.glob("*.npy"))


def test_the_least_recently_used_cache_makes_room(tmp_path, cache, monkeypatch):
    folder = make_folder(tmp_path / "imgs", per_class=10, size=(40, 30))
    _load(folder, size=(8, 8)).test[:]
    (old,) = cache.glob("*.npy")
    os.utime(old, (1, 1))  # long unused
    monkeypatch.setenv("EDGECNN_CACHE_GB", str(1.5 * 20 * 12 * 12 * 4 / 2 ** 30))  # room for one 12x12 cache
    ds = _load(folder, size=(12, 12))
    assert ds.cache_line().startswith("0 of 20 images cached")
    assert not old.exists() and len(list(cache.glob("*.npy"))) == 1
