"""Bad input through the CLI (issue 10): exit 2, one line, no traceback, nothing left behind; concurrent writers
refused; a failed start that a plain re-run accepts."""
from __future__ import annotations

import errno
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from bench_artifacts import copy_run, exported_run
from edgecnn.device import script_path


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    return exported_run(digits_run, tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Data files that must be refused: an object-array npz, NaN and infinite pixels, labels outside the
    classes, a folder of 16-bit PNGs."""
    from PIL import Image

    from conftest import make_npz

    d = tmp_path_factory.mktemp("bad_files")
    obj = np.empty((20, 8, 8), dtype=object)
    obj[:] = 0
    np.savez(d / "object.npz", x_train=obj, y_train=np.arange(20) % 2, x_test=obj, y_test=np.arange(20) % 2, x=obj)
    nan = np.full((20, 8, 8), 3.0)
    nan[3, 2, 2] = np.nan
    make_npz(d / "nan_train.npz", dtype=np.float32)
    z = dict(np.load(d / "nan_train.npz"))
    z["x_train"] = z["x_train"].astype(np.float32)
    z["x_train"][0, 0, 0] = np.inf
    np.savez(d / "inf_train.npz", **z)
    np.savez(d / "nan.npz", x=nan)
    np.savez(d / "normalized.npz", x=np.full((4, 8, 8), -0.5, np.float32), y=np.arange(4))
    np.savez(d / "nan_labelled.npz", x=nan, y=np.arange(20) % 10)
    np.savez(d / "labels.npz", x=np.full((4, 8, 8), 3.0), y=np.array([0, 1, 12, 3]))
    for cls in ("a", "b"):
        (d / "deep" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8), 1000 * (i + 1), np.uint16)).save(d / "deep" / cls / f"{i}.png")
    return d


def cli(*args):
    from edgecnn.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(res, message):
    text = res.output.strip()
    assert res.exit_code == 2, (res.exit_code, text[-500:])
    assert "Traceback" not in text and len(text.splitlines()) == 1, text[-500:]
    assert message in text, text


@pytest.mark.parametrize("args, message", [
    (["--image-size", "0", "0"], "--image-size must be two positive numbers"),
    (["--param", "learning_rate=abc"], "learning_rate='abc': must be a number"),
    (["--param", "learning_rate=-1"], "learning_rate=-1: must be > 0"),
    (["--param", "dropout=2"], "dropout=2: must be >= 0 and <= 1"),
    (["--param", "optimizer=adamw"], "choose adam, sgd, rmsprop"),
    (["--seed", "-1"], "--seed must be in 0.."),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--limit", "-5"], "--limit must be >= 1"),
    (["--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
    (["--data", "FILES/object.npz"], "save numbers, not objects"),
    (["--data", "FILES/inf_train.npz"], "NaN or infinite"),
    (["--data", "FILES/deep"], "16-bit"),
])
def test_train_refuses_bad_input_and_leaves_nothing(files, tmp_path, args, message):
    out = tmp_path / "run"
    res = cli("train", "--out", out, *[a.replace("FILES", str(files)) for a in args])
    one_line_error(res, message)
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]


@pytest.mark.parametrize("inputs, message", [
    ("object.npz", "save numbers, not objects"),
    ("nan.npz", "NaN or infinite"),
    ("normalized.npz", "negative pixel values"),
])
def test_predict_refuses_bad_pixels(exported, files, inputs, message):
    one_line_error(cli("predict", exported / "export" / "model_int8.tflite", files / inputs), message)


@pytest.mark.parametrize("inputs, message", [
    ("object.npz", "save numbers, not objects"),
    ("nan_labelled.npz", "NaN or infinite"),
    ("labels.npz", "labels outside 0..9"),
    ("normalized.npz", "negative pixel values"),
])
def test_the_device_script_refuses_bad_pixels_and_labels(exported, files, inputs, message):
    exp = exported / "export"
    p = subprocess.run([sys.executable, str(script_path()), "--model", str(exp / "model_int8.tflite"), "--npz",
                        str(files / inputs), "--pixel-max", "16"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_predict_with_a_class_list_of_the_wrong_length(exported, files, tmp_path):
    run = copy_run(exported, tmp_path / "run")
    m = json.loads((run / "export" / "manifest.json").read_text())
    m["class_names"] = m["class_names"][:9]
    (run / "export" / "manifest.json").write_text(json.dumps(m))
    png = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    one_line_error(cli("predict", run / "export" / "model_int8.tflite", png), "names 9 classes")


@pytest.mark.parametrize("command", ["train", "export", "bench"])
def test_an_unwritable_output_is_one_line(exported, tmp_path, monkeypatch, command):
    """EROFS and ENOSPC: 'cannot write RUN: read-only file system', before anything is measured or trained."""
    import edgecnn.io

    def refuse(folder, what=""):
        raise OSError(errno.EROFS, "Read-only file system", str(folder))

    if command == "bench":
        import edgecnn.bench.report  # noqa: F401  (binds the real write_json before the patch)

        def refuse_json(path, obj):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        monkeypatch.setattr(edgecnn.io, "write_json", refuse_json)
        res = cli("bench", copy_run(exported, tmp_path / "run"), "--backends", "tflite", "--no-timing")
        one_line_error(res, "No space left on device")
        return
    import edgecnn.train

    monkeypatch.setattr(edgecnn.io, "folder_lock", refuse)
    monkeypatch.setattr(edgecnn.train, "folder_lock", refuse)
    args = {"train": ["train", "--out", tmp_path / "ro", "--epochs", "1"],
            "export": ["export", copy_run(exported, tmp_path / "run"), "--formats", "tflite_fp32"]}[command]
    one_line_error(cli(*args), "Read-only file system")


def test_a_second_writer_is_refused_with_the_pid(exported, tmp_path):
    import os

    from edgecnn.io import folder_lock

    run = copy_run(exported, tmp_path / "run")
    with folder_lock(run):
        one_line_error(cli("export", run, "--formats", "tflite_fp32"), f"is in use by pid {os.getpid()}")
        one_line_error(cli("train", "--out", run, "--epochs", "1", "--overwrite"), "is in use by pid")
    assert (run / "export" / "model_int8.tflite").exists()  # the second writer changed nothing


def test_a_start_that_never_saved_an_epoch_is_not_a_dead_end(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # what a start killed in its first epoch leaves
    (out / "history.csv").write_text("epoch,loss\n")
    res = cli("train", "--out", out, "--resume")
    one_line_error(res, "without --resume")
    res = cli("train", "--out", out, "--epochs", "1", "--limit", "200")
    assert res.exit_code == 0, res.output
    assert (out / "model.keras").is_file()


def test_export_removes_stale_staging(exported, tmp_path):
    run = copy_run(exported, tmp_path / "run")
    (run / "export" / ".staging-abc123").mkdir()
    (run / "export" / ".staging-abc123" / "model_fp32.tflite").write_bytes(b"x")
    (run / "export" / ".model_int8.xyz.tmp.tflite").write_bytes(b"x")
    res = cli("export", run, "--formats", "tflite_fp32")
    assert res.exit_code == 0, res.output
    assert not [p.name for p in (run / "export").iterdir() if p.name.startswith(".") and p.name != ".edgecnn.lock"]
