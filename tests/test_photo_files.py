"""Image files as users' folders hold them: photos that carry an EXIF Orientation tag (a phone held upright
stores the sensor's sideways pixels and a tag), read upright by default in training and on the device, as stored
on request, and measured for an imported model; an iPhone's HEIC files; colour palette PNGs and GIFs."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from edgecnn.script.edgecnn_infer import UsageError, image_array, read_image, validate_manifest

STORE = {1: 0, 3: 2, 6: 1, 8: 3}  # counter-clockwise quarter turns a camera stores an upright image under the tag


def cli(*args):
    from edgecnn.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def _png(a: np.ndarray, tag: int) -> bytes:
    exif = Image.Exif()
    if tag != 1:
        exif[0x0112] = tag
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG", exif=exif.tobytes())
    return b.getvalue()


def bar(cls: str, size: int = 12, at: int = 0, mark: int = 0) -> np.ndarray:
    """A grey image with a bright bar: vertical for "tall", horizontal for "wide"; `mark` a faint corner pixel
    that makes each image of a folder its own."""
    a = np.zeros((size, size), np.uint8)
    a[0, 0] = mark
    c = size // 2 + at
    if cls == "tall":
        a[2:size - 2, c] = 255
    else:
        a[c, 2:size - 2] = 255
    return a


def write_folder(root, n: int = 12, stored_as_seen: bool = False):
    """tall/ and wide/ with n images each, every other one stored sideways under tag 6 or 8. stored_as_seen: the
    sideways ones are filed by what their stored pixels show (as a model trained on stored pixels learned them)."""
    for cls in ("tall", "wide"):
        (root / cls).mkdir(parents=True)
    for cls in ("tall", "wide"):
        for i in range(n):
            tag = (1, 6, 1, 8)[i % 4]
            stored = np.ascontiguousarray(np.rot90(bar(cls, at=i % 3 - 1, mark=i), STORE[tag]))
            seen = cls if tag == 1 else {"tall": "wide", "wide": "tall"}[cls]  # what the stored pixels show
            (root / (seen if stored_as_seen else cls) / f"{cls}{i:02d}.png").write_bytes(_png(stored, tag))


@pytest.mark.parametrize("channels", [1, 3])
def test_every_orientation_reads_as_pillow_shows_it(channels):
    """image_array(orientation="exif") is Pillow's ImageOps.exif_transpose for each of the 8 tags, for grey and
    RGB; "stored" leaves the pixels as stored."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (5, 7, 3)[:2 if channels == 1 else 3], dtype=np.uint8)
    for tag in range(1, 9):
        data = _png(a, tag)
        got = image_array(Image.open(io.BytesIO(data)), "x.png", "exif")
        np.testing.assert_array_equal(got, np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data)))),
                                      err_msg=f"tag {tag}")
        np.testing.assert_array_equal(image_array(Image.open(io.BytesIO(data)), "x.png", "stored"), a)


def test_a_folder_of_sideways_photos_trains_upright_and_records_how(tmp_path):
    from edgecnn.data import DataConfig, load_dataset

    write_folder(tmp_path / "f")
    (tmp_path / "f" / "wide" / "odd.png").write_bytes(_png(np.zeros((12, 16), np.uint8), 6))  # 16 wide stored
    ds = load_dataset(DataConfig(source=str(tmp_path / "f"), image_size=(12, 12)))  # default: exif
    assert ds.preprocessing["orientation"] == "exif"
    assert ds.summary()["exif_turned"] == {"images": 13, "of": 25, "read": "exif"}
    raw = ds.train.raw
    odd = raw.paths.index(tmp_path / "f" / "wide" / "odd.png")
    assert raw.sizes[odd] == (16, 12)  # as read: upright, 16 high
    x, y = np.asarray(ds.train), ds.y_train
    vertical = x[..., 0].max(axis=1).sum(axis=1) < x[..., 0].max(axis=2).sum(axis=1)  # a bar spans rows: tall
    keep = np.asarray([p.name != "odd.png" for p in np.asarray(raw.paths, object)[ds.train.index]])
    assert np.array_equal(vertical[keep], y[keep] == 0)  # every image upright: its bar as its class says
    stored = load_dataset(DataConfig(source=str(tmp_path / "f"), image_size=(12, 12), orientation="stored"))
    assert stored.preprocessing["orientation"] == "stored" and stored.summary()["exif_turned"]["read"] == "stored"
    xs = np.asarray(stored.train)
    vs = xs[..., 0].max(axis=1).sum(axis=1) < xs[..., 0].max(axis=2).sum(axis=1)
    assert not np.array_equal(vs[keep], y[keep] == 0)  # as stored, the sideways ones show the other class
    from edgecnn.errors import DataError

    with pytest.raises(DataError, match="different sizes"):  # 12x16 stored beside 12x12: as stored, sizes differ
        load_dataset(DataConfig(source=str(tmp_path / "f"), orientation="stored"))


def test_older_runs_and_manifests_read_files_as_stored():
    """A config.json, run or manifest recorded before the field existed read files as stored, so it still does."""
    from edgecnn.contracts.manifest import Preprocessing
    from edgecnn.data import DataConfig
    from edgecnn.rundir import Run

    assert DataConfig.from_dict({"source": "digits"}).orientation == "stored"
    assert DataConfig().orientation == "exif"  # a new run reads photos upright
    prep = {"image_size": [8, 8], "channels": 1, "pixel_max": 16.0, "resize": "bilinear"}
    assert Preprocessing.from_dict(prep).orientation == "stored"
    assert Run(path=None, config={"preprocessing": prep}).preprocessing["orientation"] == "stored"


def test_the_device_reads_a_file_as_its_manifest_says(tmp_path):
    path = tmp_path / "p.png"
    path.write_bytes(_png(np.ascontiguousarray(np.rot90(bar("wide"), STORE[6])), 6))
    prep = {"image_size": [12, 12], "channels": 1, "pixel_max": 255.0, "resize": "bilinear"}
    upright = read_image(str(path), dict(prep, orientation="exif"))[..., 0]
    assert upright[6].sum() > 5 and upright[:, 6].sum() < 2  # the horizontal bar, upright
    np.testing.assert_array_equal(read_image(str(path), prep), read_image(str(path), dict(prep, orientation="stored")))
    m = {"preprocessing": dict(prep, orientation="sideways"), "class_names": ["a", "b"], "artifacts": {}}
    with pytest.raises(UsageError, match="orientation is 'sideways'"):
        validate_manifest(m, "manifest.json")


def _bar_model():
    """A hand-set classifier of 12x12 grey images in [0, 1]: logit 0 a vertical bar's response (tall), logit 1
    a horizontal bar's (wide). It tells them apart only upright, as a model trained on upright photos does."""
    import keras

    kernel = np.zeros((5, 5, 1, 2), np.float32)
    kernel[:, 2, 0, 0] = 1.0  # a vertical line
    kernel[2, :, 0, 1] = 1.0  # a horizontal line
    model = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Conv2D(2, 5, use_bias=False),
                              keras.layers.GlobalMaxPooling2D()])
    model.layers[0].set_weights([kernel])
    return model


@pytest.mark.parametrize("stored_as_seen", [False, True])
def test_import_measures_how_its_training_read_the_photos(tmp_path, stored_as_seen):
    """auto reads photos with a tag as the model classifies them better: upright (trained with exif_transpose)
    or as stored (trained on the stored pixels, as Keras' loader reads them), and records it for the device."""
    write_folder(tmp_path / "f", n=16, stored_as_seen=stored_as_seen)
    model = tmp_path / "bars.keras"
    _bar_model().save(model)
    run = tmp_path / "run"
    res = cli("import", model, "--data", tmp_path / "f", "--out", run, "--input-range", "0-1")
    assert res.exit_code == 0, res.output
    way = "stored" if stored_as_seen else "exif"
    other = "exif" if stored_as_seen else "stored"
    assert f"orientation: {way} (accuracy on " in res.output, res.output
    config = json.loads((run / "config.json").read_text())
    fit = config["model"]["orientation_fit"]
    assert fit[way] == 1.0 and fit[other] < 0.5
    assert config["preprocessing"]["orientation"] == way and config["data"]["orientation"] == way
    assert json.loads((run / "metrics.json").read_text())["test_accuracy"] == 1.0
    write_folder(tmp_path / "field", n=8, stored_as_seen=stored_as_seen)  # other photos: read as the run records
    bench = cli("bench", "--model", run / "model.keras", "--data", tmp_path / "field", "--no-timing", "--json")
    assert bench.exit_code == 0, bench.output
    out = json.loads(bench.stdout)  # warnings go to stderr too
    assert out["rows"][0]["accuracy"] == 1.0
    # the same generator wrote them: 16 of the field's images are the run's own photos, byte for byte
    assert any(w.startswith("16 of 16 images are byte-identical to images of the run's own data")
               for w in out["warnings"]), out["warnings"]
    pinned = cli("import", model, "--data", tmp_path / "f", "--out", tmp_path / "pinned", "--input-range", "0-1",
                 "--orientation", other)  # as asked, not measured
    assert pinned.exit_code == 0 and "orientation:" not in pinned.output, pinned.output
    assert json.loads((tmp_path / "pinned" / "metrics.json").read_text())["test_accuracy"] < 1.0


def test_upright_is_taken_only_when_clearly_better():
    """A model that scores a few photos more upright by chance keeps "stored" (Keras' loader's way); one that is
    right far more often upright takes "exif"."""
    from edgecnn.imported_fit import orientation_verdict as _orientation_verdict

    stored = np.ones(40, bool)
    stored[:2] = False  # 38 of 40 right as stored
    assert _orientation_verdict(np.ones(40, bool), stored)[0] == "stored"  # 40 of 40 upright: two images
    assert _orientation_verdict(np.ones(40, bool), ~stored | (np.arange(40) < 30))[0] == "exif"  # 40 against 30
    assert _orientation_verdict(np.zeros(40, bool), stored) == ("stored", {"images": 40, "exif": 0.0,
                                                                          "stored": 0.95})


def test_iphone_heic_photos_without_pillow_heif_are_named_with_what_to_do(tmp_path, monkeypatch):
    """Without pillow-heif, HEIC/HEIF (an iPhone's default) is not read: a class folder of them, a folder given
    to the script, a file, and the training summary's left-out count each say what to do, not only "no images"."""
    import edgecnn.script.edgecnn_infer as script
    from edgecnn.cli.train import _left_out
    from edgecnn.data import DataConfig, load_dataset
    from edgecnn.errors import DataError
    from edgecnn.script.edgecnn_infer import image_files

    monkeypatch.setattr(script, "_HEIF", [False])  # as where pillow-heif is not installed
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (tmp_path / "cat" / "a.png").write_bytes(_png(bar("tall"), 1))
    with pytest.raises(DataError, match=r"class folder 'dog' has no images .*\.heic files are HEIF photos"):
        load_dataset(DataConfig(source=str(tmp_path)))
    with pytest.raises(UsageError, match="pip install pillow-heif"):
        image_files([tmp_path / "dog"])
    with pytest.raises(UsageError, match=r"IMG_0001.HEIC: \.heic files are HEIF photos"):
        read_image(str(tmp_path / "dog" / "IMG_0001.HEIC"), {"image_size": [12, 12], "channels": 1})
    assert "pip install pillow-heif" in _left_out({"not_images": {".heic": 2, ".txt": 1}})
    assert "HEIF" not in _left_out({"not_images": {".txt": 1, "hidden": 2}})


def test_iphone_heic_photos_are_read_upright_with_pillow_heif(tmp_path):
    """With pillow-heif, a folder of HEIC photos trains like JPEGs, the script reads them, and a photo taken
    turned arrives upright once (libheif applies the container's rotation and pillow-heif resets the EXIF tag),
    whichever orientation is asked."""
    pytest.importorskip("pillow_heif")
    from edgecnn.data import DataConfig, load_dataset
    from edgecnn.script.edgecnn_infer import heif_readable

    assert heif_readable()
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:8, :12] = 255  # a bright corner, top left as stored
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            exif = Image.Exif()
            exif[0x0112] = 6  # stored sideways: upright is 90 degrees clockwise, the corner top right
            Image.fromarray(rgb).save(tmp_path / cls / f"IMG_{i}.HEIC", exif=exif.tobytes(), quality=100)
    upright = np.rot90(rgb, -1)  # 48 high, the corner (now 12 x 8) top right
    for way in ("exif", "stored"):
        ds = load_dataset(DataConfig(source=str(tmp_path), orientation=way, val_fraction=0.25, test_fraction=0.25))
        assert ds.input_shape == (48, 32, 3) and ds.summary().get("exif_turned") is None  # the tag is reset
        x = np.asarray(ds.train)[0]
        assert np.abs(x * 255 - upright).max() < 40  # HEVC is lossy: the corner is where a viewer shows it
        assert x[:12, -8:].mean() > 0.8 and x[:12, :8].mean() < 0.2
    got = read_image(str(tmp_path / "a" / "IMG_0.HEIC"), {"image_size": [48, 32], "channels": 3,
                                                           "orientation": "exif"})
    np.testing.assert_array_equal(got, np.asarray(ds.train.raw.preprocessed(np.array([0]), ds.preprocessing))[0])


def test_a_colour_palette_image_is_read_in_colour_as_keras_reads_it(tmp_path):
    """A palette PNG (pngquant, TinyPNG) or GIF with colours is RGB, as tf.io.decode_image reads it for Keras'
    loader; one whose palette is all grey stays grey. Palette images were all read as grey, so a colour GIF lost
    its colour in training and on the device alike."""
    import tensorflow as tf

    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[:3] = (255, 0, 0)
    rgb[3:] = (0, 0, 255)
    (tmp_path / "red").mkdir()
    (tmp_path / "blue").mkdir()
    paths = [tmp_path / "red" / "a.png", tmp_path / "red" / "b.gif", tmp_path / "blue" / "c.png"]
    Image.fromarray(rgb).quantize(4).save(paths[0])
    Image.fromarray(rgb).quantize(4).save(paths[1])
    Image.fromarray(rgb).convert("RGBA").quantize(4).save(paths[2])  # a palette with transparency
    for p in paths:
        with Image.open(p) as im:
            assert im.mode == "P"
            got = image_array(im, str(p))
        keras_reads = tf.io.decode_image(p.read_bytes(), channels=3, expand_animations=False).numpy()
        np.testing.assert_array_equal(got, keras_reads, err_msg=p.name)
    from edgecnn.data.split import scan_images

    assert scan_images(paths).channels == 3  # a folder of them trains on RGB
    grey = np.tile(np.arange(0, 240, 40, dtype=np.uint8), (6, 1))
    Image.fromarray(grey).convert("P").save(tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(image_array(im, "g.png"), grey)


def test_byte_identical_copies_across_classes_and_into_the_test_split_are_said(tmp_path):
    """The same photo in two class folders (contradicting labels), and a test image identical to a training one
    (the test figures count it as unseen), are named when training ends and recorded in config.json; copies of
    different bytes are not."""
    from edgecnn.data import DataConfig, load_dataset
    from edgecnn.data.duplicates import duplicate_warnings, identical_groups

    write_folder(tmp_path / "f", n=12)
    tall, wide = tmp_path / "f" / "tall", tmp_path / "f" / "wide"
    (wide / "copy of tall03.png").write_bytes((tall / "tall03.png").read_bytes())  # another class
    for i in range(12):  # every tall image twice: some pair lands in test and train
        (tall / f"tall{i:02d} (1).png").write_bytes((tall / f"tall{i:02d}.png").read_bytes())
    big = np.random.default_rng(0).integers(0, 255, 100_000, dtype=np.uint8)  # past the 64 KiB head
    (tmp_path / "a.bin").write_bytes(big.tobytes())
    big[-1] ^= 1  # the same size and head, another last byte
    (tmp_path / "b.bin").write_bytes(big.tobytes())
    groups = identical_groups([tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "a.bin"])
    assert [g.tolist() for g in groups] == [[0, 2]]
    ds = load_dataset(DataConfig(source=str(tmp_path / "f")))
    found = ds.duplicates()
    assert found["groups"] == 12 and found["copies"] == 13 and found["across_classes"] == 1  # tall03 thrice
    assert found["examples"]["across_classes"] == ["tall/tall03 (1).png = wide/copy of tall03.png"]
    paths = ds.train.raw.paths
    seen = {paths[i].read_bytes() for i in np.concatenate([ds.train.index, ds.val.index])}
    assert found["test_seen"] == sum(paths[i].read_bytes() in seen for i in ds.test.index)
    assert found["test_seen"] > 0
    said = duplicate_warnings(found, len(ds.test))
    assert len(said) == 2 and "contradict" in said[0] and f"of {len(ds.test)} test images" in said[1]
    near = ds.near_copies()  # bars a pixel apart: near copies beyond the byte-identical ones
    assert "near copies" in duplicate_warnings({**found, "near": near}, len(ds.test))[2]
    res = cli("train", "--data", tmp_path / "f", "--out", tmp_path / "run", "--epochs", "1", "--param", "filters=4",
              "--param", "dense_units=8")
    assert res.exit_code == 0, res.output
    assert "byte-identical copy in another class" in res.output and "test figures count them" in res.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dataset"]["duplicates"] == \
        {**found, "near": near}
    write_folder(tmp_path / "clean", n=6)
    assert load_dataset(DataConfig(source=str(tmp_path / "clean"))).duplicates() == {}
    from edgecnn.data.duplicates import field_warning  # bench --data FIELD: a field set of the run's own photos

    new = tmp_path / "new.png"
    new.write_bytes(_png(bar("wide", mark=200), 1))
    assert field_warning([new], str(tmp_path / "f")) == ""
    assert field_warning([tmp_path / "clean" / "tall" / "tall01.png", new], str(tmp_path / "f")).startswith(
        f"1 of 2 images are byte-identical to images of the run's own data {tmp_path / 'f'} (")


def _tiles(root, copies: dict) -> list:
    """Two classes of 64x64 tiles cut side by side from scikit-learn's two sample photos (no two overlap), and
    `copies`: {tile: "scaled" | "resaved" | "brighter"} written beside their originals. Returns the copies' names."""
    from sklearn.datasets import load_sample_images
    from PIL import ImageEnhance

    names = []
    for cls, photo in zip(("china", "flower"), load_sample_images().images):
        (root / cls).mkdir(parents=True)
        for k in range(24):
            y, x = 224 + 64 * (k // 8), 64 * (k % 8) + 32  # below china.jpg's hazy sky and horizon
            im = Image.fromarray(photo[y:y + 64, x:x + 64])
            im.save(root / cls / f"{k:02d}.jpg", quality=92)
            how = copies.get(k)
            if how:
                copy = (im.resize((58, 58)) if how == "scaled" else
                        ImageEnhance.Brightness(im).enhance(1.05) if how == "brighter" else im)
                copy.save(root / cls / f"{k:02d}_{how}.jpg", quality=60)
                names.append(f"{cls}/{k:02d}_{how}.jpg")
    return names


def test_near_copies_of_training_photos_in_the_test_split_are_said(tmp_path):
    """Resized, re-saved and brightened copies of photos, which a random split puts on both sides, are found from
    what the model sees (16x16 thumbnails correlating 0.97+ and 0.05 apart at most, their means removed),
    named when training ends and recorded; photos that only share a subject are not, nor are digits' different
    handwritten samples, nor blank images."""
    from edgecnn.data import DataConfig, load_dataset
    from edgecnn.data.near_copies import MIN_CORR, Prints, nearest

    copied = {k: ("scaled", "resaved", "brighter")[k % 3] for k in range(0, 24, 2)}
    _tiles(tmp_path / "f", copied)
    ds = load_dataset(DataConfig(source=str(tmp_path / "f"), image_size=(32, 32), seed=0))
    found = ds.near_copies()
    paths = ds.train.raw.paths
    stem = [p.relative_to(tmp_path / "f").as_posix().split("_")[0].removesuffix(".jpg") for p in paths]
    held = {stem[i] for i in np.concatenate([ds.train.index, ds.val.index])}
    # a test tile whose original or copy is held out: exactly the near copies
    expected = sum(stem[i] in held for i in ds.test.index)
    assert expected > 0 and found["near"] == expected, (found, expected)
    assert found["test"] == len(ds.test) and found["min_corr"] == MIN_CORR
    pair = found["examples"][0].split(" (")[0].split(" ~ ")
    assert pair[0].split("_")[0].removesuffix(".jpg") == pair[1].split("_")[0].removesuffix(".jpg")
    _tiles(tmp_path / "plain", {})
    assert load_dataset(DataConfig(source=str(tmp_path / "plain"), image_size=(32, 32))).near_copies() == {}
    assert load_dataset(DataConfig(seed=0)).near_copies() == {}  # 1,797 digits by 43 writers: alike, not copies
    blank = Prints(np.full((4, 16, 16), 0.5, np.float32) + np.arange(4, dtype=np.float32)[:, None, None] / 10)
    assert nearest(blank, blank)[0].tolist() == [-1] * 4  # flat: nobody's near copy, not even its own
    res = cli("train", "--data", tmp_path / "f", "--image-size", "32", "32", "--out", tmp_path / "run",
              "--epochs", "1", "--param", "filters=4", "--param", "dense_units=8")
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert f"{expected} of {len(ds.test)} test images are near copies of training or validation images" in said
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dataset"]["duplicates"]["near"] == found
    page = (tmp_path / "run" / "report.html").read_text()
    assert "are near copies of training or validation images" in page


def test_near_copies_are_not_looked_for_where_reading_the_photos_again_would_cost_an_epoch(tmp_path, monkeypatch):
    """Photos that would pay to cache but are not cached (EDGECNN_CACHE=off): a second read of every photo costs
    as much as an epoch, so the check is skipped, and the record and the report say why."""
    from edgecnn.data import DataConfig, load_dataset

    monkeypatch.setenv("EDGECNN_CACHE", "off")
    _tiles(tmp_path / "f", {0: "resaved"})
    found = {"near": load_dataset(DataConfig(source=str(tmp_path / "f"), image_size=(16, 16))).near_copies()}
    assert found == {"near": {"skipped": "near copies not looked for: the photos are not cached (EDGECNN_CACHE=off)"}}
    big = load_dataset(DataConfig(source=str(tmp_path / "f"), image_size=(64, 64)))  # not worth caching: read
    assert "skipped" not in big.near_copies()
    from edgecnn.report import _run_section  # the report says what was not looked for

    skipped = {"train": 1, "val": 1, "test": 1, "input_shape": [16, 16, 3], "classes": 2, "duplicates": found}
    page = _run_section(tmp_path, {"dataset": skipped, "model": {"arch": "simple_cnn", "input_shape": [16, 16, 3],
                                                                "params": {}}}, None)
    assert "near copies not looked for: the photos are not cached" in page


def test_group_by_keeps_near_copies_and_sessions_in_one_split(tmp_path):
    """--group-by near keeps each image with its near copies (joined transitively) in one split, so the test split
    has none of the training split's; the groups are kept beside the image cache for the stages that split the
    data again. --group-by subfolder keeps each class/SESSION/ folder in one split. Without a group of two, the
    split is the one --group-by none makes."""
    import os

    from edgecnn.data import DataConfig, _split, _split_grouped, load_dataset
    from edgecnn.errors import DataError

    copied = {k: ("scaled", "resaved", "brighter")[k % 3] for k in range(0, 24, 2)}
    _tiles(tmp_path / "f", copied)
    plain = load_dataset(DataConfig(source=str(tmp_path / "f"), image_size=(32, 32), seed=0))
    assert plain.near_copies()["near"] > 0
    ds = load_dataset(DataConfig(source=str(tmp_path / "f"), image_size=(32, 32), seed=0, group_by="near"))
    assert ds.grouping == {"by": "near", "groups": 24, "images": 48, "largest": 2}
    assert ds.near_copies() == {}  # no test image has a near copy left in training or validation
    side = {}  # tile -> the splits holding it or its copy
    for name, split in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        for i in split.index:
            p = Path(ds.train.raw.paths[i])
            side.setdefault(f"{p.parent.name}/{p.stem.split('_')[0]}", set()).add(name)
    assert len(side) == 48 and all(len(s) == 1 for s in side.values())
    memo = list((Path(os.environ["EDGECNN_CACHE"]) / "groups").glob("*.npy"))
    assert memo
    recorded = DataConfig(source=str(tmp_path / "f"), image_size=(32, 32), seed=0, group_by="near").to_dict()
    again = load_dataset(DataConfig.from_dict(recorded))  # a later stage: the groups from the memo, the same split
    assert again.split_fingerprint() == ds.split_fingerprint() and recorded["group_by"] == "near"
    assert DataConfig.from_dict({"source": "digits"}).group_by == "none"  # a run recorded before the option
    from edgecnn.data.near_copies import Prints

    prints = Prints(np.random.default_rng(0).random((64, 16, 16)))  # whole numbers: float64 products are exact
    whole = prints.centred.astype(np.int64)
    assert np.array_equal(whole, prints.centred) and np.array_equal(whole @ whole.T, prints.centred @ prints.centred.T)

    for cls in ("cat", "dog"):  # class/session/image.jpg, and two images straight in the class folder
        for s in range(6):
            (tmp_path / "s" / cls / f"day{s}").mkdir(parents=True)
            for k in range(4):
                Image.fromarray(np.full((8, 8), 20 * s + k + (120 if cls == "dog" else 0), np.uint8)).save(
                    tmp_path / "s" / cls / f"day{s}" / f"{k}.png")
        for k in range(2):
            Image.fromarray(np.full((8, 8), 250 - k - (3 if cls == "dog" else 0), np.uint8)).save(
                tmp_path / "s" / cls / f"loose{k}.png")
    ds = load_dataset(DataConfig(source=str(tmp_path / "s"), group_by="subfolder", seed=3))
    assert ds.grouping == {"by": "subfolder", "groups": 6, "images": 48, "largest": 8}  # day0 of cat and dog
    where = {}
    for name, split in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        for i in split.index:
            p = Path(ds.train.raw.paths[i])
            if p.parent.name.startswith("day"):
                where.setdefault(p.parent.name, set()).add(name)
    assert sorted(where) == [f"day{s}" for s in range(6)] and all(len(s) == 1 for s in where.values())
    assert len(ds.test) > 0 and len(ds.val) > 0
    with pytest.raises(DataError, match="--group-by subfolder needs an image folder"):
        load_dataset(DataConfig(source="digits", group_by="subfolder"))
    y = np.repeat(np.arange(3), 10)
    assert all(np.array_equal(a, b) for a, b in zip(_split(np.arange(30), y, 0.2, 5, "test"),
                                                    _split_grouped(np.arange(30), y, np.arange(30), 0.2, 5, "test")))
    with pytest.raises(DataError, match="no group of images fits a test split"):  # a class is one group
        _split_grouped(np.arange(30), y, y, 0.5, 5, "test")
