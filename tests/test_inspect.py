"""`edgecnn inspect`: size, I/O and quantization, op histogram, parameters, int8-ness, what XNNPACK or a GPU
delegate would not take; bad model files are one line and exit 2."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgecnn.cli import main
from edgecnn.inspect import inspect_model, not_delegated, parse_gpu_compatibility


@pytest.fixture(scope="module")
def artifacts(digits_run, tmp_path_factory):
    """Default export (all formats) and a float-I/O int8 TFLite of the session's digits run."""
    from edgecnn.export import ExportConfig, export

    root = tmp_path_factory.mktemp("inspect")
    run = shutil.copytree(digits_run, root / "run", ignore=shutil.ignore_patterns("export"))
    export(run, ExportConfig())
    run_float = shutil.copytree(digits_run, root / "run_float", ignore=shutil.ignore_patterns("export"))
    export(run_float, ExportConfig(formats=("tflite_int8",), io="float"))
    return run / "export", run_float / "export" / "model_int8.tflite", run / "model.keras"


def test_int8_tflite(artifacts):
    export_dir, _, _ = artifacts
    r = inspect_model(export_dir / "model_int8.tflite")
    fp = inspect_model(export_dir / "model_fp32.tflite")
    assert r["format"] == "tflite" and r["size_bytes"] == (export_dir / "model_int8.tflite").stat().st_size
    assert r["fully_int8"] and r["not_int8_ops"] == []
    (i,), (o,) = r["inputs"], r["outputs"]
    assert (i["name"], i["dtype"], o["name"], o["dtype"]) == ("image", "int8", "probs", "int8")
    assert i["quantization"]["scale"] == pytest.approx(1 / 255, rel=1e-3)
    assert r["ops"]["CONV_2D"] == 2 and r["ops"]["FULLY_CONNECTED"] == 2 and sum(r["ops"].values()) == r["num_ops"]
    assert r["parameters"] == fp["parameters"] > 30_000  # same weights, other precision
    assert not fp["fully_int8"] and {o["op"] for o in fp["not_int8_ops"]} >= {"CONV_2D", "FULLY_CONNECTED"}


def test_acceleration_report_agrees_with_litert(artifacts):
    export_dir, _, _ = artifacts
    for name in ("model_fp32.tflite", "model_int8.tflite"):
        acc = inspect_model(export_dir / name)["acceleration"]
        xnn = acc["xnnpack"]
        assert xnn["fully_delegated"] == (xnn["not_delegated"] == [])
        if acc["litert_cpu_fully_accelerated"] is not None:  # LiteRT's own verdict matches the op-level walk
            assert acc["litert_cpu_fully_accelerated"] == xnn["fully_delegated"], name
        assert acc["gpu"]["compatible"] in (True, False)
    # measured with ai-edge-litert 2.3: XNNPACK takes the whole batch-1 float graph
    assert inspect_model(export_dir / "model_fp32.tflite")["acceleration"]["xnnpack"]["fully_delegated"]


def test_float_io_int8_tflite(artifacts):
    _, float_io, _ = artifacts
    r = inspect_model(float_io)
    assert not r["fully_int8"] and r["int8_except_io"]
    assert {o["op"] for o in r["not_int8_ops"]} == {"QUANTIZE", "DEQUANTIZE"}
    assert r["inputs"][0]["dtype"] == "float32" and r["inputs"][0]["quantization"] is None
    manifest = json.loads((float_io.parent / "manifest.json").read_text())
    assert manifest["artifacts"]["tflite_int8"]["details"]["io"] == "float"
    assert manifest["artifacts"]["tflite_int8"]["parity"]["accuracy_drop"] <= 1.0


def test_onnx(artifacts):
    export_dir, _, _ = artifacts
    fp = inspect_model(export_dir / "model_fp32.onnx")
    q = inspect_model(export_dir / "model_int8.onnx")
    assert fp["format"] == "onnx" and fp["opset"] == 17 and fp["inputs"][0]["shape"] == [None, 8, 8, 1]
    assert not fp["fully_int8"] and "Conv" in {o["op"] for o in fp["not_int8_ops"]}
    assert q["not_int8_ops"] == [] and (q["fully_int8"] or q["int8_except_io"])
    assert q["ops"].get("QuantizeLinear", 0) > 0 and q["parameters"] > 30_000


def test_an_activation_its_quantizer_makes_moot_runs_in_int8(artifacts, tmp_path):
    """tf2onnx's translation of an int8 TFLite keeps each fused activation as Conv -> Relu/Clip -> QuantizeLinear;
    onnxruntime drops a Relu or Clip whose quantizer clamps to its range anyway, so the conv runs in int8. A Relu
    before a quantizer that keeps negative values is not moot: it and the conv compute in float."""
    import onnx
    import tf2onnx
    from onnx import TensorProto, helper, numpy_helper

    export_dir, _, _ = artifacts
    proto, _ = tf2onnx.convert.from_tflite(str(export_dir / "model_int8.tflite"), opset=17)
    onnx.save(proto, str(tmp_path / "from_tflite.onnx"))
    r = inspect_model(tmp_path / "from_tflite.onnx")
    assert {"Relu", "Conv"} <= set(r["ops"]) and r["not_int8_ops"] == [] and r["fully_int8"]

    def relu_conv(zero_point: int):
        def init(name, a):
            return numpy_helper.from_array(np.asarray(a), name)

        nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"]),
                 helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wf"]),
                 helper.make_node("Conv", ["xf", "wf"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
                 helper.make_node("QuantizeLinear", ["r", "s", "zo"], ["y"])]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 1, 4, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.INT8, [1, 1, 2, 2])],
                                  [init("s", np.float32(0.1)), init("z", np.int8(0)), init("zo", np.int8(zero_point)),
                                   init("w", np.ones((1, 1, 3, 3), np.int8))])
        path = tmp_path / f"relu_{zero_point}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return inspect_model(path)

    assert relu_conv(-128)["not_int8_ops"] == []
    assert [o["op"] for o in relu_conv(0)["not_int8_ops"]] == ["Conv", "Relu"]


def test_keras(artifacts):
    import keras

    _, _, keras_path = artifacts
    r = inspect_model(keras_path)
    assert r["format"] == "keras" and not r["fully_int8"]
    res = CliRunner().invoke(main, ["inspect", str(keras_path)])
    assert res.exit_code == 0, res.output
    assert "precision" in res.output and "fully int8" not in res.output  # float by construction, not a finding
    assert r["parameters"] == keras.models.load_model(keras_path, compile=False).count_params()
    assert r["ops"]["Conv2D"] == 2 and r["inputs"][0]["shape"] == [None, 8, 8, 1]


def test_cli_table_and_json(artifacts):
    export_dir, _, _ = artifacts
    res = CliRunner().invoke(main, ["inspect", str(export_dir / "model_int8.tflite")])
    assert res.exit_code == 0, res.output
    assert "fully int8" in res.output and "CONV_2D" in res.output and "scale 0.00392157" in res.output
    res = CliRunner().invoke(main, ["inspect", str(export_dir / "model_fp32.onnx"), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["format"] == "onnx"


@pytest.mark.parametrize("name,content", [("junk.tflite", b"\x00" * 64), ("junk.onnx", b"not onnx at all"),
                                          ("junk.keras", b"PK but not a zip"), ("model.pb", b"x"), ("gone.tflite", None)])
def test_cli_not_a_model(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    res = CliRunner().invoke(main, ["inspect", str(path)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0]


def test_gpu_analyzer_parsing():
    text = """Subgraph#0 main(T#0) -> [T#3]
  Op#0 CONV_2D(T#0, T#1) -> [T#2]
  Op#1 CUMSUM(T#2, T#4) -> [T#3]
GPU COMPATIBILITY WARNING: Not supported op CUMSUM

GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 1 with TFLite runtime version 2.21
"""
    r = parse_gpu_compatibility(text)
    assert not r["compatible"] and r["incompatible"] == [{"index": 1, "op": "CUMSUM", "reason": "Not supported op CUMSUM"}]
    ok = parse_gpu_compatibility("  Op#0 CONV_2D(T#0) -> [T#1]\nYour model looks compatible with GPU delegate\n")
    assert ok == {"compatible": True, "incompatible": []}


def test_not_delegated_walk():
    """Two partitions around a builtin op: only that op is reported."""
    a = np.array
    ops = [
        {"index": 0, "op_name": "CONV_2D", "inputs": a([0, 10]), "outputs": a([1])},
        {"index": 1, "op_name": "SHAPE", "inputs": a([1]), "outputs": a([2])},
        {"index": 2, "op_name": "RESHAPE", "inputs": a([1, 2]), "outputs": a([3])},
        {"index": 3, "op_name": "SOFTMAX", "inputs": a([3]), "outputs": a([4])},
    ]
    delegates = [{"index": 4, "op_name": "DELEGATE", "inputs": a([0, 10]), "outputs": a([1])},
                 {"index": 5, "op_name": "DELEGATE", "inputs": a([1, 2]), "outputs": a([4])}]
    assert not_delegated(ops, delegates) == [{"index": 1, "op": "SHAPE"}]
    assert not_delegated(ops, []) == [{"index": i, "op": o["op_name"]} for i, o in enumerate(ops)]
