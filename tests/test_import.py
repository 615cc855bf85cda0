"""`edgecnn import` (issue 11): a model trained in plain Keras, saved as .keras, goes through export and bench
with parity reported, and through the on-device script."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgecnn.device import script_path


def cli(*args):
    from edgecnn.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def plain_keras_model(tmp_path_factory):
    """A Sequential model trained with plain Keras on digits as raw 0-16 pixels scaled to 0-255, logits out."""
    import keras

    from edgecnn.data import DataConfig, load_dataset

    keras.utils.set_random_seed(0)
    ds = load_dataset(DataConfig())
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])  # logits
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(ds.x_train * 255.0, ds.y_train, epochs=15, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("plain") / "mine.keras"
    model.save(path)
    acc = float(np.mean(model.predict(ds.x_test * 255.0, verbose=0).argmax(1) == ds.y_test))
    return path, acc


def test_import_export_bench_and_the_script(plain_keras_model, tmp_path):
    path, keras_acc = plain_keras_model
    run = tmp_path / "run"
    res = cli("import", path, "--data", "digits", "--out", run, "--input-range", "0-255")
    assert res.exit_code == 0, res.output
    assert "Rescaling" in res.output and "Softmax" in res.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(keras_acc, abs=1e-9)  # the same model, measured the same way
    exp = cli("export", run)
    assert exp.exit_code == 0, exp.output
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["source_run"]["arch"] == "imported"
    for name in ("tflite_fp32", "onnx_fp32"):
        assert manifest["artifacts"][name]["parity"]["max_abs_diff"] <= 1e-4
    assert manifest["artifacts"]["tflite_int8"]["parity"]["top1_agreement"] >= 0.97
    bench = cli("bench", run, "--backends", "keras,tflite,onnxruntime", "--no-timing", "--max-acc-drop", "1")
    assert bench.exit_code == 0 and "parity gates passed" in bench.output, bench.output
    npz = tmp_path / "raw.npz"
    from edgecnn.data import DataConfig, load_dataset

    ds = load_dataset(DataConfig())
    np.savez(npz, x=ds.x_test[:50, ..., 0] * 16.0, y=ds.y_test[:50])
    p = subprocess.run([sys.executable, str(script_path()), "--model", str(run / "export" / "model_int8.tflite"),
                        "--npz", str(npz), "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and json.loads(p.stdout)["accuracy"] >= 0.9, p.stderr
    # QAT rebuilds the imported model (Rescaling, Sequential inside, Softmax) in tf_keras layer by layer
    qat = cli("export", run, "--quant", "qat", "--qat-epochs", "1", "--formats", "tflite_int8")
    assert qat.exit_code == 0, qat.output
    entry = json.loads((run / "export" / "manifest.json").read_text())["artifacts"]["tflite_int8"]
    assert entry["quant"] == "qat"
    facts = entry["details"]["qat"]
    assert facts["float_accuracy"] == pytest.approx(keras_acc, abs=1e-6)  # the rebuilt model is the same model
    assert facts["accuracy_before"] >= keras_acc - 0.03  # ranges started from calibration, not tfmot's [-6, 6]
    assert entry["parity"]["top1_agreement"] >= 0.9


def test_qat_names_a_layer_tf_keras_cannot_rebuild(tmp_path):
    import keras

    @keras.saving.register_keras_serializable(package="edgecnn_test")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    model = keras.Sequential([keras.Input((8, 8, 1)), Doubler(name="doubler"), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    path = tmp_path / "custom.keras"
    model.save(path)
    run = tmp_path / "run"
    assert cli("import", path, "--data", "digits", "--out", run).exit_code == 0
    qat = cli("export", run, "--quant", "qat", "--qat-epochs", "1", "--formats", "tflite_int8")
    assert qat.exit_code == 2, qat.output
    line = qat.output.strip()
    assert len(line.splitlines()) == 1 and "'doubler' (Doubler)" in line and "--quant ptq" in line


def test_import_refuses_what_it_cannot_take(plain_keras_model, tmp_path):
    from conftest import make_npz

    path, _ = plain_keras_model
    make_npz(tmp_path / "three.npz", shape=(8, 8))
    res = cli("import", path, "--data", tmp_path / "three.npz", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "3 classes but mine.keras outputs 10" in res.output
    (tmp_path / "bad.keras").write_text("not a model")
    res = cli("import", tmp_path / "bad.keras", "--data", "digits", "--out", tmp_path / "r2")
    assert res.exit_code == 2 and "not a Keras 3 model" in res.output
