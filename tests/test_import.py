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


@pytest.mark.slow
def test_qat_rebuilds_an_imported_model_layer_by_layer(plain_keras_model, tmp_path):
    """QAT rebuilds the imported model (Rescaling, Sequential inside, Softmax) in tf_keras layer by layer, with its
    weights: the same model before fine-tuning. (Slow: QAT's child process costs 15-28 s even for one epoch.)"""
    path, keras_acc = plain_keras_model
    run = tmp_path / "run"
    res = cli("import", path, "--data", "digits", "--out", run, "--input-range", "0-255")
    assert res.exit_code == 0, res.output
    qat = cli("export", run, "--quant", "qat", "--qat-epochs", "1", "--formats", "tflite_int8")
    assert qat.exit_code == 0, qat.output
    entry = json.loads((run / "export" / "manifest.json").read_text())["artifacts"]["tflite_int8"]
    assert entry["quant"] == "qat"
    facts = entry["details"]["qat"]
    assert facts["float_accuracy"] == pytest.approx(keras_acc, abs=1e-6)  # the rebuilt model is the same model
    assert facts["accuracy_before"] >= keras_acc - 0.03  # ranges started from calibration, not tfmot's [-6, 6]
    assert entry["parity"]["top1_agreement"] >= 0.9


def test_the_input_range_is_measured_when_not_given(plain_keras_model, tmp_path):
    """The model was trained on 0-255 pixels: auto finds it, and asking for 0-1 anyway is honoured with a warning
    that names the better range. This ReLU network is as accurate on [0, 1] (its logits shrink 255x, the argmax
    hardly moves), so accuracy alone cannot tell: the loss does."""
    path, keras_acc = plain_keras_model
    res = cli("import", path, "--data", "digits", "--out", tmp_path / "auto")
    assert res.exit_code == 0, res.output
    assert "input range: 0-255" in res.output
    model = json.loads((tmp_path / "auto" / "config.json").read_text())["model"]
    fit = model["input_range_val_fit"]
    assert model["input_range"] == "0-255" and fit["0-255"]["loss"] < fit["0-1"]["loss"] / 2
    assert fit["0-255"]["accuracy"] > fit["-1-1"]["accuracy"] + 0.1
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(keras_acc, abs=1e-9)
    page = (tmp_path / "auto" / "report.html").read_text()
    assert "Imported model" in page and f"imported from {path}" in page
    assert "Rescaling [0, 1] -&gt; 0-255" in page and "validation accuracy / loss with each" in page
    res = cli("import", path, "--data", "digits", "--out", tmp_path / "asked", "--input-range", "0-1")
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # warnings wrap to the terminal
    assert "warning: with --input-range 0-1 the model scores" in said and "was it trained on 0-255 pixels?" in said
    assert json.loads((tmp_path / "asked" / "config.json").read_text())["model"]["input_range"] == "0-1"


# the tutorial's head (a logit) by default; a sigmoid unit, and QAT of this model, with -m slow
@pytest.mark.parametrize("head", ["logit", pytest.param("sigmoid", marks=pytest.mark.slow)])
def test_a_binary_classifier_with_augmentation_layers_exports_with_ptq_and_qat(head, tmp_path):
    """Keras' tutorial model: augmentation layers and Rescaling(1/255) inside, one output unit (a logit, or a
    sigmoid probability) for two classes. Import gives it the two-class output every edgecnn model has, and
    QAT's tf_keras rebuild leaves the augmentation out (it is the identity at inference)."""
    import keras

    from conftest import make_npz
    from edgecnn.data import DataConfig, load_dataset

    data = make_npz(tmp_path / "two.npz", n_train=160, n_test=60, shape=(16, 16), classes=2)
    ds = load_dataset(DataConfig(source=str(data)))
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 1))
    x = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.05)],
                         name="data_augmentation")(inp)
    x = keras.layers.Rescaling(1.0 / 255)(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    z = keras.layers.Dense(1)(x)
    model = keras.Model(inp, z if head == "logit" else keras.layers.Activation("sigmoid")(z))
    model.compile(keras.optimizers.Adam(0.01), keras.losses.BinaryCrossentropy(from_logits=head == "logit"))
    model.fit(ds.x_train * 255.0, ds.y_train, epochs=20, batch_size=16, verbose=0)
    out = model.predict(ds.x_test * 255.0, verbose=0)[:, 0]
    p1 = out if head == "sigmoid" else 1.0 / (1.0 + np.exp(-out))
    assert np.mean((p1 > 0.5) == ds.y_test) >= 0.9  # a model worth importing, not a coin toss on every image
    assert np.median(np.abs(p1 - 0.5)) > 0.1
    model.save(tmp_path / "binary.keras")
    run = tmp_path / "run"
    res = cli("import", tmp_path / "binary.keras", "--data", data, "--out", run)
    assert res.exit_code == 0, res.output
    assert "input range: 0-255" in res.output and "two-class output" in res.output
    assert "class order" not in res.output
    if head == "logit":  # the same images with the labels swapped: the model's outputs are in the other order
        arrays = dict(np.load(data))
        swapped = tmp_path / "swapped.npz"
        np.savez(swapped, **{k: (1 - v if k.startswith("y_") else v) for k, v in arrays.items()})
        res = cli("import", tmp_path / "binary.keras", "--data", swapped, "--out", tmp_path / "swapped_run")
        assert res.exit_code == 0, res.output
        said = " ".join(res.output.split())  # warnings wrap to the terminal
        assert "if the model's outputs are in the order 1, 0: was it trained with another class order?" in said
    imported = keras.models.load_model(run / "model.keras")
    assert np.allclose(imported.predict(ds.x_test, verbose=0), np.stack([1 - p1, p1], axis=1), atol=1e-5)
    assert cli("export", run, "--formats", "tflite_int8").exit_code == 0
    entry = json.loads((run / "export" / "manifest.json").read_text())["artifacts"]["tflite_int8"]
    assert entry["parity"]["top1_agreement"] >= 0.95
    if head == "logit":  # QAT's rebuild (the augmentation left out) does not depend on the head: the slow sigmoid
        return           # case runs it (18 s of a tf_keras child; QAT stays in the default suite elsewhere)
    qat = cli("export", run, "--quant", "qat", "--qat-epochs", "1", "--formats", "tflite_int8")
    assert qat.exit_code == 0, qat.output
    entry = json.loads((run / "export" / "manifest.json").read_text())["artifacts"]["tflite_int8"]
    assert entry["quant"] == "qat" and entry["parity"]["top1_agreement"] >= 0.9
    assert entry["details"]["qat"]["float_accuracy"] == pytest.approx(np.mean((p1 > 0.5) == ds.y_test), abs=1e-6)


@pytest.mark.slow  # 20 s: a tf_keras child process writes the SavedModel
def test_a_keras_2_savedmodel_directory_imports(tmp_path):
    """tf.keras' `model.save("dir")` (Keras 2) wrote a SavedModel: a tf_keras child reads it, and the run's model
    gives the same probabilities. One without Keras metadata is a one-line error saying what to do."""
    from edgecnn.data import DataConfig, load_dataset

    ds = load_dataset(DataConfig())
    np.save(tmp_path / "x.npy", ds.x_test[:32])
    make = ("import sys, numpy as np, tf_keras as k\n"
            "k.utils.set_random_seed(0)\n"
            "m = k.Sequential([k.Input((8, 8, 1)), k.layers.Conv2D(8, 3, activation='relu'), k.layers.Flatten(),"
            " k.layers.Dense(10, activation='softmax')])\n"
            "m.save(sys.argv[1] + '/k2_model')\n"
            "np.save(sys.argv[1] + '/y.npy', m.predict(np.load(sys.argv[1] + '/x.npy'), verbose=0))\n")
    p = subprocess.run([sys.executable, "-c", make, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "k2_model" / "keras_metadata.pb").is_file()  # a Keras 2 SavedModel, not a .keras file
    run = tmp_path / "run"
    res = cli("import", tmp_path / "k2_model", "--data", "digits", "--out", run, "--input-range", "0-1")
    assert res.exit_code == 0, res.output
    import keras

    model = keras.models.load_model(run / "model.keras")
    assert np.allclose(model.predict(ds.x_test[:32], verbose=0), np.load(tmp_path / "y.npy"), atol=1e-6)
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "saved_model.pb").write_bytes(b"")
    res = cli("import", tmp_path / "bare", "--data", "digits", "--out", tmp_path / "r2")
    assert res.exit_code == 2 and "a SavedModel without Keras metadata" in res.output
    res = cli("import", tmp_path, "--data", "digits", "--out", tmp_path / "r3")
    assert res.exit_code == 2 and "a directory, not a model" in res.output


def test_an_untrained_model_is_refused_at_export_in_one_line(tmp_path):
    """keras.applications' models with weights=None give logits of about zero, and TFLite's reference kernels
    abort the process on the int8 Softmax that follows (export verifies on them): the export stops with one
    line instead, before any interpreter allocates it. In a child process: a regression would abort pytest."""
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, kernel_initializer="zeros"), keras.layers.Softmax()])
    model.save(tmp_path / "untrained.keras")
    run = tmp_path / "run"
    res = cli("import", tmp_path / "untrained.keras", "--data", "digits", "--out", run)
    assert res.exit_code == 0 and "for all 256 validation images: is it trained" in res.output, res.output
    p = subprocess.run([sys.executable, "-m", "edgecnn", "export", str(run), "--formats", "tflite_int8"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "int8 Softmax input scale" in lines[0] and "is the model trained?" in lines[0], lines


def test_a_mixed_precision_model_is_imported_computing_in_float32(tmp_path):
    """A model trained with Keras' mixed precision (mixed_float16, as on a GPU) computes in float16, which the
    TFLite converter cannot translate ("Could not translate MLIR to FlatBuffer"): import makes the same graph
    compute in float32 with the same (float32) weights, says so, and the model exports."""
    import keras

    from edgecnn.data import DataConfig, load_dataset

    keras.utils.set_random_seed(0)
    ds = load_dataset(DataConfig())
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, activation="relu", dtype="mixed_float16")(inp)
    x = keras.layers.Flatten(dtype="mixed_float16")(x)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax", dtype="float32")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(ds.x_train, ds.y_train, epochs=5, batch_size=32, verbose=0)
    model.save(tmp_path / "mixed.keras")
    keras_acc = float(np.mean(model.predict(ds.x_test, verbose=0).argmax(1) == ds.y_test))
    run = tmp_path / "run"
    res = cli("import", tmp_path / "mixed.keras", "--data", "digits", "--out", run, "--input-range", "0-1")
    assert res.exit_code == 0, res.output
    assert "float32 computation (it computed in mixed_float16)" in " ".join(res.output.split())
    imported = keras.models.load_model(run / "model.keras", compile=False)
    assert {layer.dtype_policy.name for layer in imported.layers} == {"float32"}
    assert json.loads((run / "metrics.json").read_text())["test_accuracy"] == pytest.approx(keras_acc, abs=0.01)
    exp = cli("export", run, "--formats", "tflite_fp32")
    assert exp.exit_code == 0, exp.output
    parity = json.loads((run / "export" / "manifest.json").read_text())["artifacts"]["tflite_fp32"]["parity"]
    assert parity["max_abs_diff"] <= 1e-4


def test_a_layer_without_int8_kernels_exports_with_its_float_ops_said(tmp_path):
    """LayerNormalization has no int8 kernel for its NEG in the TFLite converter, which leaves that op in float
    between DEQUANTIZE and QUANTIZE. Export used to refuse the whole int8 model ("is not fully int8: float ops
    #4 NEG"); it now writes it, names the op and the layer in a warning and the manifest, and the model runs."""
    import keras

    from edgecnn.data import DataConfig, load_dataset

    keras.utils.set_random_seed(0)
    ds = load_dataset(DataConfig())
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same")(inp)
    x = keras.layers.Activation("relu")(keras.layers.LayerNormalization(name="ln")(x))
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x)))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(ds.x_train, ds.y_train, epochs=3, batch_size=32, verbose=0)
    model.save(tmp_path / "ln.keras")
    run = tmp_path / "run"
    assert cli("import", tmp_path / "ln.keras", "--data", "digits", "--out", run, "--input-range", "0-1").exit_code == 0
    exp = cli("export", run, "--formats", "tflite_int8")
    assert exp.exit_code == 0, exp.output
    said = " ".join(exp.output.split())
    assert "model_int8.tflite is not fully int8: 1 op(s) (NEG) of layer(s) ln have no int8 kernel" in said
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    entry = manifest["artifacts"]["tflite_int8"]
    assert [(o["op"], o["layer"]) for o in entry["details"]["float_ops"]] == [("NEG", "ln")]
    assert any("not fully int8" in w for w in manifest["warnings"])
    assert entry["parity"]["top1_agreement"] >= 0.95


def test_precise_bn_settles_a_model_whose_batchnorm_statistics_never_did(tmp_path):
    """BatchNorm at momentum 0.999 (MobileNetV3's and V2's) trained for a few epochs keeps moving statistics near
    their start: Keras' own validation says chance while training accuracy is high, and import warns that the
    model predicts one class. --precise-bn re-measures them on training images in each input range (a
    MobileNetV3Small trained 8 epochs on digits went from 0.10 to 0.96 test accuracy), weights unchanged."""
    import keras

    from edgecnn.data import DataConfig, load_dataset

    keras.utils.set_random_seed(0)
    ds = load_dataset(DataConfig())
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 127.5, -1.0)(inp)  # trained on 0-255 pixels, as keras.applications models are
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.999)(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(ds.x_train * 255.0, ds.y_train, epochs=4, batch_size=32, verbose=0)
    model.save(tmp_path / "bn.keras")
    plain = cli("import", tmp_path / "bn.keras", "--data", "digits", "--out", tmp_path / "plain")
    assert plain.exit_code == 0, plain.output
    plain_acc = json.loads((tmp_path / "plain" / "metrics.json").read_text())["test_accuracy"]
    res = cli("import", tmp_path / "bn.keras", "--data", "digits", "--out", tmp_path / "run", "--precise-bn")
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "input range: 0-255" in said
    assert "BatchNorm statistics re-measured on 1024 training images (2 layers)" in said
    acc = json.loads((tmp_path / "run" / "metrics.json").read_text())["test_accuracy"]
    assert plain_acc < 0.5 and acc > 0.9, (plain_acc, acc)
    inner = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False).get_layer(model.name)
    assert len(inner.trainable_weights) == len(model.trainable_weights) == 8  # kernels, gammas, betas, dense
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(inner.trainable_weights, model.trainable_weights))
    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
                     ).save(tmp_path / "no_bn.keras")
    refused = cli("import", tmp_path / "no_bn.keras", "--data", "digits", "--out", tmp_path / "r2", "--precise-bn")
    assert refused.exit_code == 2 and "no trainable BatchNormalization layer" in refused.output


def test_a_range_measured_on_a_handful_of_images_is_said_not_trusted():
    """An edgecnn model trained on [0, 1], imported with a folder of 11 images: its 2 validation images were
    right in every range, and 0-255's overconfident logits gave the lowest loss, so auto took 0-255 silently."""
    from edgecnn.imported_fit import RANGES, choose_range as _choose_range

    fit = {k: {"matched_accuracy": 1.0, "accuracy": 1.0, "loss": loss} for k, loss in zip(RANGES, (0.46, 0.0, 0.13))}
    right = {k: np.ones(2, bool) for k in RANGES}
    chosen, warnings = _choose_range("auto", fit, 2, right)
    assert chosen == "0-255" and len(warnings) == 1 and "only 2 validation image(s)" in warnings[0]
    assert "pass --input-range" in warnings[0]
    many = {k: np.ones(256, bool) for k in RANGES}
    assert _choose_range("auto", fit, 256, many) == ("0-255", [])  # enough images: the loss decides, as documented
    few = {k: np.arange(20) < (20 if k == "0-255" else 0) for k in RANGES}  # one range right on all 20, the others
    fit["0-1"]["matched_accuracy"] = fit["-1-1"]["matched_accuracy"] = 0.0  # on none: no warning, however few
    assert _choose_range("auto", fit, 20, few) == ("0-255", [])


def test_a_range_a_few_images_ahead_by_chance_does_not_outvote_the_loss():
    """A ReLU model trained on [0, 1] and fed 0-255 classifies about as well (its logits grow 255x): measured on
    an RGB model imported with digits, 0-255 was 2 of 256 validation images ahead (0.961 against 0.953) at 8
    times the loss (1.08 against 0.13), and auto took 0-255. Two images of difference, paired on the same images,
    is chance: the loss decides. A range clearly behind on the same images is not taken for its loss."""
    from edgecnn.imported_fit import RANGES, choose_range as _choose_range

    fit = {"0-1": {"matched_accuracy": 0.953, "accuracy": 0.953, "loss": 0.130},
           "0-255": {"matched_accuracy": 0.961, "accuracy": 0.961, "loss": 1.079},
           "-1-1": {"matched_accuracy": 0.906, "accuracy": 0.906, "loss": 0.283}}
    base = np.arange(256) >= 12  # 244 right
    plus = base.copy()
    plus[[0, 1, 2]] = True
    plus[255] = False  # 246 right: 3 images only it gets right, 1 only 0-1 gets right
    minus = base.copy()
    minus[20:32] = False  # 232 right, 12 images behind 0-255
    right = {"0-1": base, "0-255": plus, "-1-1": minus}
    assert _choose_range("auto", fit, 256, right) == ("0-1", [])
    assert _choose_range("0-255", fit, 256, right)[1]  # asked for, kept, with a warning naming 0-1
    fit["-1-1"]["loss"] = 0.01  # the lowest loss, but 14 images behind the best on the same images
    assert _choose_range("auto", fit, 256, right) == ("0-1", [])


def _bars(n: int, rng) -> tuple:
    """Grey 16x16 uint8 images of a bright bar on noise: class 0 horizontal, class 1 vertical."""
    x = rng.integers(0, 60, (n, 16, 16, 1)).astype(np.uint8)
    y = rng.integers(0, 2, n)
    for i in range(n):
        c, lo, hi = rng.integers(3, 11), rng.integers(1, 4), rng.integers(12, 15)
        if y[i]:
            x[i, lo:hi, c:c + 3] = 230
        else:
            x[i, c:c + 3, lo:hi] = 230
    return x, y


def test_batchnorm_statistics_tell_the_range_where_every_range_is_right(tmp_path):
    """A BatchNorm model trained on [0, 1] that classifies every validation image right in every range: the
    loss alone took 0-255 (its logits 255 times larger, so the lowest loss), as it did for an edgecnn model
    on 96 photos of bars. Its BatchNorm layers remember what their input looked like: fed 0-255, the first
    one sees 65,025 times the variance it was trained with. Auto takes the range they match, and a range asked
    for against them is kept with a warning."""
    import keras

    rng = np.random.default_rng(0)
    (x_train, y_train), (x_test, y_test) = _bars(400, rng), _bars(200, rng)
    np.savez(tmp_path / "bars.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(keras.layers.BatchNormalization()(h)))
    model = keras.Model(inp, keras.layers.Dense(2)(h))  # logits
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train / 255.0, y_train, epochs=30, batch_size=32, verbose=0)
    model.save(tmp_path / "bn.keras")
    res = cli("import", tmp_path / "bn.keras", "--data", tmp_path / "bars.npz", "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    fit = json.loads((tmp_path / "run" / "config.json").read_text())["model"]["input_range_val_fit"]
    assert all(f["accuracy"] == 1.0 for f in fit.values()), fit  # accuracy cannot tell the ranges apart...
    assert fit["0-255"]["loss"] < fit["0-1"]["loss"], fit  # ...and the loss points at the wrong one
    assert fit["0-255"]["batchnorm_mismatch"] > 1000 * fit["0-1"]["batchnorm_mismatch"], fit
    said = " ".join(res.output.split())
    assert "input range: 0-1 (" in said and "BatchNorm statistics match 0-1" in said
    asked = cli("import", tmp_path / "bn.keras", "--data", tmp_path / "bars.npz", "--out", tmp_path / "r2",
                "--input-range", "0-255")
    said = " ".join(asked.output.split())
    assert asked.exit_code == 0 and "BatchNorm layers see statistics unlike" in said and "trained on 0-1" in said


def test_batchnorm_statistics_decide_only_when_settled_and_clear():
    """Moving statistics that never settled (a few epochs at momentum 0.999 leave them near 0 and 1) match no
    range well, and one range barely closer than another is not evidence: the loss decides then, as before. A
    range they match but accuracy clearly rejects is not taken."""
    from edgecnn.imported_fit import RANGES, batchnorm_range, choose_range as _choose_range

    assert batchnorm_range({"0-1": 0.03, "0-255": 2e4, "-1-1": 0.6}) == "0-1"
    assert batchnorm_range({"0-1": 0.69, "0-255": 3e3, "-1-1": 0.17}) is None  # -1-1 only 4x closer than 0-1
    assert batchnorm_range({"0-1": 4.0, "0-255": 9e3, "-1-1": 40.0}) is None  # the closest is far: not settled
    assert batchnorm_range(None) is None and batchnorm_range({}) is None
    right = {k: np.ones(256, bool) for k in RANGES}
    fit = {k: {"matched_accuracy": 1.0, "accuracy": 1.0, "loss": loss, "batchnorm_mismatch": bn}
           for k, loss, bn in zip(RANGES, (0.02, 0.0, 0.001), (0.03, 2e4, 0.6))}
    assert _choose_range("auto", fit, 256, right) == ("0-1", [])
    assert _choose_range("auto", fit, 2, {k: v[:2] for k, v in right.items()}) == ("0-1", [])  # no warning
    fit["0-1"]["batchnorm_mismatch"] = 4.0  # unsettled: the loss decides, as without BatchNorm
    assert _choose_range("auto", fit, 256, right) == ("0-255", [])
    fit["0-1"]["batchnorm_mismatch"] = 0.03
    right["0-1"] = np.arange(256) >= 40  # 40 images behind: accuracy rules it out whatever BatchNorm says
    fit["0-1"]["matched_accuracy"] = fit["0-1"]["accuracy"] = 216 / 256
    assert _choose_range("auto", fit, 256, right) == ("0-255", [])


def test_a_model_stuck_on_one_class_is_said_at_every_stage(tmp_path):
    """A model that predicts one class for every image (untrained, BatchNorm statistics not settled: MobileNetV2
    trained 3 epochs on 256 images did it) agrees 100% with any artifact stuck on the same class, so export and
    bench printed 100% parity and "gates passed" with nothing to qualify it. Each stage says so now: import (on
    validation), the run's report, export, bench (terminal, bench.json, bench.md, report)."""
    import keras

    from edgecnn.contracts.parity import one_class_on_test
    from edgecnn.export import ExportConfig, export

    bias = np.zeros(10, np.float32)
    bias[3] = 4.0  # class 3 wins for every image, with a softmax input range the int8 kernels take
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, kernel_initializer="zeros",
                                                 bias_initializer=keras.initializers.Constant(bias)),
                              keras.layers.Softmax()])
    model.save(tmp_path / "stuck.keras")
    run = tmp_path / "run"
    res = cli("import", tmp_path / "stuck.keras", "--data", "digits", "--out", run, "--input-range", "0-1")
    assert res.exit_code == 0 and "the model predicts 3 for all 256 validation images" in " ".join(
        res.output.split()), res.output
    said = "the model predicts 3 for all 359 test images: is it trained"
    assert one_class_on_test(json.loads((run / "metrics.json").read_text())).startswith(said)
    assert f"warning: {said}" in (run / "report.html").read_text()
    exported = export(run, ExportConfig(formats=("tflite_fp32", "tflite_int8")))
    assert exported.manifest["artifacts"]["tflite_int8"]["parity"]["top1_agreement"] == 1.0
    assert [w for w in exported.warnings if w.startswith(said) and "Agreement with it proves little" in w]
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["warnings"] == exported.warnings  # recorded, and shown above the export table
    page = (run / "report.html").read_text()
    assert page[page.index("<h2>Export</h2>"):page.index("<h2>Bench</h2>")].count(f"warning: {said}") == 1
    bench = cli("bench", run, "--backends", "keras,tflite", "--no-timing", "--min-agreement", "0.99")
    assert bench.exit_code == 0 and "warning: the model predicts 3 for all 359 test images" in " ".join(
        bench.output.split())
    assert bench.output.index("warning: the model predicts 3") < bench.output.index("parity gates passed")
    doc = json.loads((run / "bench" / "bench.json").read_text())
    assert len(doc["warnings"]) == 1 and doc["warnings"][0].startswith(said)
    assert f"- warning: {said}" in (run / "bench" / "bench.md").read_text()
    page = (run / "report.html").read_text()
    assert page[page.index("<h2>Bench</h2>"):].count(f"warning: {said}") == 1
    from edgecnn.testing import assert_parity  # a parity test against it checks nothing: it fails

    with pytest.raises(AssertionError, match="the model predicts 3 for all 359 test images"):
        assert_parity(run, backends=("tflite",))


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
    import keras

    from conftest import make_npz

    path, _ = plain_keras_model
    make_npz(tmp_path / "three.npz", shape=(8, 8))
    res = cli("import", path, "--data", tmp_path / "three.npz", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "3 classes but mine.keras outputs 10" in res.output
    binary = tmp_path / "binary.keras"
    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1)]).save(binary)
    res = cli("import", binary, "--data", tmp_path / "three.npz", "--out", tmp_path / "r3")
    assert res.exit_code == 2 and "one output (a binary classifier) but" in res.output and "has 3 classes" in res.output
    (tmp_path / "bad.keras").write_text("not a model")
    res = cli("import", tmp_path / "bad.keras", "--data", "digits", "--out", tmp_path / "r2")
    assert res.exit_code == 2 and "not a Keras 3 model" in res.output
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(keras.layers.Lambda(lambda t: t / 8.0 - 1.0)(inp))
    keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x)).save(tmp_path / "lambda.keras")
    res = cli("import", tmp_path / "lambda.keras", "--data", "digits", "--out", tmp_path / "r4")
    assert res.exit_code == 2 and "it has a Lambda layer (Python code)" in res.output

    @keras.saving.register_keras_serializable("mine")
    class Halve(keras.layers.Layer):
        def call(self, t):
            return t / 2.0

    inp = keras.Input((8, 8, 1))
    keras.Model(inp, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(Halve()(inp)))).save(
        tmp_path / "custom.keras")
    del keras.saving.get_custom_objects()["mine>Halve"]  # as in a process that never ran the class's code
    res = cli("import", tmp_path / "custom.keras", "--data", "digits", "--out", tmp_path / "r5")
    line = res.output.strip()
    assert res.exit_code == 2 and len(line.splitlines()) == 1, res.output
    assert "a custom class (mine>Halve) that Keras does not know" in line and "built-in layers" in line
