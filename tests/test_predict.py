"""edgecnn predict: every format, image files and .npz, top-k, --json, bad inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from bench_artifacts import exported_run


@pytest.fixture(scope="session")
def exported(digits_run, tmp_path_factory):
    return exported_run(digits_run, tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="session")
def samples(tmp_path_factory):
    """Twenty raw digits test images (0-16 pixels) as an .npz, and the first one as an 8-bit PNG."""
    from PIL import Image

    from edgecnn.data import DataConfig, load_dataset

    ds = load_dataset(DataConfig())
    d = tmp_path_factory.mktemp("samples")
    raw = ds.x_test[:20, ..., 0] * 16.0  # back to the source's pixel scale
    np.savez(d / "digits.npz", x=raw)
    Image.fromarray(np.round(ds.x_test[0, ..., 0] * 255).astype(np.uint8), mode="L").save(d / "first.png")
    return d, ds.y_test[:20]


def cli(*args):
    from edgecnn.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("file", ["export/model_int8.tflite", "export/model_fp32.tflite", "export/model_fp32.onnx",
                                  "export/model_int8.onnx", "model.keras"])
def test_every_format_predicts_the_digits(exported, samples, file):
    from edgecnn.predict import predict

    d, y = samples
    preds = predict(exported / file, [d / "digits.npz", d / "first.png"], top_k=3)
    assert len(preds) == 21
    assert np.mean([p.index for p in preds[:20]] == y) >= 0.9
    assert preds[20].index == preds[0].index  # the PNG is the first npz image at 8-bit scale
    for p in preds:
        confs = [t["confidence"] for t in p.top]
        assert len(p.top) == 3 and confs == sorted(confs, reverse=True) and sum(confs) <= 1.0 + 1e-3
        assert p.label == p.top[0]["label"] == str(p.index)


def test_predict_matches_the_bench_rows(exported, samples):
    """predict and bench share the runtime path: same labels as the tflite row's predictions."""
    from edgecnn.runtimes import RUNTIMES as BACKENDS
    from edgecnn.bench import BenchConfig
    from edgecnn.script.edgecnn_infer import preprocess
    from edgecnn.predict import predict

    d, _ = samples
    model = exported / "export" / "model_int8.tflite"
    x = preprocess(np.load(d / "digits.npz")["x"], json.loads((exported / "export" / "manifest.json").read_text())
                   ["preprocessing"])
    sess, _ = BACKENDS["tflite"].load(model, BenchConfig())
    assert [p.index for p in predict(model, [d / "digits.npz"])] == list(sess.predict(x).argmax(1))


def test_cli_text_and_json(exported, samples):
    d, y = samples
    res = cli("predict", exported / "export" / "model_int8.tflite", d / "first.png", "--top-k", "2")
    assert res.exit_code == 0 and res.output.startswith(f"first.png: {y[0]} (")
    res = cli("predict", exported / "export" / "model_fp32.onnx", d / "digits.npz", "--json")
    doc = json.loads(res.output)
    # issue 13: one JSON shape with the on-device script: results[] with top_k
    assert len(doc["results"]) == 20 and set(doc["results"][0]) == {"input", "index", "label", "confidence",
                                                                     "top_k"}


def test_predict_and_the_script_speak_one_dialect(exported, samples):
    """Same --model form, --top-k default, text and JSON shape in `edgecnn predict` and the on-device script."""
    import subprocess
    import sys

    from edgecnn.device import script_path

    d, _ = samples
    model = exported / "export" / "model_int8.tflite"
    ours = cli("predict", "--model", model, d / "first.png", "--json")
    theirs = subprocess.run([sys.executable, str(script_path()), "--model", str(model), str(d / "first.png"),
                             "--json"], capture_output=True, text=True, timeout=120)
    a, b = json.loads(ours.output)["results"][0], json.loads(theirs.stdout)["results"][0]
    assert set(a) == set(b) and len(a["top_k"]) == len(b["top_k"]) == 3  # the same default
    assert [t["index"] for t in a["top_k"]] == [t["index"] for t in b["top_k"]]
    text = cli("predict", "--model", model, d / "first.png").output.strip()
    script_text = subprocess.run([sys.executable, str(script_path()), "--model", str(model), str(d / "first.png")],
                                 capture_output=True, text=True, timeout=120).stdout.strip()
    assert text.split(":", 1)[1].split("(")[0] == script_text.split(":", 1)[1].split("(")[0]  # same label


def test_a_folder_of_images_is_classified_as_its_files(exported, samples, tmp_path):
    """A folder argument (the photos to classify, or a class-per-folder test set) stands for the image files
    under it, sorted, subfolders included, in `edgecnn predict` and the on-device script alike; other files are
    passed over, and a folder with no image is a one-line error."""
    import shutil
    import subprocess
    import sys

    from edgecnn.device import script_path

    d, _ = samples
    folder = tmp_path / "photos"
    (folder / "b").mkdir(parents=True)
    shutil.copy(d / "first.png", folder / "one.png")
    shutil.copy(d / "first.png", folder / "b" / "two.PNG")
    (folder / "notes.txt").write_text("not an image")
    model = exported / "export" / "model_int8.tflite"
    expected = [str(folder / "b" / "two.PNG"), str(folder / "one.png")]
    ours = json.loads(cli("predict", "--model", model, folder, "--json").output)["results"]
    theirs = subprocess.run([sys.executable, str(script_path()), "--model", str(model), str(folder), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert theirs.returncode == 0, theirs.stderr
    theirs = json.loads(theirs.stdout)["results"]
    assert [r["input"] for r in ours] == [r["input"] for r in theirs] == expected
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    from edgecnn.predict import input_chunks, load_inputs, predict

    for i in range(3):  # 5 files read 2 at a time: the same images and names as all at once
        shutil.copy(d / "first.png", folder / f"c{i}.png")
    prep = json.loads((exported / "export" / "manifest.json").read_text())["preprocessing"]
    x, names = load_inputs([folder], prep)
    parts = list(input_chunks([folder], prep, size=2))
    assert [len(n) for _, n in parts] == [2, 2, 1] and [n for _, ns in parts for n in ns] == names
    assert np.array_equal(np.concatenate([p for p, _ in parts]), x)
    assert [p.input for p in predict(model, [folder])] == names
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(__import__("edgecnn.cli", fromlist=["main"]).main,
                             ["predict", "--model", str(model), str(tmp_path / "empty")])
    assert res.exit_code == 2 and "a folder with no image files" in res.output
    p = subprocess.run([sys.executable, str(script_path()), "--model", str(model), str(tmp_path / "empty")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "a folder with no image files" in p.stderr, (p.returncode, p.stderr)


def test_bad_inputs_are_one_line(exported, samples, tmp_path):
    d, _ = samples
    tfl = exported / "export" / "model_int8.tflite"
    (tmp_path / "broken.tflite").write_bytes(tfl.read_bytes()[:1000])
    (tmp_path / "manifest.json").write_text((exported / "export" / "manifest.json").read_text())
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "m.tflite").write_bytes(tfl.read_bytes())
    (tmp_path / "fake.png").write_text("not an image")
    from PIL import Image

    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(tmp_path / "deep.png")  # read as the device does
    cases = [
        ((tfl, tmp_path / "missing.png"), "no such file"),
        ((tmp_path / "broken.tflite", d / "first.png"), "cannot load"),
        ((lone / "m.tflite", d / "first.png"), "no manifest.json"),
        ((tfl, tmp_path / "fake.png"), "not a readable image"),
        ((tfl, tmp_path / "deep.png"), "16-bit"),
        ((tmp_path / "nope.onnx", d / "first.png"), "no such model file"),
    ]
    for args, message in cases:
        res = cli("predict", *args)
        assert res.exit_code == 2 and message in res.stderr, (args, res.output)
        assert len(res.stderr.strip().splitlines()) == 1


def test_a_labelled_folder_reports_accuracy_everywhere(exported, tmp_path):
    """A held-out or field folder laid out one subfolder per class, holding some of the model's classes: the
    on-device script and `edgecnn predict` label each image by its class folder and report accuracy, and
    `bench --model M --data FOLDER` runs every image of it with labels in the model's class order (before:
    only the folder's own 20% test split, its classes renumbered 0, 1 in its own sorted order: 0.0000 here).
    A class folder the model does not know is said in one line, never guessed."""
    import shutil
    import subprocess
    import sys

    from PIL import Image

    from edgecnn.bench import BenchConfig, bench
    from edgecnn.data import DataConfig, load_dataset
    from edgecnn.device import script_path

    ds = load_dataset(DataConfig())
    field = tmp_path / "field"
    truth = {}
    for cls in ("3", "7"):
        (field / cls).mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(ds.y_test == int(cls))[:6]):
            f = field / cls / f"{j}.png"
            Image.fromarray(np.round(ds.x_test[i, ..., 0] * 255).astype(np.uint8), mode="L").save(f)
            truth[str(f)] = int(cls)
    model = exported / "export" / "model_int8.tflite"
    p = subprocess.run([sys.executable, str(script_path()), "--model", str(model), str(field), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    expected = float(np.mean([r["index"] == truth[r["input"]] for r in out["results"]]))
    assert out["labels"] == "class folders" and out["accuracy"] == expected >= 0.8 and out["n"] == 12
    ours = json.loads(cli("predict", "--model", model, field, "--json").output)
    assert ours["accuracy"] == expected and ours["labels"] == "class folders"
    assert f"accuracy: {expected:.4f} on 12 labelled inputs" in cli("predict", "--model", model, field).output
    res = bench(model=model, data=str(field), config=BenchConfig(backends=["tflite"], timing=False, write=False))
    row = next(r for r in res.rows if r.artifact == "tflite_int8")
    assert res.settings["test_images"] == 12 and row.accuracy == pytest.approx(expected, abs=1e-4)
    assert res.settings["source"]["images"] == f"images: all of {field.resolve()}"
    from edgecnn.bench.report import markdown

    assert f"Run on 12 images: all of {field.resolve()}, model {model}." in markdown(res)
    first = next(r for r in out["results"] if r["input"] == str(field / "3" / "0.png"))
    assert first["label"] == first["true_label"] == "3"
    shutil.copy(field / "3" / "0.png", field / "7" / "x.png")  # a three filed under 7: named as a miss
    p = subprocess.run([sys.executable, str(script_path()), "--model", str(model), str(field)],
                       capture_output=True, text=True, timeout=120)
    miss = f"{field / '7' / 'x.png'} (7 -> 3)"
    assert miss in p.stdout.splitlines()[-1] and p.stdout.splitlines()[-1].startswith("wrong: ")
    assert miss in cli("predict", "--model", model, field).output.splitlines()[-1]
    assert len(p.stdout.splitlines()) == 10 + 3  # ten lines, "... 3 more", accuracy, wrong
    (field / "cat").mkdir()
    Image.new("L", (8, 8)).save(field / "cat" / "0.png")
    p = subprocess.run([sys.executable, str(script_path()), "--model", str(model), str(field), "--json"],
                       capture_output=True, text=True, timeout=120)
    out = json.loads(p.stdout)
    assert out["accuracy"] is None and "'cat' are not classes of the model" in out["note"]
    assert "'cat' are not classes of the model" in cli("predict", "--model", model, field).output
    res = cli("bench", "--model", model, "--data", field, "--backends", "tflite", "--no-timing")
    assert res.exit_code == 2 and res.output.startswith("error: ") and "'cat' are not among the model's 10" \
        in res.output and len(res.output.strip().splitlines()) == 1
    res = cli("bench", exported, "--data", field, "--backends", "tflite", "--no-timing")  # not the run's data
    assert res.exit_code == 2 and "to run its models on other images, `edgecnn bench --model" in res.output
    np.savez(tmp_path / "field.npz", x=ds.x_test[:30] * 16.0, y=ds.y_test[:30])  # the script's --npz form
    p = subprocess.run([sys.executable, str(script_path()), "--model", str(model), "--npz", str(tmp_path / "field.npz"),
                        "--json"], capture_output=True, text=True, timeout=120)
    res = bench(model=model, data=str(tmp_path / "field.npz"),
                config=BenchConfig(backends=["tflite"], timing=False, write=False))
    row = next(r for r in res.rows if r.artifact == "tflite_int8")
    assert res.settings["test_images"] == 30 and row.accuracy == pytest.approx(json.loads(p.stdout)["accuracy"])
    own = bench(model=model, data="digits", config=BenchConfig(backends=["tflite"], timing=False, write=False))
    assert own.settings["test_images"] == len(ds.y_test) and own.settings["source"]["images"] == "test images"
