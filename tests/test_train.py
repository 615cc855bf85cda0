"""Training, resuming, tuning and the train CLI's errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_folder, make_npz
from edgecnn.cli import main
from edgecnn.data import DataConfig
from edgecnn.io import read_json
from edgecnn.train import TrainConfig, train

RUN_FILES = {"model.keras", "config.json", "history.json", "metrics.json", "curves.png", "confusion_matrix.png",
             "classification_report.txt"}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_help_does_not_import_tensorflow():
    code = "import sys; from click.testing import CliRunner; import edgecnn.cli as c; " \
           "r = CliRunner().invoke(c.main, ['--help']); assert 'train' in r.output; " \
           "print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_digits_run_directory(digits_run):
    assert RUN_FILES <= {p.name for p in digits_run.iterdir()}
    metrics = read_json(digits_run / "metrics.json")
    assert metrics["test_accuracy"] > 0.9
    assert set(metrics["per_class"]["7"]) == {"precision", "recall", "f1-score", "support"}
    config = read_json(digits_run / "config.json")
    assert config["model"]["arch"] == "simple_cnn" and config["class_names"][0] == "0"
    assert config["preprocessing"]["pixel_max"] == 16.0
    history = read_json(digits_run / "history.json")
    assert len(history["val_accuracy"]) == len(history["loss"]) >= 2
    assert not (digits_run / "backup").exists()


def test_saved_model_reproduces_recorded_accuracy(digits_run):
    from edgecnn.rundir import open_run

    run = open_run(digits_run)
    ds = run.load_dataset()
    pred = run.load_model().predict(ds.x_test, verbose=0).argmax(1)
    assert np.mean(pred == ds.y_test) == pytest.approx(read_json(digits_run / "metrics.json")["test_accuracy"])


def test_training_that_ends_on_one_class_says_so():
    """A model that predicts one class for the whole test split is chance level, and every parity figure after it
    is empty: the training result warns (the CLI prints it under the summary)."""
    from edgecnn.train import result_warnings

    stuck = {"confusion_matrix": [[0, 2], [0, 3]], "per_class": {"cat": {}, "dog": {}}}
    assert result_warnings(stuck) == ["the model predicts dog for all 5 test images: is it trained (and its "
                                      "BatchNorm moving statistics settled)? Train longer, or check the learning rate "
                                      "and the labels."]
    assert result_warnings({"confusion_matrix": [[2, 0], [1, 2]], "per_class": {"cat": {}, "dog": {}}}) == []
    # a test split of one class, predicted right: nothing to say
    assert result_warnings({"confusion_matrix": [[0, 0], [0, 2]], "per_class": {"cat": {}, "dog": {}}}) == []


def test_class_weights_reach_fit_and_an_imbalanced_miss_is_said():
    """--class-weight balanced: scikit-learn's n / (classes x count) from the training labels, in every form of
    fit's input (arrays, streamed, augmented); without it, an imbalanced split (10x or more) whose rare class the
    model misses gets a warning naming the flag."""
    from edgecnn.data import DataConfig, load_dataset
    from edgecnn.train import TrainConfig, result_warnings
    from edgecnn.train_inputs import AugmentConfig, class_weights, fit_inputs

    assert class_weights([0, 0, 0, 1], 2, "balanced") == pytest.approx({0: 4 / 6, 1: 2.0})
    assert class_weights([0, 0, 2], 3, "balanced") == pytest.approx({0: 0.75, 2: 1.5})  # absent classes: none
    assert class_weights([0, 1], 2, "none") is None
    ds = load_dataset(DataConfig(limit=200))
    expected = class_weights(ds.y_train, ds.num_classes, "balanced")
    for kw in ({"stream": "off"}, {"stream": "on"}, {"stream": "off", "augment": AugmentConfig()}):
        stream = kw.pop("stream")
        assert fit_inputs(ds, 32, 0, stream, class_weight="balanced", **kw)["class_weight"] == expected
        assert "class_weight" not in fit_inputs(ds, 32, 0, stream, **kw)
    with pytest.raises(Exception, match="--class-weight"):
        TrainConfig(class_weight="inverse")
    report = {"other": {"recall": 1.0, "support": 536}, "eight": {"recall": 0.125, "support": 64}}
    metrics = {"confusion_matrix": [[536, 0], [56, 8]], "per_class": report}
    y = np.array([0] * 870 + [1] * 8)
    said = result_warnings(metrics, y)
    assert said[0].startswith("accuracy 0.9067 on 600 test images is no better than always answering")
    assert said[1] == ("the training split is imbalanced (other 870 images, eight 8: 109x) and the model finds 12% "
                       "of the test split's eight: --class-weight balanced weighs rare classes up")
    assert len(result_warnings(metrics, y, "balanced")) == 1  # already weighted: the chance warning alone
    assert len(result_warnings(metrics, np.array([0] * 72 + [1] * 8))) == 1  # 9x is not imbalanced here


def test_balanced_accuracy_and_the_objective_of_a_balanced_search():
    """The balanced accuracy metric is scikit-learn's balanced_accuracy_score over batches (the mean recall over
    the classes seen); a search with balanced class weights maximises it (plain accuracy ranks "always the common
    class" first), others validation accuracy."""
    from edgecnn.models.metrics import balanced_accuracy_metric
    from edgecnn.tune import TuneConfig

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 5, 200)  # class 4: predicted, never true: counts nowhere
    metric = balanced_accuracy_metric(5)
    for part in np.array_split(np.arange(200), 7):
        metric.update_state(y[part], np.eye(5, dtype=np.float32)[p[part]])
    recalls = [np.mean(p[y == c] == c) for c in range(4)]  # balanced_accuracy_score's, without its warning
    assert float(metric.result()) == pytest.approx(np.mean(recalls), abs=1e-6)
    metric.reset_state()
    metric.update_state(np.array([0, 0, 0, 1]), np.eye(5, dtype=np.float32)[[0, 0, 0, 0]])
    assert float(metric.result()) == pytest.approx(0.5)  # accuracy 0.75
    assert TuneConfig().objective == "val_accuracy"
    assert TuneConfig(train=TrainConfig(class_weight="balanced")).objective == "val_balanced_accuracy"
    assert TuneConfig(objective="val_balanced_accuracy").objective == "val_balanced_accuracy"
    with pytest.raises(Exception, match="unknown objective 'val_f1'"):
        TuneConfig(objective="val_f1")


def test_a_balanced_search_ranks_trials_by_balanced_accuracy(tmp_path):
    """`tune --class-weight balanced`: every epoch logs val_balanced_accuracy, the trials are ranked by it (table,
    trials.json, report), the retrained run's figure is its model's mean recall on the validation split, and the
    saved model loads without edgecnn's metric class."""
    from sklearn.metrics import balanced_accuracy_score

    from edgecnn.rundir import open_run

    out = tmp_path / "t"
    r = invoke("tune", "--out", out, "--limit", 300, "--max-trials", 1, "--trial-epochs", 1, "--epochs", 1,
               "--class-weight", "balanced", "-v")
    assert r.exit_code == 0, r.output
    assert "trial 1/1: val_balanced_accuracy" in r.output and "val_balanced_accuracy" in r.output.split("trials (")[1]
    doc = read_json(out / "trials.json")
    assert doc["objective"] == "val_balanced_accuracy"
    assert doc["trials"][0]["score"] == doc["trials"][0]["val_balanced_accuracy"]
    assert "<th>val_balanced_accuracy</th>" in (out / "report.html").read_text()
    import keras

    history = read_json(out / "history.json")
    ds = open_run(out).load_dataset()
    model = keras.models.load_model(out / "model.keras")
    pred = ds.val.predict_with(model).argmax(1)
    assert history["val_balanced_accuracy"][-1] == pytest.approx(balanced_accuracy_score(ds.y_val, pred), abs=1e-6)


def test_same_seed_same_metrics(tmp_path):
    cfg = dict(data=DataConfig(limit=300), epochs=2, seed=3)
    a = train(TrainConfig(out=str(tmp_path / "a"), **cfg))
    b = train(TrainConfig(out=str(tmp_path / "b"), **cfg))
    assert a.metrics["test_loss"] == b.metrics["test_loss"]
    assert a.history["val_loss"] == b.history["val_loss"]


def test_resume_after_interruption(tmp_path):
    import keras

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    out = tmp_path / "r"
    cfg = TrainConfig(out=str(out), data=DataConfig(limit=300), epochs=4, patience=10)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, extra_callbacks=[Interrupt()])
    assert (out / "backup").exists() and not (out / "model.keras").exists()
    r = invoke("train", "--out", out)  # without --resume a non-empty folder is refused
    assert r.exit_code == 2 and "--resume" in r.output
    result = train(TrainConfig(out=str(out), resume=True))  # everything else comes from config.json
    assert result.history["epoch"] == [0, 1, 2, 3]
    assert (out / "model.keras").exists() and not (out / "backup").exists()


def test_cli_trains_npz_and_image_folder(tmp_path):
    npz = make_npz(tmp_path / "d.npz", n_train=90)
    r = invoke("train", "--data", npz, "--out", tmp_path / "n", "--epochs", 3, "--param", "filters=8")
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output
    assert RUN_FILES <= {p.name for p in (tmp_path / "n").iterdir()}
    assert read_json(tmp_path / "n" / "config.json")["model"]["params"] == {"filters": 8}
    folder = make_folder(tmp_path / "imgs", per_class=15)
    r = invoke("train", "--data", folder, "--out", tmp_path / "f", "--epochs", 2, "--arch", "resnet8",
               "--image-size", 16, 16, "--augment")
    assert r.exit_code == 0, r.output
    config = read_json(tmp_path / "f" / "config.json")
    assert config["class_names"] == ["cat", "dog"] and config["preprocessing"]["image_size"] == [16, 16]
    assert config["train"]["augment"]["flip"] is False


def test_tune_two_trials_then_retrain_and_resume(tmp_path):
    out = tmp_path / "t"
    args = ["tune", "--out", out, "--limit", 300, "--max-trials", 2, "--trial-epochs", 1, "--epochs", 2]
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    best = read_json(out / "best_hyperparameters.json")
    assert len(best["trials"]) == 2 and set(best["best"]) >= {"filters", "optimizer", "learning_rate"}
    config = read_json(out / "config.json")
    if read_json(out / "trials.json")["retrained"] == "defaults":  # the defaults beat both trials: they are retrained
        assert config["model"]["params"] == {} and "retrained: the architecture's defaults" in r.output
    else:
        assert {k: config["model"]["params"][k] for k in best["best"]} == best["best"]
    assert (out / "model.keras").exists()
    # the search state lives in the run directory: resuming a finished search runs no new trial; --json stays
    # JSON (KerasTuner's "Reloading Tuner from ..." went to stdout)
    r = invoke(*args, "--resume", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["used_defaults"] in (True, False)
    assert read_json(out / "best_hyperparameters.json")["trials"] == best["trials"]


def _bad_npz(tmp_path, **change):
    path = make_npz(tmp_path / "b.npz")
    z = dict(np.load(path))
    z.update(change)
    np.savez(path, **z)
    return path


@pytest.mark.parametrize("case", ["dataset", "arch", "path", "empty_folder", "empty_class", "npz_keys", "labels",
                                  "class_names", "nan", "too_small", "too_few", "param", "not_empty"])
def test_bad_input_is_one_line(tmp_path, case):
    out = tmp_path / "out"
    args = {
        "dataset": ["--data", "imagenet"],
        "arch": ["--arch", "alexnet"],
        "path": ["--data", tmp_path / "nothing" / "x.npz"],
        "npz_keys": ["--data", make_npz(tmp_path / "k.npz", x_val=np.zeros((2, 10, 10)))],
        "labels": ["--data", None],
        "class_names": ["--data", None],
        "nan": ["--data", None],
        "too_small": ["--arch", "convnet"],
        "too_few": ["--data", None],
        "param": ["--param", "filterz=3"],
        "not_empty": [],
    }.get(case, ["--data", tmp_path / "imgs"])
    if case == "empty_folder":
        (tmp_path / "imgs").mkdir()
    elif case == "empty_class":
        make_folder(tmp_path / "imgs", per_class=3)
        (tmp_path / "imgs" / "zzz").mkdir()
    elif case == "npz_keys":  # x_val without y_val is ignored; remove a required key instead
        z = dict(np.load(args[1]))
        del z["x_test"]
        np.savez(args[1], **z)
    elif case == "labels":
        args[1] = _bad_npz(tmp_path, y_test=np.full(20, 9))
    elif case == "class_names":
        args[1] = _bad_npz(tmp_path, class_names=np.array(["only", "two"]))
    elif case == "nan":
        x = np.load(make_npz(tmp_path / "n.npz"))["x_train"].astype(np.float32)
        x[3, 3, 3] = np.nan
        args[1] = _bad_npz(tmp_path, x_train=x)
    elif case == "too_few":
        args[1] = _bad_npz(tmp_path, x_test=np.zeros((0, 10, 10), np.uint8), y_test=np.zeros(0, np.int64),
                           x_train=np.zeros((2, 10, 10), np.uint8), y_train=np.array([0, 1]))
    elif case == "not_empty":
        out.mkdir()
        (out / "keep.txt").write_text("x")
    r = invoke("train", "--out", out, "--epochs", 1, *args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    if case != "not_empty":
        assert not (out / "model.keras").exists()


def test_resume_after_a_hard_kill_trains_the_lost_epochs_again(tmp_path, monkeypatch):
    """A kill gives no chance to flush: the run resumes from its last periodic backup and the log rows written
    after it are dropped, so each epoch appears once."""
    import keras

    import edgecnn.train as train_module
    from edgecnn import checkpoint

    made = []
    real = train_module.make_checkpoint
    monkeypatch.setattr(train_module, "make_checkpoint", lambda *a, **k: made.append(real(*a, **k)) or made[-1])

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                made[0].flush()  # a periodic backup
            if epoch == 2:
                made[0].flush = lambda: None  # killed: nothing more reaches the disk
                raise SystemExit("killed")

    out = tmp_path / "k"
    cfg = TrainConfig(out=str(out), data=DataConfig(limit=300), epochs=5, patience=10, backup_every_s=3600)
    with pytest.raises(SystemExit):
        train(cfg, extra_callbacks=[Kill()])
    assert checkpoint.epochs_done(out) == 1 and (out / checkpoint.BEST).exists()
    assert checkpoint.read_log(out / "history.csv")["epoch"] == [0, 1, 2]
    result = train(TrainConfig(out=str(out), resume=True))
    assert result.history["epoch"] == [0, 1, 2, 3, 4]
    assert not (out / "backup").exists() and not (out / checkpoint.BEST).exists()


@pytest.mark.slow  # 15 s: a child process with two logical CPU devices
def test_mirrored_strategy_trains_on_two_logical_cpu_devices(tmp_path):
    """--strategy mirrored splits each batch across the devices (issue 14): two logical CPUs stand in for two GPUs."""
    import subprocess
    import sys

    code = ("import sys, tensorflow as tf\n"
            "cpu = tf.config.list_physical_devices('CPU')[0]\n"
            "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
            "from edgecnn.train import TrainConfig, train\n"
            "r = train(TrainConfig(out=sys.argv[1], epochs=2, strategy='mirrored'))\n"
            "print(r.replicas, r.metrics['test_accuracy'])\n")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    replicas, acc = p.stdout.split()[-2:]
    assert replicas == "2" and float(acc) > 0.5
    from edgecnn.io import read_json

    assert read_json(tmp_path / "run" / "config.json")["train"]["strategy"] == "mirrored"


def test_progress_one_line_per_epoch_and_json_summary(tmp_path):
    """Progress (issue 11): one line per epoch with loss, accuracy, validation figures and ETA, on a terminal or
    with -v; none in a pipe without -v; --json prints the summary as JSON."""
    import re

    from click.testing import CliRunner

    from edgecnn.cli import main

    res = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "a"), "--epochs", "2", "--limit", "300", "-v"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2 and re.match(r"epoch 1/2  loss [\d.]+  accuracy [\d.]+  val_loss [\d.]+  val_accuracy "
                                        r"[\d.]+  [\d.]+ s  ETA <= \d+ s", lines[0]), lines
    quiet = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "b"), "--epochs", "2", "--limit", "300"])
    assert quiet.exit_code == 0 and "epoch 1/2" not in quiet.output  # not a terminal, no -v
    js = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "c"), "--epochs", "2", "--limit", "300", "--json"])
    doc = json.loads(js.output)
    assert doc["epochs"] == 2 and 0 <= doc["test_accuracy"] <= 1 and doc["arch"] == "simple_cnn"


def test_a_moved_run_and_its_moved_data_bench_with_data_newpath(tmp_path, monkeypatch):
    """Run directories that work from anywhere (issue 11): trained from a relative --data, the run benches from
    another folder; after moving run and data, `--data NEWPATH` finds it, and a wrong dataset is one line."""
    import shutil

    from click.testing import CliRunner

    from conftest import make_npz
    from edgecnn.cli import main

    (tmp_path / "proj" / "data").mkdir(parents=True)
    make_npz(tmp_path / "proj" / "data" / "d.npz")
    make_npz(tmp_path / "other.npz", n_train=80)  # same classes and shape, other images
    monkeypatch.chdir(tmp_path / "proj")
    run = CliRunner().invoke(main, ["train", "--out", "runs/r", "--data", "data/d.npz", "--epochs", "2"])
    assert run.exit_code == 0, run.output
    assert CliRunner().invoke(main, ["export", "runs/r", "--formats", "tflite_int8"]).exit_code == 0
    monkeypatch.chdir(tmp_path)  # another folder: the recorded path is absolute
    bench = ["bench", "proj/runs/r", "--backends", "tflite", "--no-timing", "--no-plots"]
    assert CliRunner().invoke(main, bench).exit_code == 0
    shutil.move(tmp_path / "proj", tmp_path / "moved")  # run and data move together
    bench[1] = "moved/runs/r"
    lost = CliRunner().invoke(main, bench)
    assert lost.exit_code == 2 and "no such file" in lost.output
    found = CliRunner().invoke(main, [*bench, "--data", "moved/data/d.npz"])
    assert found.exit_code == 0, found.output
    wrong = CliRunner().invoke(main, [*bench, "--data", "other.npz"])
    assert wrong.exit_code == 2 and "not the data of" in wrong.output and len(wrong.output.strip().splitlines()) == 1
    again = CliRunner().invoke(main, ["export", "moved/runs/r", "--formats", "tflite_int8", "--data",
                                      "moved/data/d.npz"])
    assert again.exit_code == 0, again.output


@pytest.mark.slow  # 25 s; the trials table, seconds and workers are in the default suite's test_tune_workers
def test_tune_reports_trials_table_times_and_the_defaults(tmp_path):
    """After tuning (issue 11): one line per trial on a terminal or with -v, a table of trials, RUN/trials.json with
    each trial's hyperparameters, objective and seconds, and the defaults' objective for comparison."""
    out = tmp_path / "t"
    r = invoke("tune", "--out", out, "--limit", 300, "--max-trials", 2, "--trial-epochs", 1, "--epochs", 1, "-v")
    assert r.exit_code == 0, r.output
    assert r.output.count("trial ") >= 2 and "trial 1/2: val_accuracy" in r.output
    assert "defaults" in r.output and "val_accuracy" in r.output
    doc = read_json(out / "trials.json")
    assert len(doc["trials"]) == 2 and all(t["seconds"] > 0 and "params" in t for t in doc["trials"])
    assert 0 <= doc["defaults_score"] <= 1 and isinstance(doc["search_beat_defaults"], bool)
    if not doc["search_beat_defaults"]:
        assert "nothing better than the defaults" in r.output


@pytest.mark.slow  # 20 s: training and QAT in its child process
def test_a_custom_architecture_from_python_trains_exports_and_quantizes(tmp_path, monkeypatch):
    """--arch package.module:function (issue 11): the built-in builder signature, recorded in config.json, rebuilt
    in tf_keras by QAT's child process."""
    (tmp_path / "mycnn.py").write_text(
        "def build(km, input_shape, num_classes, *, width=8, **_):\n"
        "    L = km.layers\n"
        "    inputs = L.Input(shape=tuple(input_shape), name='image')\n"
        "    x = L.Conv2D(int(width), 3, activation='relu', name='conv')(inputs)\n"
        "    x = L.Flatten(name='flatten')(x)\n"
        "    outputs = L.Dense(num_classes, activation='softmax', name='probs')(x)\n"
        "    return km.Model(inputs, outputs, name='mycnn')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    r = invoke("train", "--out", tmp_path / "run", "--arch", "mycnn:build", "--param", "width=12", "--epochs", "3")
    assert r.exit_code == 0, r.output
    config = read_json(tmp_path / "run" / "config.json")
    assert config["model"]["arch"] == "mycnn:build" and config["model"]["params"] == {"width": 12}
    r = invoke("export", tmp_path / "run", "--formats", "tflite_int8", "--quant", "qat", "--qat-epochs", "1")
    assert r.exit_code == 0, r.output
    manifest = read_json(tmp_path / "run" / "export" / "manifest.json")
    assert manifest["artifacts"]["tflite_int8"]["quant"] == "qat"
    missing = invoke("train", "--out", tmp_path / "r2", "--arch", "nosuchmodule:build")
    assert missing.exit_code == 2 and "cannot import build from nosuchmodule" in missing.output


def test_macro_f1_leaves_out_classes_with_no_test_image_and_never_predicted():
    """A 40-class folder with 1 to 8 images a class left 18 classes out of a 30-image test split; counted as F1 0,
    they halved macro F1 (0.24 against 0.44). A class predicted but not in the test split still counts (0)."""
    from types import SimpleNamespace

    from edgecnn.train import evaluate

    probs = np.eye(4, dtype=np.float32)[[0, 0, 1, 0]] * 0.9 + 0.025
    ds = SimpleNamespace(test=SimpleNamespace(predict_with=lambda model: probs), y_test=np.array([0, 0, 1, 1]),
                         num_classes=4, class_names=["a", "b", "c", "d"])
    m = evaluate(None, ds)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2) and m["macro_f1_classes"] == 2
    assert set(m["per_class"]) == {"a", "b", "c", "d"}  # every class keeps its row
    assert "2 class(es) with no test image and never predicted, left out of the averages: c, d" in m["report_text"]
    ds.test = SimpleNamespace(predict_with=lambda model: np.eye(4, dtype=np.float32)[[0, 0, 1, 3]])
    m = evaluate(None, ds)  # d predicted once, never true: F1 0, averaged over a, b, d
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3) and m["macro_f1_classes"] == 3


def test_a_run_refuses_a_split_that_holds_other_images(digits_run, tmp_path):
    """The same data split another way has the same counts; the run's split fingerprint tells them apart, so a
    later stage never measures the test split on images the model trained on."""
    import shutil

    from edgecnn.errors import ConfigError
    from edgecnn.rundir import open_run

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "model.keras"):
        shutil.copy(digits_run / name, run / name)
    config = json.loads((run / "config.json").read_text())
    assert open_run(run).load_dataset().split_fingerprint() == config["dataset"]["split_sha256"]
    config["dataset"]["split_sha256"] = "0" * 16  # as if trained on another split of the same images
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="the splits hold other images than the run's"):
        open_run(run).load_dataset()
    del config["dataset"]["split_sha256"]  # a run from before the fingerprint: counts only, as then
    (run / "config.json").write_text(json.dumps(config))
    assert len(open_run(run).load_dataset().y_test) == config["dataset"]["test"]


@pytest.mark.slow
def test_balanced_class_weights_find_a_rare_class(tmp_path):
    """Digits as "eight" against the rest, 10 eights among 1,097 training images (109x): unweighted, the model
    finds 12-30% of the 64 test eights (seeds 0-2), balanced 67-72%, precision 1.0 both."""
    from sklearn.datasets import load_digits

    from edgecnn.data import DataConfig
    from edgecnn.train import TrainConfig, train

    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    x, y = d.images[order], (d.target[order] == 8).astype(np.int64)
    test = np.arange(len(y)) < 600
    keep = ~test & ((y == 0) | (np.cumsum(y * ~test) <= 10))
    np.savez(tmp_path / "eights.npz", x_train=x[keep], y_train=y[keep], x_test=x[test], y_test=y[test],
             class_names=np.array(["other", "eight"]))
    recall = {}
    for mode in ("none", "balanced"):
        res = train(TrainConfig(out=str(tmp_path / mode), data=DataConfig(source=str(tmp_path / "eights.npz")),
                                class_weight=mode))
        recall[mode] = res.metrics["per_class"]["eight"]["recall"]
        assert any("--class-weight balanced" in w for w in res.warnings) == (mode == "none")
    assert recall["balanced"] >= recall["none"] + 0.25, recall
