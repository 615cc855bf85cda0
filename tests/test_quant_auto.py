"""`--quant auto` (issue 12): PTQ when it meets the validation targets (nothing changes), otherwise the layers
TF's QuantizationDebugger ranks worst kept in float, never worse than PTQ on validation, the recipe recorded."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner


def cli(*args):
    from edgecnn.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_auto_keeps_plain_ptq_when_it_meets_the_targets(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("export", "bench*"))
    res = cli("export", run, "--formats", "tflite_int8", "--quant", "auto", "--min-agreement", "0.9",
              "--max-acc-drop", "5")
    assert res.exit_code == 0, res.output
    entry = json.loads((run / "export" / "manifest.json").read_text())["artifacts"]["tflite_int8"]
    auto = entry["details"]["auto"]
    assert entry["quant"] == "auto" and auto["chosen"] == "ptq" and auto["kept_float"] == []
    assert len(auto["attempts"]) == 1 and auto["int8_mac_share"] == 1.0  # fully int8, as plain PTQ
    assert "test_flips" not in auto["attempts"][0]  # one attempt: its test figures are the artifact's parity
    from edgecnn.report import write_report

    page = write_report(run).read_text()  # so the recipe's table has no empty test columns
    assert "<h3>--quant auto (tflite_int8)</h3>" in page and "val differ" in page and "test differ" not in page
    assert auto["targets"] == {"min_agreement": 0.9, "max_acc_drop_pts": 5.0, "min_int8_macs": 0.8,
                               "split": "validation"}


def test_auto_searches_when_ptq_misses_and_never_returns_worse(digits_run, tmp_path):
    from edgecnn.device import script_path
    from edgecnn.runtimes.tflite import mac_share

    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("export", "bench*"))
    res = cli("export", run, "--formats", "tflite_int8", "--quant", "auto", "--min-agreement", "1.0",
              "--max-acc-drop", "-5")  # 5 points better than float: no model meets it, the search runs to its end
    assert res.exit_code in (0, 1), res.output  # 1: the same numbers as gates may fail on the test split
    assert "auto (tflite_int8):" in res.output
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    auto = manifest["artifacts"]["tflite_int8"]["details"]["auto"]
    tried = [a for a in auto["attempts"] if "val_agreement" in a]
    assert len(tried) >= 2 and tried[0]["name"] == "ptq" and auto["sensitivity"]
    chosen = next(a for a in tried if a["name"] == auto["chosen"])
    assert chosen["val_agreement"] >= tried[0]["val_agreement"]  # never worse than PTQ on validation
    assert all(a["val_agreement"] == pytest.approx(1 - a["val_flips"] / a["val_images"]) for a in tried)
    assert f"ptq {tried[0]['val_agreement']:.4f} ({tried[0]['val_flips']} of {tried[0]['val_images']} differ)" \
        in " ".join(res.output.split())
    assert all(a["kept_float"] == [] or a["int8_mac_share"] < 1.0 for a in tried)
    assert chosen["int8_mac_share"] >= 0.8  # the floor: more float layers never buy a mostly-float "int8" model
    assert all(a.get("below_int8_floor") for a in tried if a["int8_mac_share"] < 0.8)
    assert sum(1 for a in tried if a.get("below_int8_floor")) <= 1  # the search stops at the first one below
    assert tried[-1]["name"] == "qat" and tried[-1]["int8_mac_share"] == 1.0  # still short: QAT tried last
    floors = auto["rounding_floors"]  # the float model with only its input / weights / both rounded to int8
    assert list(floors) == ["input", "weights", "input_and_weights"]
    assert all(f["images"] == json.loads((run / "config.json").read_text())["dataset"]["val"] for f in floors.values())
    assert all(0.9 <= f["agreement"] <= 1.0 for f in floors.values())
    model = run / "export" / "model_int8.tflite"
    assert mac_share(model)["share"] == chosen["int8_mac_share"]
    # each attempt's test figures, measured after the choice: the chosen one's are the artifact's own parity
    parity = manifest["artifacts"]["tflite_int8"]["parity"]
    assert all(a["test_images"] == parity["n"] for a in tried)
    assert chosen["test_agreement"] == parity["top1_agreement"]
    assert chosen["test_accuracy_drop_pts"] == pytest.approx(parity["accuracy_drop"], abs=1e-6)
    assert f"[test {chosen['test_agreement']:.4f}, {chosen['test_flips']} of {parity['n']}]" \
        in " ".join(res.output.split())
    table = [line for line in res.output.splitlines() if line[:1] in "┏┃┡│└"]
    assert max(map(len, table)) <= 100 and "│ tflite_int8 │" in res.output  # the table fits, names not cut
    from edgecnn.report import write_report

    page = write_report(run).read_text()
    assert "<h3>--quant auto (tflite_int8)</h3>" in page and "test differ" in page
    assert f"<td class=n>{chosen['test_flips']} of {parity['n']}</td>" in page
    # the on-device script runs the mixed model and reproduces the manifest's test figures
    from edgecnn.data import DataConfig, load_dataset

    ds = load_dataset(DataConfig())
    npz = tmp_path / "test.npz"
    np.savez(npz, x=ds.x_test[..., 0] * 16.0, y=ds.y_test)
    p = subprocess.run([sys.executable, str(script_path()), "--model", str(model), "--npz", str(npz), "--json",
                        "--runtime", "auto"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["accuracy"] == manifest["artifacts"]["tflite_int8"]["parity"]["accuracy"]
    if chosen["kept_float"]:  # a target that needs full int8 says the mixed model does not suit it
        bench = cli("bench", run, "--backends", "ethos-u", "--no-timing", "--json")
        rows = json.loads(bench.output)["rows"]
        int8 = [r for r in rows if r["artifact"] == "tflite_int8"]
        assert int8 and "unsuitable: a mixed model" in (int8[0]["note"] or ""), int8


def test_a_mixed_model_is_flagged_on_full_int8_targets():
    from types import SimpleNamespace

    from edgecnn.bench.core import _mixed_note
    from edgecnn.runtimes import RUNTIMES

    mixed = SimpleNamespace(entry=SimpleNamespace(details={"auto": {"kept_float": ["a/b", "c/d"]}}))
    full = SimpleNamespace(entry=SimpleNamespace(details={"auto": {"kept_float": []}}))
    assert "unsuitable: a mixed model (2 layer(s)" in _mixed_note(mixed, RUNTIMES["ethos-u"])
    assert _mixed_note(mixed, RUNTIMES["tflite"]) is None
    assert _mixed_note(full, RUNTIMES["ethos-u"]) is None
    islands = SimpleNamespace(entry=SimpleNamespace(details={"float_ops": [{"index": 3, "op": "NEG", "layer": "ln"}]}))
    assert "unsuitable: 1 op(s) compute in float (NEG" in _mixed_note(islands, RUNTIMES["ethos-u"])
    assert _mixed_note(islands, RUNTIMES["tflite"]) is None


def test_inspect_layers_ranks_every_quantized_layer(digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("export", "bench*"))
    res = cli("inspect", run, "--layers", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    layers = report["layers"]
    assert {"CONV_2D", "FULLY_CONNECTED"} <= {r["op"] for r in layers}
    scores = [r["rmse_over_scale"] for r in layers]
    assert scores == sorted(scores, reverse=True) and all(s >= 0 for s in scores)
    assert sorted(r["position"] for r in layers) == list(range(len(layers)))
    assert {w["layer"] for w in report["weights"]} >= {"conv1", "conv2", "probs"}
    assert (run / "layers.png").is_file() and report["images"] == 128
    floors = report["rounding_floors"]  # before any export: what rounding the input and weights alone costs
    assert list(floors) == ["input", "weights", "input_and_weights"]
    assert all(0.9 <= f["agreement"] <= 1 and f["flips"] == round((1 - f["agreement"]) * f["images"])
               for f in floors.values())
    text = cli("inspect", run, "--layers")
    assert text.exit_code == 0 and "input and weights" in text.output, text.output


def test_the_input_rounding_floor_counts_flips_the_int8_input_alone_causes():
    from edgecnn.export.quant_auto import rounding_floors

    class Step:  # class 1 when the first pixel is above 0.5004: rounding to 1/255 steps moves 0.5002 to 0.502
        def predict(self, x, batch_size=None, verbose=0):
            p = (np.asarray(x)[:, 0] > 0.5004).astype(np.float32)
            return np.stack([1 - p, p], 1)

    x = np.array([[0.5002], [0.9], [0.1], [0.5003]], np.float32)
    ref = Step().predict(x)
    floors = rounding_floors(Step(), x, ref, np.array([0, 1, 0, 0]), (1 / 255, -128, -128, 127))
    assert list(floors) == ["input"]  # no conv/dense weights to round
    assert floors["input"]["flips"] == 2 and floors["input"]["images"] == 4 and floors["input"]["agreement"] == 0.5


def test_the_weight_floor_rounds_as_the_converter_does(tmp_path):
    """The weight-rounding floor's grid is the converter's: a conv/dense model's int8 TFLite weights, dequantized,
    equal `int8_weight_grid` of the Keras kernels; `rounded_weights` rounds nested layers and restores them."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from edgecnn.export.converter import convert_saved_model, keras_saved_model
    from edgecnn.export.quant_auto import int8_weight_grid, rounded_weights, rounding_floors

    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw"),
                              keras.layers.Conv2D(5, 3, name="conv")], name="inner")
    model = keras.Sequential([keras.Input((8, 8, 2)), inner, keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax", name="fc")])
    x = np.random.default_rng(0).random((40, 8, 8, 2), np.float32)
    before = [np.array(w) for w in model.get_weights()]
    with rounded_weights(model) as n:
        assert n == 3  # dw, conv (inside the nested model) and fc
        for w in (inner.get_layer("conv").kernel, model.get_layer("fc").kernel):
            w = np.asarray(w)
            assert max(len(np.unique(w[..., c])) for c in range(w.shape[-1])) <= 255
        rounded = {"dw": np.asarray(inner.get_layer("dw").kernel), "conv": np.asarray(inner.get_layer("conv").kernel),
                   "fc": np.asarray(model.get_layer("fc").kernel)}
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # restored
    assert not np.array_equal(rounded["conv"], np.asarray(inner.get_layer("conv").kernel))

    data = convert_saved_model(keras_saved_model(model, (8, 8, 2), 1, tmp_path / "sm"), int8=True, calib=x, io="int8")
    it = Interpreter(model_content=data)
    it.allocate_tensors()
    tflite = {}
    for op in it._get_ops_details():
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            t = it._get_tensor_details(op["inputs"][1], 0)
            q = t["quantization_parameters"]
            w = it.get_tensor(op["inputs"][1]).astype(np.float64)
            tflite[op["op_name"]] = w * q["scales"].reshape([-1 if i == q["quantized_dimension"] else 1
                                                              for i in range(w.ndim)])
    # TFLite layouts: conv OHWI, depthwise 1HW(I*M), fully connected (out, in); Keras: HWIO, HWIM, (in, out)
    np.testing.assert_allclose(tflite["CONV_2D"], rounded["conv"].transpose(3, 0, 1, 2), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(tflite["DEPTHWISE_CONV_2D"], rounded["dw"].reshape(1, 3, 3, 4), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(tflite["FULLY_CONNECTED"], rounded["fc"].T, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(int8_weight_grid(np.array([[0.5, -1.0], [0.25, 2.0]], np.float32)),
                               [[0.5, -64 * 2.0 / 127], [64 * 0.5 / 127, 2.0]], rtol=1e-6)

    ref = model.predict(x, verbose=0)
    floors = rounding_floors(model, x, ref, ref.argmax(1), (1 / 255, -128, -128, 127))
    assert list(floors) == ["input", "weights", "input_and_weights"]
    assert all(f["images"] == 40 and 0 <= f["agreement"] <= 1 for f in floors.values())
