"""Export stage: every format round-trips through its runtime, the manifest is right, int8 is fully int8,
writes are atomic, QAT works and stays out of the Keras 3 process, bad input is one line and exit 2."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecnn.cli import main


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("export"))
    return dst


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    """One default export (all formats, PTQ, int8 I/O) of a copy of the session's digits run."""
    from edgecnn.export import ExportConfig, export

    run = copy_run(digits_run, tmp_path_factory.mktemp("export") / "run")
    return run, export(run, ExportConfig())


@pytest.fixture(scope="module")
def dataset(digits_run):
    from edgecnn.rundir import open_run

    return open_run(digits_run).load_dataset()


def test_each_format_round_trips(exported, dataset):
    from edgecnn.export import FORMATS
    from edgecnn.export.verify import open_runner

    run, result = exported
    assert [a["name"] for a in result.artifacts] == list(FORMATS)
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    for name, entry in manifest["artifacts"].items():
        runner = open_runner(run / "export" / entry["file"])
        probs = runner.predict(dataset.x_test)
        assert probs.shape == (len(dataset.y_test), 10)
        acc = float(np.mean(probs.argmax(1) == dataset.y_test))
        assert acc == pytest.approx(entry["parity"]["accuracy"], abs=1e-12), name
        assert [i["name"] for i in runner.inputs] == ["image"] and [o["name"] for o in runner.outputs] == ["probs"]


def test_targets_on_default_digits(exported):
    _, result = exported
    a = {x["name"]: x for x in result.artifacts}
    assert a["tflite_fp32"]["parity"]["max_abs_diff"] <= 1e-4
    assert a["onnx_fp32"]["parity"]["top1_agreement"] == 1.0
    assert a["onnx_fp32"]["parity"]["max_abs_diff"] <= 1e-5
    assert a["tflite_int8"]["details"]["size_ratio_to_fp32"] <= 0.40
    assert a["tflite_int8"]["parity"]["accuracy_drop"] <= 0.5
    assert a["onnx_int8"]["parity"]["accuracy_drop"] <= 0.5
    assert not result.failures


def test_manifest_fields_and_hashes(exported):
    from edgecnn.export.manifest import SCHEMA, read_manifest
    from edgecnn.io import sha256
    from edgecnn.rundir import open_run

    run, _ = exported
    m = read_manifest(run / "export").to_dict()
    r = open_run(run)
    assert m["schema"] == SCHEMA
    assert m["class_names"] == [str(c) for c in r.class_names]
    assert m["preprocessing"] == r.preprocessing
    assert m["source_run"]["model_sha256"] == sha256(run / "model.keras")
    assert m["source_run"]["arch"] == "simple_cnn"
    assert m["reference"]["n"] == 359 and 0.9 < m["reference"]["accuracy"] <= 1.0
    for key in ("edgecnn", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai_edge_litert"):
        assert m["versions"][key], key
    for name, e in m["artifacts"].items():
        f = run / "export" / e["file"]
        assert e["sha256"] == sha256(f) and e["size_bytes"] == f.stat().st_size, name
        assert set(e["parity"]) == {"accuracy", "reference_accuracy", "accuracy_drop", "top1_agreement",
                                    "max_abs_diff", "n", "predictions_sha256", "class_drop", "worst_class",
                                    "class_lost", "class_support"}
        assert e["format"] in ("tflite", "onnx") and e["precision"] in ("fp32", "int8")
        assert e["quant"] == ("ptq" if e["precision"] == "int8" else None)
        for t in e["inputs"] + e["outputs"]:
            assert set(t) >= {"name", "shape", "dtype", "quantization"}
    tin, tout = m["artifacts"]["tflite_int8"]["inputs"][0], m["artifacts"]["tflite_int8"]["outputs"][0]
    assert tin["dtype"] == "int8" and tin["shape"] == [1, 8, 8, 1]
    assert tin["quantization"]["scale"] > 0 and -128 <= tin["quantization"]["zero_point"] <= 127
    assert tout["dtype"] == "int8" and tout["quantization"]["scale"] > 0
    assert m["artifacts"]["onnx_fp32"]["inputs"][0]["shape"] == [None, 8, 8, 1]  # dynamic batch
    assert m["artifacts"]["onnx_int8"]["details"]["method"] in ("quantize_static", "from_tflite")
    assert set(m["artifacts"]["onnx_int8"]["details"]["candidates"]) == {"quantize_static", "from_tflite"}
    # the device script travels with the artifacts, byte for byte
    from edgecnn.device import script_path

    script = script_path()
    assert (run / "export" / "edgecnn_infer.py").read_bytes() == script.read_bytes()
    assert not [p for p in (run / "export").iterdir() if p.name.startswith(".")]  # no staging left


def test_int8_tflite_is_fully_int8_and_fp32_is_not(exported):
    from edgecnn.errors import ExportError
    from edgecnn.export.tflite import check_fully_int8
    from edgecnn.inspect import tflite_float_ops

    run, _ = exported
    assert tflite_float_ops(run / "export" / "model_int8.tflite") == []
    check_fully_int8(run / "export" / "model_int8.tflite")
    with pytest.raises(ExportError, match="not fully int8"):
        check_fully_int8(run / "export" / "model_fp32.tflite")


def test_independent_litert_client_reproduces_manifest_accuracy(exported, dataset):
    """A device-style client: manifest.json + model_int8.tflite, numpy and LiteRT, nothing from edgecnn."""
    from ai_edge_litert.interpreter import Interpreter

    run, _ = exported
    export_dir = run / "export"
    raw = np.rint(dataset.x_test * 16.0)  # the digits' raw pixels (0..16), as a device would receive them
    labels = dataset.y_test

    manifest = json.loads((export_dir / "manifest.json").read_text())
    entry = manifest["artifacts"]["tflite_int8"]
    prep = manifest["preprocessing"]
    x = raw.astype(np.float32) / np.float32(prep["pixel_max"])
    assert list(x.shape[1:3]) == prep["image_size"]
    it = Interpreter(model_path=str(export_dir / entry["file"]))
    it.allocate_tensors()
    din, dout = it.get_input_details()[0], it.get_output_details()[0]
    qi, qo = entry["inputs"][0]["quantization"], entry["outputs"][0]["quantization"]
    preds = []
    for img in x:
        q = np.clip(np.round(img / qi["scale"] + qi["zero_point"]), -128, 127).astype(np.int8)
        it.set_tensor(din["index"], q[None])
        it.invoke()
        probs = (it.get_tensor(dout["index"])[0].astype(np.float32) - qo["zero_point"]) * qo["scale"]
        preds.append(int(np.argmax(probs)))
    acc = float(np.mean(np.array(preds) == labels))
    assert acc == pytest.approx(entry["parity"]["accuracy"], abs=1e-12)


def test_manifest_records_the_int8_figures_of_each_cpu_kernel_set(exported, dataset):
    """XNNPACK (verify's), builtin and reference kernels round int8 differently; the manifest holds each one's
    figures on the test split, and the reference kernels called directly reproduce theirs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    run, result = exported
    m = json.loads((run / "export" / "manifest.json").read_text())
    entry = m["artifacts"]["tflite_int8"]
    assert entry["runtime"].endswith("(xnnpack)")
    kernels = entry["parity_kernels"]
    assert set(kernels) == {"builtin", "reference", "tflm"}
    assert kernels["builtin"]["runtime"].endswith("(builtin)") and kernels["tflm"]["runtime"].startswith("tflite-micro")
    assert kernels["reference"]["runtime"].endswith("(reference)")
    assert all(k["n"] == len(dataset.y_test) for k in kernels.values())
    assert all(not m["artifacts"][a].get("parity_kernels") for a in ("tflite_fp32", "onnx_fp32"))

    it = Interpreter(model_path=str(run / "export" / entry["file"]),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    din, dout = it.get_input_details()[0], it.get_output_details()[0]
    qi, qo = entry["inputs"][0]["quantization"], entry["outputs"][0]["quantization"]
    probs = []
    for img in dataset.x_test:
        it.set_tensor(din["index"], np.clip(np.round(img / qi["scale"] + qi["zero_point"]), -128, 127)
                      .astype(np.int8)[None])
        it.invoke()
        probs.append((it.get_tensor(dout["index"])[0].astype(np.float32) - qo["zero_point"]) * qo["scale"])
    pred = np.argmax(probs, axis=1)
    keras_pred = np.argmax(dataset.test.predict_with(open_keras(run)), axis=1)
    assert float(np.mean(pred == dataset.y_test)) == pytest.approx(kernels["reference"]["accuracy"], abs=1e-12)
    assert float(np.mean(pred == keras_pred)) == pytest.approx(kernels["reference"]["top1_agreement"], abs=1e-12)
    from edgecnn.script.edgecnn_infer import predictions_digest

    assert kernels["reference"]["predictions_sha256"] == predictions_digest(pred)


def test_the_summary_says_once_what_several_kernel_sets_share():
    from edgecnn.cli.export import kernel_lines

    fig = {"accuracy": 0.9889, "accuracy_drop": -0.28, "top1_agreement": 0.9972}
    a = {"name": "tflite_int8", "parity": {"accuracy": 0.9861, "top1_agreement": 1.0},
         "parity_kernels": {"builtin": dict(fig), "reference": dict(fig), "tflm": dict(fig),
                            "qdq": {"accuracy": 0.9861, "accuracy_drop": 0.0, "top1_agreement": 1.0},  # as verified
                            "other": {"accuracy": 0.98, "accuracy_drop": 0.56, "top1_agreement": 0.99}}}
    lines = kernel_lines(a)
    assert len(lines) == 2 and lines[0].startswith("tflite_int8 on the builtin kernels (XNNPACK off), on the "
                                                   "reference kernels (TFLite Micro's arithmetic) and on TFLite Micro")
    assert "accuracy 0.9889, drop -0.28 pts, agreement 99.72%" in lines[0]
    assert lines[1].startswith("tflite_int8 on the other kernels: accuracy 0.9800, drop +0.56 pts, agreement 99.00%")


def test_too_few_images_to_calibrate_says_what_still_exports():
    """Int8 needs calibration images; a folder of 11 photos leaves 7 to train on. The error says how to get the
    float models anyway."""
    from edgecnn.errors import ExportError
    from edgecnn.export.calibration import calibration_images

    with pytest.raises(ExportError, match=r"only 7 training images .* export the float models alone: --formats fp32"):
        calibration_images(np.zeros((7, 8, 8, 1), np.float32), 300)
    images, warnings = calibration_images(np.zeros((12, 8, 8, 1), np.float32), 300)
    assert len(images) == 12 and warnings


def test_calibration_holds_every_class():
    """A rare class the seeded draw misses gets images added (the next of that class in the same order, up to
    PER_CLASS); a draw that holds every class is the plain draw; an array without labels too."""
    from edgecnn.export.calibration import PER_CLASS, calibration_images

    x = np.arange(1000, dtype=np.float32).reshape(1000, 1, 1, 1)  # each image's value is its index
    labels = np.zeros(1000, np.int64)
    labels[[3, 500, 999]] = 1  # 3 of 1,000: a draw of 30 misses them for seed 0
    order = np.random.default_rng(0).permutation(1000)
    assert not (labels[order[:30]] == 1).any()
    images, _ = calibration_images(x, 30, 0, labels=labels)
    drawn = images.reshape(-1).astype(int)
    assert len(drawn) == 30 + PER_CLASS and list(drawn[:30]) == list(order[:30])
    assert list(drawn[30:]) == [i for i in order if labels[i] == 1][:PER_CLASS]  # in the draw's order
    one = labels.copy()
    one[[500, 999]] = 0  # a class of one image: that one
    assert calibration_images(x, 30, 0, labels=one)[0].reshape(-1)[30:].astype(int).tolist() == [3]
    balanced = np.arange(1000) % 10
    assert np.array_equal(calibration_images(x, 300, 0, labels=balanced)[0].reshape(-1), order[:300])
    assert np.array_equal(calibration_images(x, 30, 0)[0].reshape(-1), order[:30])


def test_a_model_tflite_micro_cannot_load_skips_its_record_and_keeps_the_others(exported, dataset, monkeypatch):
    """TFLite Micro lacking an op (or taking batch 1 only) is a skipped tflm record, not a failed export; an error on
    LiteRT's own kernels still fails it."""
    from edgecnn.errors import ModelError
    from edgecnn.export import verify

    run, _ = exported
    entry = json.loads((run / "export" / "manifest.json").read_text())["artifacts"]["tflite_int8"]
    real = verify.open_session

    def no_micro(runtime, path, *a, **k):
        if runtime == "tflm":
            raise ModelError(f"{path.name}: TFLite Micro has no kernel for MADE_UP_OP")
        return real(runtime, path, *a, **k)

    monkeypatch.setattr(verify, "open_session", no_micro)
    x, y = dataset.x_test[:16], dataset.y_test[:16]
    records = verify.kernel_parity(run / "export" / entry["file"], x, y, np.eye(10, dtype=np.float32)[y])
    assert records["tflm"] == {"skipped": f"{entry['file']}: TFLite Micro has no kernel for MADE_UP_OP"}
    assert records["reference"]["n"] == 16 and records["builtin"]["n"] == 16

    def broken(runtime, path, *a, **k):
        raise ModelError("broken")

    monkeypatch.setattr(verify, "open_session", broken)
    with pytest.raises(ModelError):
        verify.kernel_parity(run / "export" / entry["file"], x, y, np.eye(10, dtype=np.float32)[y])


def test_the_int8_onnx_records_its_own_qdq_arithmetic(exported, dataset):
    """The int8 ONNX's figures with its Q/DQ pairs applied in float (onnxruntime's basic graph optimization, no
    fused int8 kernels) are in parity_kernels["qdq"], and onnxruntime called directly reproduces them."""
    import onnxruntime as ort

    from edgecnn.script.edgecnn_infer import predictions_digest

    run, _ = exported
    entry = json.loads((run / "export" / "manifest.json").read_text())["artifacts"]["onnx_int8"]
    qdq = entry["parity_kernels"]["qdq"]
    assert set(entry["parity_kernels"]) == {"qdq"} and "graph optimization basic" in qdq["runtime"]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(str(run / "export" / entry["file"]), so, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    x = dataset.x_test
    if inp.type == "tensor(int8)":  # the from_tflite route: int8 I/O with the TFLite's scales
        q = entry["inputs"][0]["quantization"]
        x = np.clip(np.round(x / q["scale"] + q["zero_point"]), -128, 127).astype(np.int8)
    pred = np.concatenate([sess.run(None, {inp.name: x[i:i + 1]})[0] for i in range(len(x))]).argmax(1)
    assert float(np.mean(pred == dataset.y_test)) == pytest.approx(qdq["accuracy"], abs=1e-12)
    assert qdq["predictions_sha256"] == predictions_digest(pred)


def _saturating_conv(path: Path, reduce_range: bool) -> Path:
    """An int8 ONNX (onnxruntime's quantize_static) of one 3x3 conv whose weights all quantize to +127, calibrated
    on images up to 1.0: on a white image every pair of 8-bit products is 255 * 127, which 16 bits do not hold."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    shape = [1, 8, 6, 6]
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.full((4, 8, 3, 3), 0.1, np.float32), "w")])
    fp32 = path.with_suffix(".fp32.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"x": rng.uniform(0, 1, shape).astype(np.float32)} for _ in range(4)]
                              + [{"x": np.ones(shape, np.float32)}])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range)
    return path


def test_7bit_weights_are_computed_right_where_onnxruntimes_int8_kernels_saturate(tmp_path):
    """Where onnxruntime's fused int8 kernels saturate (x86-64 with AVX2 and no VNNI: a white image through the
    conv above comes out at about half its value), the same conv with 7-bit weights matches its own Q/DQ arithmetic:
    the remedy export falls back to. Skipped on CPUs whose kernels do not saturate."""
    import onnxruntime as ort

    def outputs(path):
        out = []
        for level in (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
            so = ort.SessionOptions()
            so.graph_optimization_level = level
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            out.append(sess.run(None, {"x": np.ones((1, 8, 6, 6), np.float32)})[0])
        return out

    in_float, fused = outputs(_saturating_conv(tmp_path / "w8.onnx", reduce_range=False))
    if np.allclose(fused, in_float, rtol=0.02):
        pytest.skip("onnxruntime's int8 kernels do not saturate on this CPU")
    assert fused.max() < 0.8 * in_float.max()
    in_float, fused = outputs(_saturating_conv(tmp_path / "w7.onnx", reduce_range=True))
    assert np.allclose(fused, in_float, rtol=0.02)


def test_an_int8_onnx_the_kernels_here_miscompute_gives_way_to_7bit_weights(digits_run, tmp_path, monkeypatch):
    """When onnxruntime's int8 kernels here disagree with a candidate's own Q/DQ arithmetic (simulated: the fused
    session of both 8-bit candidates returns every other image's probabilities reversed), quantize_static with 7-bit
    weights joins, wins on validation, and the manifest and a warning say why. --onnx-weight-bits 7 makes only
    7-bit candidates (for a device with such a CPU, whatever the CPU that exports)."""
    import edgecnn.export.verify as verify
    from edgecnn.export import ExportConfig, export

    real = verify.open_runner

    class Miscomputing:
        def __init__(self, runner):
            self.runner = runner

        def predict(self, x):
            p = self.runner.predict(x)
            p[::2] = p[::2, ::-1]
            return p

        def __getattr__(self, name):
            return getattr(self.runner, name)

    def open_runner(path, *a, graph_optimization="all", **k):
        runner = real(path, *a, graph_optimization=graph_optimization, **k)
        eight_bit = Path(path).name in ("model_int8.quantize_static.onnx", "model_int8.from_tflite.onnx")
        return Miscomputing(runner) if eight_bit and graph_optimization == "all" else runner

    monkeypatch.setattr(verify, "open_runner", open_runner)
    run = copy_run(digits_run, tmp_path / "run")
    result = export(run, ExportConfig(formats=("onnx_int8",)))
    (entry,) = result.artifacts
    details = entry["details"]
    assert details["method"] == "quantize_static_7bit"
    assert set(details["kernels_diverged"]) == {"quantize_static", "from_tflite"}
    assert all(v < 0.6 for v in details["kernels_diverged"].values())
    assert details["candidates"]["quantize_static_7bit"]["kernels_agree_qdq"] == 1.0
    assert details["calibration"] == "minmax, 7-bit weights"
    assert entry["parity"]["accuracy_drop"] <= 1.0
    assert any("added quantize_static_7bit" in w for w in result.warnings)

    import onnx
    from onnx import numpy_helper

    result = export(run, ExportConfig(formats=("onnx_int8",), onnx_weight_bits="7"))  # for a device with such a CPU
    (entry,) = result.artifacts
    assert list(entry["details"]["candidates"]) == ["quantize_static_7bit"] and "kernels_diverged" not in entry["details"]
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(run / "export" / "model_int8.onnx")).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
    assert weights and max(int(np.abs(w.astype(int)).max()) for w in weights) <= 64


def test_export_verifies_on_the_kernels_asked_for(digits_run, tmp_path):
    """--kernels reference: the table, the gates and `parity` are the reference kernels' (a microcontroller's
    arithmetic); the other two sets go to parity_kernels. An unknown set is a one-line error before any work."""
    from edgecnn.errors import ConfigError
    from edgecnn.export import ExportConfig, export

    run = copy_run(digits_run, tmp_path / "run")
    result = export(run, ExportConfig(formats=("tflite_int8",), kernels="reference", min_agreement=0.9))
    (entry,) = result.artifacts
    assert entry["runtime"].endswith("(reference)") and set(entry["parity_kernels"]) == {"xnnpack", "builtin", "tflm"}
    assert result.failures == []
    with pytest.raises(ConfigError, match="unknown kernels 'gpu'"):
        ExportConfig(kernels="gpu").validate()


def test_percentile_calibration_narrows_the_onnx_activation_ranges(exported, dataset, tmp_path):
    """--calib-method percentile: onnxruntime's histogram percentile instead of min/max: no activation range
    wider than min/max's, some narrower (outliers clipped); weights untouched. Under --quant auto both compete."""
    from types import SimpleNamespace

    import onnx
    from onnx import numpy_helper

    from edgecnn.errors import ConfigError
    from edgecnn.export import ExportConfig, Quantization
    from edgecnn.export.calibration import calibration_images
    from edgecnn.export.onnx import _quantize_static, _routes

    run, _ = exported
    ctx = SimpleNamespace(staging=tmp_path, calib=calibration_images(dataset.train, 100, 0)[0])
    fp32 = run / "export" / "model_fp32.onnx"

    def scales(path):  # every per-tensor scale: activations (per-channel weight scales are arrays)
        g = onnx.load(str(path)).graph
        return {t.name: float(numpy_helper.to_array(t)) for t in g.initializer
                if t.name.endswith("_scale") and numpy_helper.to_array(t).size == 1}

    minmax = scales(_quantize_static(ctx, fp32, "minmax"))
    pct = scales(_quantize_static(ctx, fp32, "percentile", 99.0))
    assert minmax.keys() == pct.keys() and len(minmax) >= 5
    assert all(pct[k] <= minmax[k] * (1 + 1e-6) for k in minmax)
    assert sum(pct[k] < minmax[k] * 0.99 for k in minmax) >= 2

    def names(quant, method="minmax", bits="auto"):
        cfg = SimpleNamespace(quant=quant, calib_method=method, calib_percentile=99.9, onnx_weight_bits=bits)
        return list(_routes(SimpleNamespace(config=cfg)))

    assert names(Quantization.PTQ) == ["quantize_static", "from_tflite"] == names(Quantization.PTQ, bits="8")
    assert names(Quantization.PTQ, bits="7") == ["quantize_static_7bit"]  # from_tflite carries 8-bit weights
    assert names(Quantization.AUTO, bits="7") == ["quantize_static_7bit", "quantize_static_p99.9_7bit"]
    assert names(Quantization.PTQ, "percentile") == ["quantize_static_p99.9", "from_tflite"]
    assert names(Quantization.AUTO) == ["quantize_static", "quantize_static_p99.9", "from_tflite"]
    with pytest.raises(ConfigError, match="--onnx-weight-bits '6'"):
        ExportConfig(onnx_weight_bits="6").validate()
    with pytest.raises(ConfigError, match="--calib-method 'mse'"):
        ExportConfig(calib_method="mse").validate()
    with pytest.raises(ConfigError, match="--calib-percentile"):
        ExportConfig(calib_method="percentile", calib_percentile=101).validate()


def open_keras(run):
    from edgecnn.rundir import open_run

    return open_run(run).load_model()


def test_atomic_placement_under_injected_failure(digits_run, tmp_path, monkeypatch):
    """A copy that dies half-way leaves no file under its final name, no manifest and no temporaries."""
    import edgecnn.export as ex

    run = copy_run(digits_run, tmp_path / "run")
    real_copy, calls = shutil.copyfile, []

    def dying_copy(src, dst, *a, **k):
        calls.append(dst)
        if len(calls) == 2:
            with open(dst, "wb") as f:
                f.write(Path(src).read_bytes()[:100])  # half-written
            raise OSError("disk full (injected)")
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(ex.shutil, "copyfile", dying_copy)
    with pytest.raises(OSError, match="injected"):
        ex.export(run, ex.ExportConfig(formats=("tflite_fp32", "onnx_fp32")))
    files = {p.name for p in (run / "export").iterdir()}
    assert "model_fp32.onnx" not in files and "manifest.json" not in files
    assert not [f for f in files if f.startswith(".")], files  # temp file and staging folder removed


def test_failed_artifact_writes_nothing(digits_run, tmp_path, monkeypatch):
    """An artifact failing its check aborts before anything is placed: an earlier export stays as it was."""
    import edgecnn.export as ex
    from edgecnn.errors import ParityError

    run = copy_run(digits_run, tmp_path / "run")
    (run / "export").mkdir()
    (run / "export" / "manifest.json").write_text('{"old": true}')
    import edgecnn.export.verify as verify_mod

    real_verify = verify_mod.verify

    def off_by_a_lot(path, *a, **k):
        if str(path).endswith(".onnx"):
            raise ParityError("injected parity failure")
        return real_verify(path, *a, **k)

    monkeypatch.setattr(verify_mod, "verify", off_by_a_lot)
    with pytest.raises(ParityError):
        ex.export(run, ex.ExportConfig(formats=("tflite_fp32", "onnx_fp32")))
    assert sorted(p.name for p in (run / "export").iterdir()) == ["manifest.json"]
    assert json.loads((run / "export" / "manifest.json").read_text()) == {"old": True}


def test_strict_threshold_fails_and_writes_nothing(digits_run, tmp_path):
    run = copy_run(digits_run, tmp_path / "run")
    res = CliRunner().invoke(main, ["export", str(run), "--formats", "tflite_int8", "--strict",
                                    "--max-acc-drop", "-100"])
    assert res.exit_code == 2
    assert "strict" in res.output and "nothing written" in res.output
    assert not (run / "export" / "model_int8.tflite").exists() and not (run / "export" / "manifest.json").exists()


@pytest.mark.slow  # 18-32 s of QAT child process; QAT stays in the default suite through imports and --quant auto
def test_qat_tiny_model(digits_run, tmp_path):
    """QAT in its child process: int8 written, accuracy before/after reported, Keras 3 process untouched."""
    from edgecnn.export import ExportConfig, export
    from edgecnn.inspect import tflite_float_ops

    run = copy_run(digits_run, tmp_path / "run")
    result = export(run, ExportConfig(formats=("tflite_int8",), quant="qat", qat_epochs=1, calib_samples=100))
    (entry,) = result.artifacts
    assert entry["quant"] == "qat"
    qat = entry["details"]["qat"]
    assert 0.8 < qat["accuracy_before"] <= 1 and 0.8 < qat["accuracy_after"] <= 1
    assert qat["folded_batchnorm"] == ["dense+bn_dense"] and qat["skipped_layers"] == []
    assert entry["parity"]["accuracy_drop"] <= 2.0
    # judged beside plain PTQ on validation, as --quant auto judges it (a worse QAT is a warning)
    vs = entry["details"]["against_ptq"]
    assert set(vs) == {"ptq", "qat"} and all(0.8 < v["val_agreement"] <= 1 for v in vs.values())
    assert (vs["qat"]["val_agreement"] < vs["ptq"]["val_agreement"]) == any(
        "less than plain PTQ" in w for w in result.warnings)
    assert tflite_float_ops(run / "export" / "model_int8.tflite") == []
    assert "TF_USE_LEGACY_KERAS" not in os.environ
    import tensorflow as tf

    assert tf.keras.__version__.startswith("3")
    assert json.loads((run / "export" / "manifest.json").read_text())["versions"]["tensorflow_model_optimization"]


def test_fold_dense_batchnorm_keeps_outputs():
    """The Dense+BN fold QAT relies on changes no inference output (random BN statistics)."""
    import tf_keras

    from edgecnn.export.qat import fold_dense_batchnorm
    from edgecnn.models import ModelSpec, build

    model = build(ModelSpec(params={"filters": 4, "dense_units": 8}), tf_keras)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) if "variance" not in v.name
                       else rng.uniform(0.5, 2, size=w.shape).astype(np.float32)
                       for v, w in zip(model.weights, model.get_weights())])
    x = rng.uniform(0, 1, size=(16, 8, 8, 1)).astype(np.float32)
    folded, pairs = fold_dense_batchnorm(model, tf_keras)
    assert pairs == ["dense+bn_dense"] and "bn_dense" not in [layer.name for layer in folded.layers]
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


# ----------------------------------------------------------------------------------------- bad input


def _one_line_error(res):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in res.output
    return lines[-1]


def test_cli_missing_run_dir(tmp_path):
    line = _one_line_error(CliRunner().invoke(main, ["export", str(tmp_path / "nope")]))
    assert "no such run directory" in line


def test_cli_incomplete_run_dir(digits_run, tmp_path):
    run = copy_run(digits_run, tmp_path / "run")
    (run / "model.keras").unlink()
    line = _one_line_error(CliRunner().invoke(main, ["export", str(run)]))
    assert "model.keras" in line
    assert not (run / "export").exists()


def test_cli_model_file_not_a_model(digits_run, tmp_path):
    run = copy_run(digits_run, tmp_path / "run")
    (run / "model.keras").write_bytes(b"not a keras archive")
    line = _one_line_error(CliRunner().invoke(main, ["export", str(run), "--formats", "fp32"]))
    assert "cannot load the Keras model" in line
    assert not (run / "export").exists()


def test_cli_unknown_format(tmp_path):
    line = _one_line_error(CliRunner().invoke(main, ["export", str(tmp_path), "--formats", "tflite,coreml"]))
    assert "unknown format 'coreml'" in line and "tflite_int8" in line


def test_cli_too_few_calibration_images(digits_run, tmp_path):
    run = copy_run(digits_run, tmp_path / "run")
    line = _one_line_error(CliRunner().invoke(main, ["export", str(run), "--calib-samples", "3"]))
    assert "too few" in line
    assert not (run / "export").exists()


def test_cli_qat_refuses_nested_model(digits_run, tmp_path):
    """An architecture QAT cannot handle (a nested model) is refused in one line, nothing written."""
    import keras

    run = copy_run(digits_run, tmp_path / "run")
    inner = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")], name="head")
    inp = keras.Input((8, 8, 1), name="image")
    keras.Model(inp, inner(inp)).save(run / "model.keras")
    line = _one_line_error(CliRunner().invoke(main, ["export", str(run), "--formats", "tflite_int8", "--quant", "qat"]))
    assert "nested" in line and "head" in line
    assert not [p for p in (run / "export").iterdir() if p.name != ".keep"]


@pytest.mark.slow  # 30 s of QAT for a progress line
def test_qat_prints_a_line_per_fine_tuning_epoch(digits_run, tmp_path, capfd):
    """QAT progress (issue 11): the tf_keras child reports each epoch on stdout when progress is on."""
    from edgecnn.export import ExportConfig, export

    run = copy_run(digits_run, tmp_path / "run")
    export(run, ExportConfig(formats=("tflite_int8",), quant="qat", qat_epochs=2, progress=True))
    out = capfd.readouterr().out
    assert "QAT epoch 1/2  loss" in out and "QAT epoch 2/2" in out and "val_accuracy" in out
