"""edgecnn bench: rows for every format and backend, reports, parity gates, bad inputs."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench_artifacts import broken_run, copy_run, exported_run
from edgecnn.bench import ROW_KEYS, BenchConfig, bench
from edgecnn.script.edgecnn_infer import LATENCY_KEYS

QUICK = dict(runs=3, min_s=0.0, warmup_runs=1, warmup_min_s=0.0, max_s=1.0)
CONTRACT_ROW_KEYS = (
    "artifact", "file", "format", "precision", "backend", "accelerator", "runtime", "device", "threads", "batch",
    "status", "reason", "accuracy", "accuracy_drop", "agreement", "max_abs_diff",
    "class_drop", "worst_class",  # the class whose recall falls most below the reference's
    "size_bytes", "load_ms",
    "first_ms", "latency", "throughput_ips", "peak_rss_mb", "footprint_mb", "timing_includes_copies",
    # target-specific keys (issue 9): TFLite Micro, Ethos-U (Vela estimates), int8 steps vs the reference kernels
    "arena_bytes", "flash_bytes", "sram_bytes", "npu_ops", "cpu_ops", "est_ms", "max_int8_steps",
    "integrity",  # issue 10: verified | unverified | modified (allowed) | modified (refused) | misdescribed
    "note",
)


@pytest.fixture(scope="session")
def exported(digits_run, tmp_path_factory):
    return exported_run(digits_run, tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="session")
def full(exported, tmp_path_factory):
    """One bench of every artifact on every backend, with reports."""
    out = tmp_path_factory.mktemp("bench_out")
    return bench(exported, config=BenchConfig(out=str(out), batch=4, **QUICK))


def cli(*args):
    from edgecnn.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_rows_for_every_format_on_keras_tflite_onnxruntime(full):
    rows = {(r.artifact, r.backend): r for r in full.rows}
    for key in [("keras", "keras"), ("tflite_fp32", "tflite"), ("tflite_int8", "tflite"),
                ("tflite_fp32", "litert-cpu"), ("tflite_int8", "litert-cpu"),
                ("onnx_fp32", "onnxruntime"), ("onnx_int8", "onnxruntime")]:
        r = rows[key]
        assert r.status == "ok", (key, r.reason)
        assert r.accuracy > 0.9 and r.accuracy_drop <= 3.0, key
        assert set(r.latency) == set(LATENCY_KEYS) and r.latency["runs"] >= 3 and r.latency["median_ms"] > 0
        assert r.load_ms > 0 and r.first_ms > 0 and r.throughput_ips > 0 and r.size_bytes > 0
        assert r.runtime and r.peak_rss_mb > 0
    for key in [("tflite_fp32", "tflite"), ("onnx_fp32", "onnxruntime"), ("tflite_fp32", "litert-cpu")]:
        assert rows[key].agreement == 1.0 and rows[key].max_abs_diff < 1e-4, key
    assert rows[("tflite_int8", "tflite")].max_abs_diff > 1e-4  # quantized outputs really are dequantized int8
    assert rows[("keras", "keras")].timing_includes_copies is True
    assert rows[("tflite_int8", "tflite")].timing_includes_copies is False
    assert rows[("tflite_int8", "tflite")].runtime.startswith("ai_edge_litert")
    assert full.ok and not full.violations


def test_accelerator_rows_are_skipped_with_the_runtimes_reason(full):
    for backend, word in (("litert-gpu", "GPU"), ("litert-npu", "NPU")):
        rows = [r for r in full.rows if r.backend == backend]
        assert len(rows) == 2  # both tflite artifacts
        for r in rows:
            if r.status == "skipped":  # on a machine without the hardware (this one)
                assert r.reason.startswith(f"no {word}") and "(" in r.reason and r.latency is None
            else:
                assert r.status == "ok" and "is_fully_accelerated" in r.note
        if all(r.status == "skipped" for r in rows):  # the same reason for each artifact: reports say it once
            assert len({r.reason for r in rows}) == 1, [r.reason for r in rows]
    int8_cpu = full.row("tflite_int8", "litert-cpu")  # int8 SOFTMAX is not XNNPACK's: the note says where to look
    assert int8_cpu.note.startswith("LiteRT is_fully_accelerated: no (`edgecnn inspect model_int8.tflite` lists")


def test_a_missing_vulkan_loader_reads_the_same_with_or_without_litert_s_log(monkeypatch):
    """LiteRT logs "Couldn't load Vulkan" on a process's first GPU attempt only; the reason must not change."""
    import ctypes

    from edgecnn.runtimes.litert import _gpu_reason

    logs = ["WebGPU environment: INTERNAL: No adapters found",
            "Couldn't load Vulkan: libvulkan.so.1: cannot open shared object file: No such file or directory"]

    def no_loader(name, *a, **k):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_loader)
    first, later = _gpu_reason(logs, RuntimeError("x")), _gpu_reason(logs[:1], RuntimeError("x"))
    assert first == later and "no Vulkan loader (libvulkan.so.1)" in first and "WebGPU: INTERNAL" in first
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: object())  # a loader, and what Vulkan itself said
    monkeypatch.setattr("edgecnn.runtimes.litert._VULKAN_SAID", {})
    nodriver = logs[:1] + ["vkCreateInstance: Found no drivers!"]
    first, later = _gpu_reason(nodriver, RuntimeError("x")), _gpu_reason(logs[:1], RuntimeError("x"))
    assert first == later and "no Vulkan driver: vkCreateInstance found no ICD" in first


def test_reports_json_md_and_plots(full):
    files = {p.name for p in full.files}
    assert {"bench.json", "bench.md", "latency.png", "accuracy_vs_latency.png"} <= files
    assert any(f.startswith("confusion_tflite_int8") for f in files)
    doc = json.loads((full.out_dir / "bench.json").read_text())
    assert doc["schema"] == "edgecnn.bench/1" and {"created", "host", "settings", "rows"} <= set(doc)
    assert all(tuple(r) == ROW_KEYS for r in doc["rows"])
    assert set(ROW_KEYS) == set(CONTRACT_ROW_KEYS)
    md = (full.out_dir / "bench.md").read_text()
    assert "tflite_int8" in md and "skipped" in md and "invoke only" in md
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(table) == len(full.rows) + 2
    assert len({len(re.split(r"(?<!\\)\|", ln)) for ln in table}) == 1  # escaped pipes keep the columns aligned


def test_batch_throughput_and_fixed_batch_models(full):
    onnx = full.row("onnx_fp32", "onnxruntime")
    assert onnx.batch == 4  # dynamic batch: throughput really measured at batch 4
    tfl = full.row("tflite_fp32", "tflite")
    if tfl.batch == 1:  # the export fixes the TFLite batch at 1: the row says so instead of failing
        assert "throughput at batch 1" in tfl.note


def test_gate_fails_the_command_on_a_broken_int8_artifact(exported, tmp_path):
    args = ["--backends", "tflite", "--artifacts", "keras,tflite_int8", "--no-timing", "--max-acc-drop", "1",
            "--min-agreement", "0.95", "--max-class-drop", "20", "--out", tmp_path / "good"]
    good = cli("bench", exported, *args)
    assert good.exit_code == 0, good.output
    bad_run = broken_run(exported, tmp_path / "broken")
    bad = cli("bench", bad_run, *args[:-1], tmp_path / "bad")
    assert bad.exit_code == 1
    assert "parity gate failed: tflite_int8 on tflite" in bad.stderr and "accuracy drop" in bad.stderr
    assert re.search(r"\(\+\d+ errors against the reference on \d+ images; accuracy", bad.stderr), bad.stderr
    assert re.search(r"tflite_int8 on tflite \(xnnpack\): recall of \d drops [\d.]+ points > --max-class-drop 20 "
                     r"\(\d+ of its \d+ images lost\)", bad.stderr), bad.stderr
    doc = json.loads((tmp_path / "bad" / "bench.json").read_text())
    assert doc["violations"] and all(r["status"] == "ok" for r in doc["rows"])
    int8 = next(r for r in doc["rows"] if r["artifact"] == "tflite_int8")
    assert int8["class_drop"] > 20 and set(int8["worst_class"]) == {"name", "lost", "images"}


def test_a_class_that_an_accuracy_drop_hides_breaks_max_class_drop():
    """300 ok and 9 defect test images; the artifact loses 2 defects the reference finds: 0.65 points of accuracy
    pass --max-acc-drop 1, 22.22 points of the defect class's recall break --max-class-drop 10. A class the
    artifact does better on is no drop."""
    from edgecnn.bench.report import _worst
    from edgecnn.contracts.gates import Gates
    from edgecnn.contracts.parity import parity
    from edgecnn.contracts.rows import Row

    labels = np.array([1] * 300 + [0] * 9)
    ref = labels.copy()
    ref[300] = 1  # the reference misses one defect
    art = ref.copy()
    art[[301, 302]] = 1  # the artifact two more
    art[0] = 0  # and calls one ok a defect, which ok's recall pays, 0.33 points
    names = ["defect", "ok"]
    p = parity(np.eye(2)[art], np.eye(2)[ref], labels)
    assert p.accuracy_drop == pytest.approx(100 * 3 / 309, abs=1e-4)
    worst = p.row_fields(names)["worst_class"]
    assert (p.class_drop, worst) == (pytest.approx(200 / 9), {"name": "defect", "lost": 2, "images": 9})
    violations = Gates(max_acc_drop=1.0, max_class_drop=10).check(
        "tflite_int8 on tflite", accuracy_drop=p.accuracy_drop, class_drop=p.class_drop, worst=worst)
    assert [str(v) for v in violations] == ["tflite_int8 on tflite: recall of defect drops 22.22 points > "
                                            "--max-class-drop 10 (2 of its 9 images lost)"]
    from edgecnn.contracts.parity import smallest_class

    small = smallest_class(labels, names)  # thin evidence: on 9 images, one image is 11 points of recall
    assert small == {"name": "defect", "images": 9}
    assert Gates(max_class_drop=10).thin_evidence(309, small) == [
        "one image of defect is 11.11 points of its recall (9 test images), more than --max-class-drop 10: the gate "
        "breaks on a single image of it"]
    assert Gates(max_class_drop=12).thin_evidence(309, small) == Gates(max_acc_drop=1).thin_evidence(309, small) == []
    row = Row(artifact="tflite_int8", **p.row_fields(names))
    assert row.worst_class == {"name": "defect", "lost": 2, "images": 9} and _worst(row) == "defect -22.22 (2/9)"
    better = parity(np.eye(2)[ref], np.eye(2)[art], labels)  # the other way round: better on every class
    assert (better.class_drop, better.row_fields(names)["worst_class"]) == (0.0, None)
    assert _worst(Row(artifact="a", **better.row_fields(names))) == ""
    mixed = art.copy()
    mixed[300] = 0  # finds the defect the reference missed, and still loses two: net one
    assert parity(np.eye(2)[mixed], np.eye(2)[ref], labels).row_fields(names)["worst_class"] == \
        {"name": "defect", "lost": 1, "images": 9}


def test_timing_loop_is_bounded_by_count_and_time():
    from edgecnn.bench.timing import time_runs

    assert len(time_runs(lambda: None, warmup_runs=0, warmup_min_s=0, runs=7, min_s=0, max_s=5)) == 7
    assert len(time_runs(lambda: None, warmup_runs=0, warmup_min_s=0, runs=1, min_s=0.02, max_s=5)) > 1
    slow = time_runs(lambda: time.sleep(0.01), warmup_runs=0, warmup_min_s=0, runs=10_000, min_s=0, max_s=0.05)
    assert 1 <= len(slow) < 100


def test_native_stderr_is_captured():
    from edgecnn.native import native_stderr

    try:
        os.fstat(2)
    except OSError:
        pytest.skip("no stderr file descriptor")
    with native_stderr() as lines:
        os.write(2, b"INFO: [registry.cc:1] noise\n")
    assert lines == ["INFO: [registry.cc:1] noise"]


def test_quantization_round_trip_and_delegate_spec():
    from edgecnn.script.edgecnn_infer import dequantize, quantize
    from edgecnn.runtimes.tflite import parse_delegate
    from edgecnn.errors import ConfigError

    x = np.linspace(0, 1, 11, dtype=np.float32)
    q = quantize(x, np.int8, 1 / 255, -128)
    assert q.dtype == np.int8 and q.min() == -128 and q.max() == 127
    assert np.abs(dequantize(q, 1 / 255, -128) - x).max() <= 0.5 / 255 + 1e-7
    assert parse_delegate("libedgetpu.so.1") == ("libedgetpu.so.1", {})
    assert parse_delegate("/opt/libarmnn.so:backends=CpuAcc,logging-severity=info") == (
        "/opt/libarmnn.so", {"backends": "CpuAcc", "logging-severity": "info"})
    with pytest.raises(ConfigError):
        parse_delegate("lib.so:oops=1,novalue")


def test_model_file_on_its_runs_split(exported):
    r = bench(model=exported / "export" / "model_int8.tflite",
              config=BenchConfig(backends=("tflite",), timing=False, write=False)).rows
    assert [(x.artifact, x.status) for x in r] == [("tflite_int8", "ok")]
    assert r[0].agreement > 0.95 and r[0].accuracy_drop is not None  # the run's Keras model is the reference


def test_corrupt_truncated_and_missing_artifacts_are_failed_rows(exported, tmp_path):
    run = copy_run(exported, tmp_path / "run")
    exp = run / "export"
    data = (exp / "model_int8.tflite").read_bytes()
    (exp / "model_int8.tflite").write_bytes(data[: len(data) // 2])  # truncated
    (exp / "model_fp32.onnx").write_bytes(b"not an onnx model")  # corrupt
    (exp / "model_fp32.tflite").unlink()  # missing
    # --allow-modified lets the runtimes open them: each is a failed row with one line, the others go on
    res = cli("bench", run, "--backends", "tflite,onnxruntime", "--no-timing", "--allow-modified", "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    rows = {(r["artifact"], r["backend"]): r for r in json.loads((tmp_path / "o" / "bench.json").read_text())["rows"]}
    for key in [("tflite_int8", "tflite"), ("onnx_fp32", "onnxruntime"), ("tflite_fp32", "tflite")]:
        assert rows[key]["status"] == "failed" and rows[key]["reason"] and "\n" not in rows[key]["reason"], key
    assert "no such file" in rows[("tflite_fp32", "tflite")]["reason"]
    assert rows[("onnx_int8", "onnxruntime")]["status"] == "ok"  # the others go on
    strict = cli("bench", run, "--backends", "onnxruntime", "--no-timing", "--fail-on-error", "--allow-modified",
                 "--out", tmp_path / "p")
    assert strict.exit_code == 1 and "failed" in strict.stderr
    # without it (issue 10) the changed files are refused before any runtime opens them: failed rows, exit 2
    refused = cli("bench", run, "--backends", "tflite,onnxruntime", "--no-timing", "--out", tmp_path / "q")
    assert refused.exit_code == 2 and "sha256" in refused.stderr
    rows = {(r["artifact"], r["backend"]): r for r in json.loads((tmp_path / "q" / "bench.json").read_text())["rows"]}
    assert rows[("tflite_int8", "tflite")]["integrity"] == "modified (refused)"
    assert rows[("onnx_int8", "onnxruntime")]["status"] == "ok"


def test_model_input_that_does_not_match_the_data(exported, tmp_path):
    from conftest import make_npz

    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "m.tflite").write_bytes((exported / "export" / "model_int8.tflite").read_bytes())  # no manifest
    npz = make_npz(tmp_path / "d.npz", shape=(12, 12), classes=3)
    r = bench(model=lone / "m.tflite", data=str(npz), config=BenchConfig(backends=("tflite",), timing=False,
                                                                          write=False)).rows[0]
    assert r.status == "failed" and "takes input [8, 8, 1] but the data is [12, 12, 1]" in r.reason


@pytest.mark.parametrize("args, message", [
    (["--backends", "tflit"], "unknown backend 'tflit'"),
    (["--backends", "onnxruntime", "--providers", "cpu,bogus"], "unknown onnxruntime provider 'bogus'"),
    (["--artifacts", "tflite_int9"], "unknown artifact 'tflite_int9'"),
    (["--min-agreement", "99"], "fraction"),
    (["--delegate", "lib.so:a=1,novalue"], "not key=value"),
])
def test_bad_options_are_one_line(exported, args, message):
    res = cli("bench", exported, "--no-timing", *args)
    assert res.exit_code == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.output


def test_run_without_exports_and_missing_model_are_one_line(digits_run, tmp_path):
    res = cli("bench", digits_run)
    assert res.exit_code == 2 and "no exports" in res.stderr and "edgecnn export" in res.stderr
    res = cli("bench", "--model", tmp_path / "nope.tflite", "--data", "digits")
    assert res.exit_code == 2 and "no such model file" in res.stderr
    (tmp_path / "m.pt").write_bytes(b"x")
    res = cli("bench", "--model", tmp_path / "m.pt", "--data", "digits")
    assert res.exit_code == 2 and "unknown model format" in res.stderr


def test_unavailable_provider_and_unloadable_delegate_are_rows(exported, tmp_path):
    (tmp_path / "libnot.so").write_bytes(b"not a library")
    r = bench(exported, config=BenchConfig(backends=("tflite", "onnxruntime"), providers=("cuda", "cpu"),
                                           delegate=str(tmp_path / "libnot.so"), timing=False, write=False,
                                           artifacts=("tflite_int8", "onnx_int8")))
    rows = {(x.artifact, x.backend, x.accelerator): x for x in r.rows}
    cuda = rows[("onnx_int8", "onnxruntime", "CUDAExecutionProvider")]
    if cuda.status == "skipped":
        assert "CUDAExecutionProvider is not in this onnxruntime build" in cuda.reason
    assert rows[("onnx_int8", "onnxruntime", "CPUExecutionProvider")].status == "ok"
    tfl = next(x for x in r.rows if x.backend == "tflite")
    assert tfl.status == "failed" and "did not load" in tfl.reason


def test_remote_rows_join_the_table_with_parity(exported, monkeypatch):
    """`--remote`: each host's rows (from edgecnn.device.remote.run_remote) are merged, named like the local
    artifacts and compared with the local Keras reference; a dead host is one failed row."""
    import edgecnn.device.remote as remote
    from edgecnn.runtimes import RUNTIMES as BACKENDS

    def fake_run_remote(host, models, manifest, npz, **kw):
        if host.endswith(":1"):
            return [{"artifact": "*", "status": "failed", "device": host, "reason": "cannot reach " + host}]
        d = np.load(npz)
        rows = []
        for m in models:
            sess, _ = BACKENDS["tflite"].load(Path(m), BenchConfig())
            probs = sess.predict(d["x"])
            rows.append({"artifact": Path(m).stem, "file": Path(m).name, "status": "ok", "device": f"Pi 5 ({host})",
                         "accuracy": float(np.mean(probs.argmax(1) == d["y"])), "probs": probs.tolist(),
                         "threads": kw["threads"]})
        return rows

    monkeypatch.setattr(remote, "run_remote", fake_run_remote)
    res = bench(exported, config=BenchConfig(backends=("keras", "tflite"), timing=False, write=False,
                                             remote=("pi@board:22", "pi@dead:1")))
    boards = [r for r in res.rows if r.device and not r.device.startswith("local")]
    assert [(r.artifact, r.status) for r in boards] == [("tflite_fp32", "ok"), ("tflite_int8", "ok"), ("*", "failed")]
    local = {r.artifact: r for r in res.rows if r.backend == "tflite" and r.device.startswith("local")}
    for r in boards[:2]:
        assert r.accuracy == local[r.artifact].accuracy and r.agreement == local[r.artifact].agreement
        assert r.accuracy_drop is not None and r.size_bytes > 0 and r.device == "Pi 5 (pi@board:22)"
    assert "cannot reach pi@dead:1" in boards[2].reason


def test_an_int8_row_far_below_its_export_figures_on_a_saturating_cpu_says_why(monkeypatch):
    """An onnxruntime or OpenVINO int8 row more than 2 points of agreement below what export verified, on an x86 CPU
    whose int8 kernels saturate (AVX2, no VNNI), carries a note naming the cause; close figures, float models and
    other CPUs carry none."""
    from types import SimpleNamespace

    import edgecnn.runtimes.base as base
    from edgecnn.bench.core import _saturated

    int8 = SimpleNamespace(precision="int8", parity={"top1_agreement": 0.9638})
    monkeypatch.setattr(base, "saturation_note", lambda: "this CPU has AVX2 and no VNNI, where ... saturate; ")
    note = _saturated(int8, 0.8245)
    assert note.startswith("agreement 0.8245 against 0.9638 where export verified it: this CPU has AVX2")
    assert "7-bit weights avoid it" in note
    assert _saturated(int8, 0.95) is None
    assert _saturated(SimpleNamespace(precision="fp32", parity={"top1_agreement": 1.0}), 0.5) is None
    monkeypatch.setattr(base, "saturation_note", lambda: "")
    assert _saturated(int8, 0.8245) is None
