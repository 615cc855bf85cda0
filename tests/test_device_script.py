"""The on-device script as a board runs it: a fresh Python in which TensorFlow (and edgecnn) cannot be imported,
compared with LiteRT's Interpreter called directly; bench rows; one-line errors for bad models, manifests,
images and a missing runtime."""
from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from _device_helpers import PREP, blocked_python, device_export, litert_probs, run_script
from edgecnn.device import script_path
from edgecnn.script.edgecnn_infer import LATENCY_KEYS, preprocess
from edgecnn.device.remote import ROW_KEYS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def export(digits_run, tmp_path_factory):
    return device_export(digits_run, tmp_path_factory)


@pytest.fixture
def board(tmp_path):
    """(python argv, env) of a Python where tensorflow and edgecnn do not import."""
    return blocked_python(tmp_path, "tensorflow", "edgecnn")


def _json(p):
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_exported_model_without_tensorflow_matches_bench_and_litert(export, board, precision):
    python, env = board
    model = export[precision]
    direct = litert_probs(model, export["x"])
    pre = _json(run_script("--model", model, "--npz", export["pre_npz"], "--json", "--probs", python=python, env=env))
    assert pre["runtime"].startswith("ai_edge_litert ") and pre["artifact"] == f"tflite_{precision}"
    assert pre["predictions"] == direct.argmax(1).tolist()
    np.testing.assert_array_equal(np.asarray(pre["probs"], np.float32), direct)
    bench_row = export["bench"][f"tflite_{precision}"]
    assert bench_row.status == "ok" and pre["accuracy"] == pytest.approx(bench_row.accuracy, abs=1e-12)
    assert pre["accuracy"] > 0.9
    # raw pixels in the npz: the manifest's pixel_max gives the same inputs, so the same outputs
    raw = _json(run_script("--model", model, "--npz", export["raw_npz"], "--json", python=python, env=env))
    assert raw["predictions"] == pre["predictions"]
    # `edgecnn export` ships this very script next to the artifacts
    assert (export["dir"] / "edgecnn_infer.py").read_bytes() == script_path().read_bytes()


def test_bench_json_is_a_bench_row(export, board):
    python, env = board
    row = _json(run_script("--model", export["int8"], "--npz", export["pre_npz"], "--bench", 7, "--warmup", 2,
                           "--threads", 2, "--json", python=python, env=env))
    assert set(ROW_KEYS) <= set(row)
    assert (row["status"], row["backend"], row["format"], row["precision"]) == ("ok", "tflite", "tflite", "int8")
    assert set(row["latency"]) == set(LATENCY_KEYS) and row["latency"]["runs"] == 7
    assert row["latency"]["min_ms"] <= row["latency"]["median_ms"] <= row["latency"]["max_ms"]
    assert row["threads"] == 2 and row["timing_includes_copies"] is False and row["cpu_count"] == os.cpu_count()
    assert row["load_ms"] > 0 and row["first_ms"] > 0 and row["size_bytes"] == export["int8"].stat().st_size
    assert row["device"] and row["n"] == len(export["y"]) and len(row["predictions"]) == len(export["y"])
    assert "results" not in row


def test_bench_on_a_board_follows_the_time_bounds_of_edgecnn_bench(export, board):
    """Board rows are timed by the same rule as local rows: at least N runs and at least --min-time seconds."""
    python, env = board
    row = _json(run_script("--model", export["int8"], "--npz", export["pre_npz"], "--bench", 3, "--warmup", 1,
                           "--min-time", 0.2, "--json", python=python, env=env))
    lat = row["latency"]
    assert lat["runs"] > 3 and lat["runs"] * lat["mean_ms"] >= 150  # 3 runs of a 10-us model is not 0.2 s
    capped = _json(run_script("--model", export["int8"], "--npz", export["pre_npz"], "--bench", 10**9,
                              "--max-time", 0.1, "--json", python=python, env=env))
    assert capped["latency"]["runs"] < 10**9


def test_image_files_grey_and_colour_top_k(export, tmp_path, board):
    from PIL import Image

    python, env = board
    grey = (export["raw"][:3].astype(np.float32) * 255 / 16).round().astype(np.uint8)
    files = []
    for i, a in enumerate(grey):
        Image.fromarray(a, "L").save(tmp_path / f"g{i}.png")
        files.append(tmp_path / f"g{i}.png")
    Image.fromarray(np.repeat(grey[0][..., None], 3, axis=-1), "RGB").save(tmp_path / "rgb.png")
    Image.fromarray(grey[1], "L").resize((16, 16), Image.NEAREST).save(tmp_path / "big.png")
    files += [tmp_path / "rgb.png", tmp_path / "big.png"]
    out = _json(run_script("--model", export["int8"], *files, "--top-k", 3, "--json", python=python, env=env))
    prep = dict(PREP, pixel_max=255.0)  # image files are 8-bit
    big = np.asarray(Image.open(tmp_path / "big.png"))
    x = np.concatenate([preprocess(grey, prep), preprocess(grey[:1, ..., None].repeat(3, -1), prep),
                        preprocess(big[None], prep)])
    want = litert_probs(export["int8"], x).argmax(1)
    got = [r["index"] for r in out["results"]]
    assert got == want.tolist() and [r["input"] for r in out["results"]] == [str(f) for f in files]
    for r in out["results"]:
        conf = [t["confidence"] for t in r["top_k"]]
        assert len(conf) == 3 and conf == sorted(conf, reverse=True) and r["label"] == r["top_k"][0]["label"]
    assert got[3] == got[0]  # an RGB copy of a grey image is read as the same digit
    text = run_script("--model", export["int8"], files[0], python=python, env=env)
    assert text.returncode == 0 and text.stdout.startswith(f"{files[0]}: {out['results'][0]['label']} (")


def _bad_files(d: Path, export) -> dict:
    """name -> (argv, expected phrase) for every user error the script must report in one line."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (d / "random.tflite").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (d / "truncated.tflite").write_bytes(export["int8"].read_bytes()[:2000])
    (d / "empty.tflite").write_bytes(b"")
    manifest = json.loads(export["manifest"].read_text())
    (d / "no_prep.json").write_text(json.dumps({"class_names": manifest["class_names"]}))
    (d / "other_size.json").write_text(json.dumps(dict(manifest, preprocessing=dict(
        manifest["preprocessing"], image_size=[28, 28]))))
    (d / "other_classes.json").write_text(json.dumps(dict(manifest, class_names=["a", "b", "c"])))
    (d / "not_json.json").write_text("{ not json")
    Image.fromarray(np.zeros((8, 8), np.float32)).save(d / "float.tiff")
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(d / "deep.png")
    Image.fromarray(np.zeros((12, 12), np.uint8), "L").save(d / "big.png")
    (d / "junk.png").write_bytes(b"not an image")
    m, mf, npz = str(export["int8"]), str(export["manifest"]), str(export["pre_npz"])
    return {
        "random model": (["--model", d / "random.tflite", "--manifest", mf, "--npz", npz], "not a usable TFLite model"),
        "truncated model": (["--model", d / "truncated.tflite", "--manifest", mf, "--npz", npz],
                            "not a usable TFLite model"),
        "empty model": (["--model", d / "empty.tflite", "--manifest", mf, "--npz", npz], "not a usable TFLite model"),
        "missing model": (["--model", d / "nope.tflite", "--npz", npz], "no such model file"),
        "manifest without preprocessing": (["--model", m, "--manifest", d / "no_prep.json", "--npz", npz],
                                           "manifest lacks preprocessing.image_size"),
        "manifest of another input size": (["--model", m, "--manifest", d / "other_size.json", "--npz", npz],
                                           "gives 28x28x1 images but model_int8.tflite takes 8x8x1"),
        "manifest of other classes": (["--model", m, "--manifest", d / "other_classes.json", "--npz", npz],
                                      "names 3 classes but model_int8.tflite outputs 10"),
        "manifest not json": (["--model", m, "--manifest", d / "not_json.json", "--npz", npz], "not a JSON manifest"),
        "float image": (["--model", m, d / "float.tiff"], "cannot be converted to 8-bit"),
        "16-bit image": (["--model", m, d / "deep.png"], "16-bit"),
        "unreadable image": (["--model", m, d / "junk.png"], "not a readable image"),
        "image of another size": (["--model", m, "--no-resize", d / "big.png"], "image is 12x12 but the model takes 8x8"),
        "raw npz without manifest": (["--model", d / "copy.tflite", "--npz", export["raw_npz"]], "--pixel-max"),
        "delegate that does not load": (["--model", m, "--npz", npz, "--delegate", d / "libnope.so"], "did not load"),
    }


@pytest.mark.parametrize("flag,kernels", [((), "xnnpack"), (("--no-xnnpack",), "builtin"),
                                          (("--reference-kernels",), "reference")])
def test_script_checks_its_accuracy_against_the_manifest_for_its_kernels(export, board, tmp_path, flag, kernels):
    python, env = board
    out = _json(run_script("--model", export["int8"], "--npz", export["pre_npz"], "--json", *flag, python=python,
                           env=env))
    assert out["accelerator"] == kernels
    assert out["manifest_accuracy"] == out["accuracy"] and out["note"] is None
    assert out["manifest_predictions"] == "same"  # the test split's top-1 digest, recorded per kernel set
    # a manifest that claims other figures for these kernels: the script says so (it still runs)
    copy = tmp_path / "export"
    shutil.copytree(export["dir"], copy)
    m = json.loads((copy / "manifest.json").read_text())
    entry = m["artifacts"]["tflite_int8"]
    record = entry["parity"] if kernels == "xnnpack" else entry["parity_kernels"][kernels]
    record["accuracy"] -= 0.25
    (copy / "manifest.json").write_text(json.dumps(m))
    p = run_script("--model", copy / "model_int8.tflite", "--npz", export["pre_npz"], *flag, python=python, env=env)
    assert p.returncode == 0, p.stderr
    assert f"(the manifest's for {kernels}: " in p.stdout
    assert "differs from the manifest's" in p.stdout and "for these kernels" in p.stdout
    assert "top-1 predictions differ" not in p.stdout  # the predictions are still the recorded ones
    record["predictions_sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(m))
    out = _json(run_script("--model", copy / "model_int8.tflite", "--npz", export["pre_npz"], "--json", *flag,
                           python=python, env=env))
    assert out["manifest_predictions"] == "differ" and f"differ from the ones export recorded for the {kernels}" \
        in out["note"]


def test_bench_says_when_a_row_is_not_what_export_recorded(export, tmp_path):
    from edgecnn.bench import BenchConfig, bench

    copy = tmp_path / "run"
    shutil.copytree(export["run"], copy)
    m = json.loads((copy / "export" / "manifest.json").read_text())
    m["artifacts"]["tflite_int8"]["parity_kernels"]["builtin"]["top1_agreement"] = 0.5
    (copy / "export" / "manifest.json").write_text(json.dumps(m))
    rows = bench(copy, config=BenchConfig(backends=("tflite",), artifacts=("tflite_int8",), xnnpack=False,
                                          timing=False, write=False)).rows
    assert rows[0].status == "ok" and "differs from the manifest's figures for the builtin kernels" in rows[0].note
    rows = bench(copy, config=BenchConfig(backends=("tflite",), artifacts=("tflite_int8",), timing=False,
                                          write=False)).rows  # XNNPACK: its figures were not touched
    assert "manifest" not in (rows[0].note or "")


def test_user_errors_are_one_line_exit_2(export, tmp_path, board):
    python, env = board
    (tmp_path / "copy.tflite").write_bytes(export["int8"].read_bytes())  # no manifest beside it
    for name, (argv, phrase) in _bad_files(tmp_path, export).items():
        p = run_script(*argv, python=python, env=env)
        errors = [ln for ln in p.stderr.splitlines() if "error:" in ln]
        assert p.returncode == 2, (name, p.stderr)
        assert len(errors) == 1 and phrase in errors[0], (name, p.stderr)
        assert "Traceback" not in p.stderr, name


def test_missing_runtime_names_the_package(export, tmp_path):
    python, env = blocked_python(tmp_path, "tensorflow", "ai_edge_litert", "tflite_runtime")
    p = run_script("--model", export["int8"], "--npz", export["pre_npz"], python=python, env=env)
    assert p.returncode == 2 and "pip install ai-edge-litert" in p.stderr and "Traceback" not in p.stderr


def test_one_file_python39_no_edgecnn_imports():
    src = script_path().read_text()
    tree = ast.parse(src, feature_version=(3, 9))  # no syntax newer than Python 3.9
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "edgecnn" not in imported
    assert imported - {"__future__", "argparse", "hashlib", "json", "os", "platform", "sys", "time", "importlib",
                       "resource", "gc"} == {"numpy", "PIL", "ai_edge_litert", "tflite_runtime", "tensorflow",
                                             "pillow_heif"}  # optional, as each runtime is: HEIC photos
    tool = REPO / "tools" / "edgecnn_infer.py"
    assert tool.is_symlink() and tool.resolve() == script_path()


def test_a_folder_is_read_a_chunk_at_a_time(export, tmp_path, monkeypatch):
    """A board given a folder reads IMAGE_CHUNK files at a time: it held every image as float32 at once (5,000
    224x224 RGB photos: 3 GB, more than a 2 GB Pi has). Same results, in order."""
    import weakref

    from PIL import Image

    import edgecnn.script.edgecnn_infer as script

    grey = (export["raw"][:10].astype(np.float32) * 255 / 16).round().astype(np.uint8)
    for i, a in enumerate(grey):
        Image.fromarray(a, "L").save(tmp_path / f"{i:02d}.png")
    whole = script.run(script.parse_args(["--model", str(export["int8"]), str(tmp_path), "--json"]))
    alive, peak = set(), [0]
    real = script.read_image

    def tracked(*args, **kw):
        a = real(*args, **kw)
        alive.add(id(a))
        weakref.finalize(a, alive.discard, id(a))
        peak[0] = max(peak[0], len(alive))
        return a

    monkeypatch.setattr(script, "read_image", tracked)
    monkeypatch.setattr(script, "IMAGE_CHUNK", 3)
    chunked = script.run(script.parse_args(["--model", str(export["int8"]), str(tmp_path), "--json"]))
    assert chunked["predictions"] == whole["predictions"] and chunked["n"] == 10
    assert [r["input"] for r in chunked["results"]] == sorted(str(p) for p in tmp_path.glob("*.png"))
    assert peak[0] <= 3 + 1, peak  # a chunk, and the timed first image
