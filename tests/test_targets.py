"""The three targets added on the runtime layer: TFLite Micro, Arm Ethos-U (Vela) and OpenVINO, each one module
and one registry line; rows with their own keys, clear rows for what a target cannot do."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bench_artifacts import exported_run
from edgecnn.bench import BenchConfig, bench

QUICK = dict(runs=3, min_s=0.0, warmup_runs=1, warmup_min_s=0.0, max_s=1.0)


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    return exported_run(digits_run, tmp_path_factory.mktemp("targets"))


@pytest.fixture(scope="module")
def rows(exported):
    """tflite with the builtin reference kernels, and the three targets, on every artifact."""
    res = bench(exported, config=BenchConfig(backends=("tflite", "tflm", "ethos-u", "openvino"), xnnpack=False,
                                             write=False, **QUICK))
    return {(r.artifact, r.backend): r for r in res.rows}


def _allocates(model, arena: int) -> bool:
    code = ("import sys, numpy as np\nfrom tflite_micro import runtime\n"
            "it = runtime.Interpreter.from_file(sys.argv[1], arena_size=int(sys.argv[2]))\n"
            "d = it.get_input_details(0); it.set_input(np.zeros(d['shape'], d['dtype']), 0); it.invoke()\n")
    return subprocess.run([sys.executable, "-c", code, str(model), str(arena)], capture_output=True).returncode == 0


def test_tflm_is_bit_exact_with_the_reference_kernels_and_finds_the_smallest_arena(rows, exported):
    tflm, builtin = rows[("tflite_int8", "tflm")], rows[("tflite_int8", "tflite")]
    assert tflm.status == "ok" and builtin.status == "ok" and builtin.accelerator == "builtin"
    reference = bench(exported, config=BenchConfig(backends=("tflite",), artifacts=("tflite_int8",),
                                                   reference_kernels=True, timing=False, write=False)).rows[0]
    assert reference.status == "ok" and reference.accelerator == "reference"
    # max_int8_steps is measured against the reference kernels, whose arithmetic TFLite Micro shares but for a
    # per-channel FULLY_CONNECTED, which it rounds twice where they round once: a few steps at most (4 on one digits
    # model, 0 on others; against the builtin optimized kernels 85 on an int8 MobileNetV2)
    assert isinstance(tflm.max_int8_steps, int) and 0 <= tflm.max_int8_steps <= 8
    # each row has the figures export recorded for its own arithmetic: no "differs from the manifest" note
    entry = json.loads((exported / "export" / "manifest.json").read_text())["artifacts"]["tflite_int8"]
    assert (tflm.accuracy, tflm.agreement) == (entry["parity_kernels"]["tflm"]["accuracy"],
                                               entry["parity_kernels"]["tflm"]["top1_agreement"])
    assert "manifest" not in (tflm.note or "") and "manifest" not in (reference.note or "")
    model = exported / "export" / "model_int8.tflite"
    assert tflm.flash_bytes == model.stat().st_size
    # arena_bytes is the smallest that allocates, within 2%: it does, 2% less does not
    assert _allocates(model, tflm.arena_bytes)
    assert not _allocates(model, int(tflm.arena_bytes * 0.98))
    assert tflm.arena_bytes < 10 * model.stat().st_size  # not TFLM's default guess
    assert rows[("tflite_fp32", "tflm")].status == "ok"  # TFLM runs float models too
    assert "not a microcontroller" in tflm.note


def test_tflm_compares_with_the_reference_kernels_without_running_the_split_twice(exported):
    """bench runs TFLM over the test split for accuracy, then `extras` compares each output with the reference
    kernels': TFLM's outputs are reused, not computed again (on a 224x224 MobileNetV2 that was 138 s)."""
    from edgecnn.data import DataConfig, load_dataset
    from edgecnn.runtimes import open_session

    x = load_dataset(DataConfig(source="digits", image_size=(8, 8), channels=1)).x_test[:40]
    sess = open_session("tflm", exported / "export" / "model_int8.tflite")
    try:
        calls, invoke = [], sess.it.invoke

        class Counting:  # TFLM's interpreter is a pybind object: count through a stand-in
            def __getattr__(self, name):
                return getattr(it, name)

            def invoke(self):
                calls.append(1)
                return invoke()

        it, sess.it = sess.it, Counting()
        sess.predict(x)
        assert len(calls) == len(x)
        assert sess.extras(x)["max_int8_steps"] == 0
        assert len(calls) == len(x)  # the comparison reused the outputs
    finally:
        sess.it = it
        sess.close()


def test_arena_search_counts_a_crashing_size_as_too_small(monkeypatch, tmp_path):
    """TFLM segfaults on some arenas a little too small (an int8 MobileNetV2 does): the search runs in a child,
    a size that kills it only means "does not fit", and a new child goes on from there."""
    import json
    import types

    from edgecnn.runtimes import tflm

    tried, children = [], []

    def child(path, mode, *args, timeout):
        if mode == "record":
            return types.SimpleNamespace(returncode=0, stdout=json.dumps({"fits": 100_000, "recorded": 60_000}),
                                         stderr="")
        lo, hi = map(int, args)
        children.append((lo, hi))
        lines = ["Arena allocation total 60000 bytes"]  # a line TFLM itself may print is not the search's
        while lo < hi:  # the child's bisection; every size below 51,234 crashes it
            mid = (lo + hi) // 2
            tried.append(mid)
            lines.append(f"try {mid}")
            if mid < 51_234:
                return types.SimpleNamespace(returncode=-11, stdout="\n".join(lines), stderr="Failed to allocate")
            lines.append(f"fit {mid}")
            hi = mid
        lines.append(f"done {hi}")
        return types.SimpleNamespace(returncode=0, stdout="\n".join(lines), stderr="")

    monkeypatch.setattr(tflm, "_child", child)
    assert tflm.arena_search(tmp_path / "m.tflite") == {"smallest": 51_234, "recorded": 60_000}
    assert any(n < 51_234 for n in tried) and len(children) > 1  # crashing sizes were tried, and the search went on


def test_arena_search_fails_at_once_when_the_child_ends_without_an_answer(monkeypatch, tmp_path):
    """A child that exits without finishing and without dying on a size (say, tflite_micro fails to import) is a
    failed search with its last line, not the same range tried again until the timeout."""
    import types

    from edgecnn.runtimes import tflm

    calls = []

    def child(path, mode, *args, timeout):
        calls.append(mode)
        return types.SimpleNamespace(returncode=1, stdout="", stderr="ModuleNotFoundError: No module named 'x'")

    monkeypatch.setattr(tflm, "_child", child)
    with pytest.raises(RuntimeError, match="arena search failed: ModuleNotFoundError"):
        tflm.arena_search(tmp_path / "m.tflite", fits={"fits": 100_000, "recorded": 60_000})
    assert calls == ["search"]
    monkeypatch.setattr(tflm, "_child", lambda *a, timeout: types.SimpleNamespace(returncode=0, stdout="", stderr=""))
    with pytest.raises(RuntimeError, match="arena search failed: exit 0"):
        tflm.arena_search(tmp_path / "m.tflite", fits={"fits": 100_000, "recorded": 60_000})


def test_tflm_names_an_op_it_lacks(tmp_path):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.float32)])
    def f(image):
        flat = tf.reshape(image, [1, 64])
        return {"probs": tf.nn.softmax(tf.math.top_k(flat, k=10).values)}

    model = tmp_path / "topk.tflite"
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    model.write_bytes(conv.convert())
    res = bench(model=model, data="digits", config=BenchConfig(backends=("tflm",), timing=False, write=False))
    row = res.rows[0]
    assert row.status == "failed" and "TFLite Micro has no kernel for TOPK_V2" in row.reason


def test_tflm_runs_a_model_whose_arena_is_over_ten_times_its_size(tmp_path):
    """TFLM's default arena is 10x the model: a small model on 64x64 RGB images (an imported one was) needs more,
    and the row runs instead of failing "Failed to resize buffer"."""
    import tensorflow as tf

    from edgecnn.runtimes import open_session

    w = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 3, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 64, 64, 3], tf.float32)])
    def f(image):
        x = tf.nn.relu(tf.nn.conv2d(image, w, 1, "SAME"))
        return {"probs": tf.nn.softmax(tf.reduce_mean(x, axis=[1, 2]))}

    model = tmp_path / "wide.tflite"
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    model.write_bytes(conv.convert())
    x = np.random.default_rng(1).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    sess = open_session("tflm", model)
    try:
        assert np.allclose(sess.predict(x), f(x[:1])["probs"].numpy().tolist() + f(x[1:])["probs"].numpy().tolist(),
                           atol=1e-5)
        arena = sess.extras(x[:1])["arena_bytes"]
    finally:
        sess.close()
    assert arena > 10 * model.stat().st_size and _allocates(model, arena)


def test_a_softmax_the_reference_kernels_abort_on_is_refused_in_one_line(tmp_path):
    """An untrained network's logits are all about zero, so its int8 Softmax input scale is tiny, and TFLite's
    reference kernels (and TFLite Micro) abort the whole process on it (PreprocessSoftmaxScaling). The sessions
    refuse it before allocating: a failed row, not a dead bench. Run in a child: a regression would abort."""
    import tensorflow as tf

    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.float32)])
    def f(image):
        return {"probs": tf.nn.softmax(tf.reshape(image, [1, 64])[:, :10] * 1e-9)}

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(16))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    model = tmp_path / "untrained.tflite"
    model.write_bytes(conv.convert())
    code = ("import sys\nfrom edgecnn.errors import ModelError\n"
            "from edgecnn.runtimes import RuntimeOptions, open_session\n"
            "for name, opts in (('tflite', RuntimeOptions()), ('tflite', RuntimeOptions(reference_kernels=True)),"
            " ('tflm', RuntimeOptions())):\n"
            "    try:\n        open_session(name, sys.argv[1], opts).close(); print(name, 'opened')\n"
            "    except ModelError as e:\n        print(name, 'refused:', e)\n")
    p = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.strip().splitlines()
    assert lines[0] == "tflite opened"  # XNNPACK runs it
    for line in lines[1:]:
        assert "refused: untrained.tflite: its int8 Softmax input scale is" in line and "abort" in line, line


def test_ethos_u_row_has_the_compiler_figures(rows):
    r = rows[("tflite_int8", "ethos-u")]
    assert r.status == "ok", r.reason
    assert r.npu_ops == 8 and r.cpu_ops == 0  # every op of the digits model on the NPU
    assert r.sram_bytes > 0 and r.flash_bytes > 0 and 0 < r.est_ms < 10
    assert r.accuracy is None and r.latency is None  # estimates, not a run
    assert "ethos-u55-128" in r.accelerator and "estimates" in r.note


def test_ethos_u_float_model_is_a_clear_row(rows):
    r = rows[("tflite_fp32", "ethos-u")]
    assert r.status == "skipped" and r.reason.startswith("not int8: 0 ops on the NPU")


def test_ethos_u_other_configuration(exported):
    res = bench(exported, config=BenchConfig(backends=("ethos-u",), artifacts=("tflite_int8",), npu="ethos-u65-256",
                                             timing=False, write=False))
    r = res.rows[0]
    assert r.status == "ok" and r.accelerator == "ethos-u65-256" and "Ethos_U65_High_End" in r.note


def test_openvino_runs_all_four_artifacts_in_f32(rows):
    for name in ("tflite_fp32", "tflite_int8", "onnx_fp32", "onnx_int8"):
        r = rows[(name, "openvino")]
        assert r.status == "ok", (name, r.reason)
        assert r.accelerator == "CPU f32", r.accelerator
        if name.endswith("fp32"):
            assert r.max_abs_diff <= 1e-4, (name, r.max_abs_diff)
        else:
            assert r.agreement >= 0.97 and r.accuracy_drop <= 1.0, name


def test_an_option_a_runtime_does_not_read_is_a_visible_note(rows):
    assert "--xnnpack do(es) not apply to tflm" in rows[("tflite_int8", "tflm")].note
    assert "xnnpack" not in (rows[("tflite_int8", "tflite")].note or "")


@pytest.mark.parametrize("backend, module, package", [
    ("tflm", "tflite_micro", "pip install tflite-micro"),
    ("ethos-u", "ethosu", "pip install ethos-u-vela"),
    ("openvino", "openvino", "pip install openvino"),
])
def test_a_missing_target_is_a_skipped_row_with_the_pip_line(exported, monkeypatch, backend, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    if module == "ethosu":
        monkeypatch.setitem(sys.modules, "ethosu.vela", None)
    res = bench(exported, config=BenchConfig(backends=(backend,), artifacts=("tflite_int8",), timing=False,
                                             write=False))
    r = res.rows[0]
    assert r.status == "skipped" and package in r.reason, r.reason


def test_each_row_has_its_own_peak_memory():
    from edgecnn.native import MemoryWindow

    big = np.ones(50_000_000)  # 400 MB before the window
    big[::4096] = 2.0
    del big
    with MemoryWindow() as m:
        small = np.ones(1_000_000)
        small[::4096] = 2.0
    if not m.own:
        pytest.skip("no per-window high-water mark on this platform")
    assert m.peak_mb < m.start_mb + 100 and m.footprint_mb < 100  # not the 400 MB peak of before
