"""Data sources, splits and preprocessing (no TensorFlow needed)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import make_folder, make_npz
from edgecnn.data import DataConfig, load_dataset
from edgecnn.errors import DataError


def test_digits_default_split_is_deterministic():
    a = load_dataset(DataConfig())
    b = load_dataset(DataConfig())
    c = load_dataset(DataConfig(seed=1))
    assert a.summary() == {"train": 1150, "val": 288, "test": 359, "input_shape": [8, 8, 1], "classes": 10,
                           "split_sha256": a.split_fingerprint()}
    assert a.split_fingerprint() == b.split_fingerprint() != c.split_fingerprint()
    assert a.x_train.dtype == np.float32 and 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.y_test, c.y_test)
    assert a.preprocessing == {"image_size": [8, 8], "channels": 1, "pixel_max": 16.0, "resize": "bilinear",
                               "orientation": "exif"}
    assert a.class_names == [str(i) for i in range(10)]
    # the splits are disjoint and cover the 1,797 images
    assert len(a.y_train) + len(a.y_val) + len(a.y_test) == 1797


def test_digits_resized_to_mnist_geometry_matches_tensorflow():
    import tensorflow as tf

    small = load_dataset(DataConfig())
    big = load_dataset(DataConfig(image_size=(28, 28)))
    assert big.x_train.shape[1:] == (28, 28, 1)
    ref = tf.image.resize(small.x_test, (28, 28), method="bilinear", antialias=False).numpy()
    np.testing.assert_allclose(big.x_test, np.clip(ref, 0, 1), atol=1e-5)


def test_npz_uint8_with_validation_and_class_names(tmp_path):
    rng = np.random.default_rng(0)
    path = make_npz(tmp_path / "d.npz", x_val=rng.integers(0, 255, (9, 10, 10), dtype=np.uint8),
                    y_val=np.arange(9) % 3, class_names=np.array(["a", "b", "c"]))
    ds = load_dataset(DataConfig(source=str(path)))
    assert ds.class_names == ["a", "b", "c"]
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (60, 9, 20)
    assert ds.preprocessing["pixel_max"] == 255.0
    assert ds.x_train.shape == (60, 10, 10, 1)


def test_npz_float_hwc_to_three_channels_resized(tmp_path):
    path = make_npz(tmp_path / "f.npz", dtype=np.float32)
    ds = load_dataset(DataConfig(source=str(path), channels=3, image_size=(16, 16)))
    assert ds.x_train.shape == (48, 16, 16, 3)
    assert ds.preprocessing["pixel_max"] == 1.0
    np.testing.assert_allclose(ds.x_train[..., 0], ds.x_train[..., 2])


def test_image_folder(tmp_path):
    root = make_folder(tmp_path / "imgs", classes=("cat", "dog"), per_class=15)
    ds = load_dataset(DataConfig(source=str(root)))
    assert ds.class_names == ["cat", "dog"]
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 30
    assert ds.input_shape == (12, 12, 1)
    assert set(ds.y_test) == {0, 1}  # stratified


def test_a_folder_from_a_mac_zip_reads_its_images_and_nothing_else(tmp_path):
    """An archive made on a Mac holds a '._NAME.jpg' resource fork beside each image and a __MACOSX folder; a
    folder may hold notes and hidden thumbnails. Those are not images (a '._x.jpg' stopped training as unreadable, and
    __MACOSX became a class); .webp and .tif photos are (they were silently left out). Training and the device
    script list the same files."""
    from PIL import Image

    from edgecnn.script.edgecnn_infer import image_files

    root = make_folder(tmp_path / "zip", classes=("cat", "dog"), per_class=6)
    for cls in ("cat", "dog"):
        Image.open(root / cls / "0.png").save(root / cls / "photo.webp", lossless=True)
        Image.open(root / cls / "1.png").save(root / cls / "scan.TIF")
        (root / cls / "._0.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # AppleDouble, not an image
        (root / cls / ".DS_Store").write_bytes(bytes(16))
        (root / cls / "notes.txt").write_text("labelled by hand")
    (root / "__MACOSX" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "cat" / "._0.png").write_bytes(bytes(40))
    (root / "cat" / "2019").mkdir()  # a class's own subfolders are read, as Keras reads them
    Image.open(root / "cat" / "2.png").save(root / "cat" / "2019" / "old.png")
    (root / "dog" / ".thumbnails").mkdir()  # a hidden one is not
    Image.open(root / "dog" / "2.png").save(root / "dog" / ".thumbnails" / "2.png")
    ds = load_dataset(DataConfig(source=str(root)))
    assert ds.class_names == ["cat", "dog"]
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 17
    assert ds.summary()["not_images"] == {".txt": 2, "hidden": 5}
    listed = [p.replace(str(root) + "/", "") for p in image_files([str(root)])]
    assert len(listed) == 17 and not any("MACOSX" in p or "/." in p for p in listed), listed
    assert "cat/2019/old.png" in listed


def test_image_folder_rgb(tmp_path):
    root = make_folder(tmp_path / "rgb", mode="RGB", per_class=10)
    ds = load_dataset(DataConfig(source=str(root)))
    assert ds.input_shape == (12, 12, 3)


@pytest.mark.parametrize("case, message", [
    ("missing_keys", "missing keys y_test"),
    ("labels_out_of_range", "class\\(es\\) 3, 4, 5, 6 have no training images"),
    ("negative_label", "labels outside 0..2"),
    ("names_mismatch", "labels outside 0..1"),
    ("nan", "NaN or infinite"),
    ("inf", "NaN or infinite"),
    ("length", "has 60 images but y_train has 59"),
    ("normalized", "negative pixel values \\(min -1\\): it looks normalized"),  # clipped to 0 before
])
def test_bad_npz(tmp_path, case, message):
    path = tmp_path / "bad.npz"
    make_npz(path)
    z = dict(np.load(path))
    if case == "missing_keys":
        del z["y_test"]
    elif case == "labels_out_of_range":
        z["y_train"] = z["y_train"].copy()
        z["y_train"][0] = 7
    elif case == "negative_label":
        z["y_test"] = z["y_test"].copy()
        z["y_test"][0] = -1
    elif case == "names_mismatch":
        z["class_names"] = np.array(["a", "b"])
    elif case in ("nan", "inf"):
        z["x_train"] = z["x_train"].astype(np.float32)
        z["x_train"][0, 0, 0] = np.nan if case == "nan" else np.inf
    elif case == "length":
        z["y_train"] = z["y_train"][:-1]
    elif case == "normalized":
        z["x_train"] = z["x_train"].astype(np.float32) / 127.5 - 1.0
    np.savez(path, **z)
    with pytest.raises(DataError, match=message):
        load_dataset(DataConfig(source=str(path)))


def test_bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(DataConfig(source=str(tmp_path / "empty")))
    root = make_folder(tmp_path / "one_empty", per_class=4)
    (root / "zebra").mkdir()
    with pytest.raises(DataError, match="class folder 'zebra' has no images"):
        load_dataset(DataConfig(source=str(root)))
    tiny = make_folder(tmp_path / "tiny", per_class=1)
    with pytest.raises(DataError, match="too few images"):
        load_dataset(DataConfig(source=str(tiny)))


def test_unknown_source_and_missing_path(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_dataset(DataConfig(source="nope"))
    with pytest.raises(DataError, match="no such file"):
        load_dataset(DataConfig(source=str(tmp_path / "missing.npz")))


def test_keras_dataset_offline_gives_fetch_instructions(monkeypatch, tmp_path):
    import keras

    def offline():
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DataError, match=r"keras.datasets.mnist.load_data\(\).*--data FILE.npz"):
        load_dataset(DataConfig(source="mnist"))


def test_a_relative_data_path_is_recorded_absolute(tmp_path, monkeypatch):
    """A run trained with --data ../images works from any folder (issue 11): config.json holds the absolute path."""
    from conftest import make_npz

    make_npz(tmp_path / "d.npz")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    cfg = DataConfig(source="../d.npz")
    assert cfg.source == str((tmp_path / "d.npz").resolve())
    assert DataConfig(source="digits").source == "digits"
    monkeypatch.chdir(tmp_path)
    assert load_dataset(DataConfig.from_dict(cfg.to_dict())).num_classes == 3


@pytest.mark.parametrize("shape, channels, size, pixel_max, dtype", [
    ((3, 37, 53, 3), 1, (8, 8), 255.0, np.uint8),  # shrink, colour to grey
    ((2, 8, 8), 1, (28, 28), 16.0, np.float32),  # enlarge (digits to MNIST geometry)
    ((2, 100, 70, 4), 3, (32, 32), 255.0, np.uint8),  # RGBA
    ((1, 30, 30, 1), 3, (64, 20), 1.0, np.float64),  # grey to colour, one axis up, one down
    ((2, 9, 9), 1, (9, 9), 255.0, np.uint16),  # no resize
])
def test_preprocess_converts_only_the_pixels_the_resize_reads(shape, channels, size, pixel_max, dtype):
    """preprocess picks the rows and columns the bilinear resize reads before converting to float32: the same
    result, bit for bit, as converting every pixel first."""
    from edgecnn.script.edgecnn_infer import preprocess, resize_bilinear, to_channels

    x = (np.random.default_rng(0).random(shape) * pixel_max).astype(dtype)
    whole = np.asarray(x, np.float32)
    whole = whole[..., None] if whole.ndim == 3 else whole
    whole = to_channels(whole / np.float32(pixel_max), channels)
    expected = np.clip(resize_bilinear(whole, size), 0.0, 1.0)
    got = preprocess(x, {"image_size": list(size), "channels": channels, "pixel_max": pixel_max})
    assert got.dtype == np.float32 and np.array_equal(got, expected)


def test_rare_classes_keep_a_training_image_in_every_split(tmp_path):
    """Classes of 1 to 8 images: too rare for a stratified split, which a plain shuffle replaced, leaving some
    classes with no training image. Now the held-out images are shared among the classes by size and every class
    keeps at least one training image; the split sizes are as asked."""
    from edgecnn.data import _held_out_per_class

    sizes = [1, 2, 3, 5, 8] * 8
    y = np.repeat(np.arange(len(sizes)), sizes)
    x = np.random.default_rng(0).integers(0, 255, (len(y), 6, 6), dtype=np.uint8)
    for seed in range(5):
        out = _held_out_per_class(y, 30, seed)
        assert len(out) == 30 and len(set(out.tolist())) == 30
        assert np.all(np.bincount(np.delete(y, out), minlength=len(sizes)) >= 1)
    folder = tmp_path / "rare"
    from PIL import Image

    for k, n in enumerate(sizes):
        (folder / f"c{k:02d}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(x[np.flatnonzero(y == k)[i]]).save(folder / f"c{k:02d}" / f"{i}.png")
    ds = load_dataset(DataConfig(source=str(folder)))
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (98, 24, 30)
    assert np.all(np.bincount(ds.y_train, minlength=len(sizes)) >= 1)
