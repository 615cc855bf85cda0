"""Integrity (issue 10): an altered or misdescribed artifact never yields predictions, in the on-device script,
predict and bench; manifest entries never leave their folder."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from bench_artifacts import copy_run, exported_run
from edgecnn.bench import BenchConfig, bench
from edgecnn.device import script_path


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    return exported_run(digits_run, tmp_path_factory.mktemp("integrity"))


@pytest.fixture(scope="module")
def npz(exported, tmp_path_factory):
    from edgecnn.rundir import open_run

    ds = open_run(exported).load_dataset()
    path = tmp_path_factory.mktemp("npz") / "test.npz"
    np.savez(path, x=ds.x_test[:16], y=ds.y_test[:16], preprocessed=np.array(1))
    return path


def cli(*args):
    from edgecnn.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def mutants(data: bytes, n: int, seed: int) -> list:
    """n distinct corruptions of `data`: byte flips, truncations, zeroed ranges, appended garbage."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        b = bytearray(data)
        kind = len(out) % 4
        if kind == 0:
            for i in rng.integers(0, len(b), size=int(rng.integers(1, 8))):
                b[i] ^= int(rng.integers(1, 256))
        elif kind == 1:
            b = b[: int(rng.integers(0, len(b)))]
        elif kind == 2:
            start = int(rng.integers(0, len(b)))
            b[start:start + int(rng.integers(1, 4096))] = bytes(min(len(b) - start, 4096))
        else:
            b += rng.integers(0, 256, size=int(rng.integers(1, 512)), dtype=np.uint8).tobytes()
        if bytes(b) != data:
            out.append(bytes(b))
    return out


def _fuzz(exported, npz, tmp_path, n):
    """n mutants of model_int8.tflite and of model_fp32.onnx, each beside the original manifest."""
    from edgecnn.contracts.manifest import read_manifest, write_manifest
    from edgecnn.errors import IntegrityError
    from edgecnn.predict import predict

    run = copy_run(exported, tmp_path / "run")
    exp = run / "export"
    m = read_manifest(exp)
    arts = dict(m.artifacts)
    produced = []
    for name, seed in (("tflite_int8", 1), ("onnx_fp32", 2)):
        entry = m.artifacts[name]
        for i, data in enumerate(mutants((exp / entry.file).read_bytes(), n, seed)):
            file = f"m{i:03d}_{entry.file}"
            (exp / file).write_bytes(data)
            arts[f"{name}_m{i:03d}"] = dataclasses.replace(entry, file=file)  # the original's sha256
            produced.append(file)
    write_manifest(exp, dataclasses.replace(m, artifacts=arts))
    # the on-device script (TFLite mutants): exit 2, one line, no predictions
    for file in [f for f in produced if f.endswith(".tflite")]:
        p = subprocess.run([sys.executable, str(script_path()), "--model", str(exp / file), "--npz", str(npz),
                            "--json"], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and "sha256" in p.stderr and not p.stdout.strip(), (file, p.stderr[-300:])
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
        # the same line from a board: bench reads it as a refusal, not as any failure
        from edgecnn.bench.remote import _adapt
        from edgecnn.device.remote import _script_error

        def board_row(reason):
            return _adapt({"artifact": "m", "file": file, "status": "failed", "reason": reason}, {}, None, None)

        assert board_row(_script_error(p.stderr)).integrity == "modified (refused)", p.stderr
        assert board_row("exit status 1").integrity is None
    # predict: refused before any runtime opens the file
    for file in produced:
        with pytest.raises(IntegrityError, match="sha256"):
            predict(exp / file, [npz])
    # bench: every mutant a failed row, nothing measured from it, and the run is not green
    res = bench(run, config=BenchConfig(backends=("tflite", "onnxruntime"), timing=False, write=False))
    rows = {r.file: r for r in res.rows}
    for file in produced:
        r = rows[file]
        assert r.status == "failed" and r.integrity == "modified (refused)" and r.accuracy is None, file
    assert not res.ok and len(res.refused) == len(produced)


def test_fuzzed_models_never_yield_predictions(exported, npz, tmp_path):
    _fuzz(exported, npz, tmp_path, 20)


@pytest.mark.slow
def test_fuzzed_models_never_yield_predictions_full(exported, npz, tmp_path):
    _fuzz(exported, npz, tmp_path, 100)


def test_allow_modified_runs_it_and_the_row_says_so(exported, npz, tmp_path):
    from edgecnn.predict import predict

    run = copy_run(exported, tmp_path / "run")
    model = run / "export" / "model_int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of a weight
    model.write_bytes(bytes(data))
    assert cli("predict", model, npz).exit_code == 2
    assert len(predict(model, [npz], allow_modified=True)) == 16
    p = subprocess.run([sys.executable, str(script_path()), "--model", str(model), "--npz", str(npz), "--json",
                        "--allow-modified"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and json.loads(p.stdout)["integrity"] == "modified (allowed)"
    res = bench(run, config=BenchConfig(backends=("tflite",), artifacts=("tflite_int8",), timing=False, write=False,
                                        allow_modified=True))
    assert res.rows[0].status == "ok" and res.rows[0].integrity == "modified (allowed)"
    assert "--allow-modified" in res.rows[0].note


def test_a_model_without_a_manifest_runs_unverified(exported, npz, tmp_path):
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(exported / "export" / "model_int8.tflite", lone / "m.tflite")
    res = bench(model=lone / "m.tflite", data="digits", config=BenchConfig(backends=("tflite",), timing=False,
                                                                           write=False))
    assert res.rows[0].status == "ok" and res.rows[0].integrity == "unverified" and "unverified" in res.rows[0].note
    ok = bench(exported, config=BenchConfig(backends=("tflite",), artifacts=("tflite_int8",), timing=False,
                                            write=False))
    assert ok.rows[0].integrity == "verified"


@pytest.mark.parametrize("file", ["../../secret.tflite", "/etc/passwd", "sub/model.tflite", "..", ""])
def test_manifest_entries_never_leave_their_folder(exported, tmp_path, file):
    run = copy_run(exported, tmp_path / "run")
    mpath = run / "export" / "manifest.json"
    m = json.loads(mpath.read_text())
    m["artifacts"]["tflite_int8"]["file"] = file
    mpath.write_text(json.dumps(m))
    res = cli("bench", run, "--backends", "tflite", "--no-timing", "--no-plots")
    assert res.exit_code == 2 and "plain file names" in res.output and "Traceback" not in res.output
    p = subprocess.run([sys.executable, str(script_path()), "--model", str(run / "export" / "model_int8.tflite"),
                        "--manifest", str(mpath), "--bench", "1"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "plain file names" in p.stderr


def test_a_symlink_out_of_the_export_folder_is_refused(exported, tmp_path):
    run = copy_run(exported, tmp_path / "run")
    outside = tmp_path / "elsewhere.tflite"
    shutil.move(run / "export" / "model_int8.tflite", outside)
    os.symlink(outside, run / "export" / "model_int8.tflite")
    res = cli("bench", run, "--backends", "tflite", "--no-timing", "--no-plots")
    assert res.exit_code == 2 and "outside the export folder" in res.output


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(class_names=m["class_names"][:5]), "names 5 classes"),
    (lambda m: m["preprocessing"].update(image_size=[20, 20]), "gives 20x20x1 images"),
    (lambda m: m["artifacts"]["tflite_int8"]["inputs"][0]["quantization"].update(scale=0.5), "quantization"),
    (lambda m: m["artifacts"]["tflite_int8"]["inputs"][0].update(dtype="uint8"), "uint8"),
])
def test_bench_and_predict_check_the_manifest_against_the_model(exported, npz, tmp_path, change, message):
    from edgecnn.errors import ConfigError
    from edgecnn.predict import predict

    run = copy_run(exported, tmp_path / "run")
    mpath = run / "export" / "manifest.json"
    m = json.loads(mpath.read_text())
    change(m)
    mpath.write_text(json.dumps(m))
    res = bench(run, config=BenchConfig(backends=("tflite",), artifacts=("tflite_int8",), timing=False, write=False))
    assert res.rows[0].status == "failed" and res.rows[0].integrity == "misdescribed" and message in res.rows[0].reason
    assert not res.ok
    with pytest.raises(ConfigError, match="wrong manifest"):
        predict(run / "export" / "model_int8.tflite", [npz])
