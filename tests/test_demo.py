"""`edgecnn demo`, the README's main command: train -> export -> bench -> on-device script, in one process."""
from __future__ import annotations

from click.testing import CliRunner

from edgecnn.cli import main
from edgecnn.io import read_json


def test_demo_runs_the_whole_pipeline_and_passes_its_gates(tmp_path):
    out = tmp_path / "demo"
    r = CliRunner().invoke(main, ["demo", "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    for stage in ("[1/4] train", "[2/4] export", "[3/4] bench", "[4/4] on the device", "parity gates passed"):
        assert stage in r.output
    assert read_json(out / "metrics.json")["test_accuracy"] >= 0.99
    manifest = read_json(out / "export" / "manifest.json")
    assert set(manifest["artifacts"]) == {"tflite_fp32", "tflite_int8", "onnx_fp32", "onnx_int8"}
    rows = read_json(out / "bench" / "bench.json")["rows"]
    ok = {(row["artifact"], row["backend"]) for row in rows if row["status"] == "ok"}
    assert {("keras", "keras"), ("tflite_int8", "tflite"), ("onnx_int8", "onnxruntime")} <= ok
    samples = sorted((out / "samples").glob("digit_*.png"))
    assert len(samples) == 3
    for path in samples:  # the on-device script's answer for each sample is its true label
        label = path.stem.split("_")[1]
        assert f"{path}: {label} (" in r.output
    # issue 13: the printed device command runs as printed; the samples folder and the report are named
    import shlex
    import subprocess

    printed = next(ln[2:] for ln in r.output.splitlines() if ln.startswith("$ "))
    ran = subprocess.run(shlex.split(printed), capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and f"{samples[0]}: " in ran.stdout, ran.stderr
    assert str(out / "samples") in r.output and str(out / "report.html") in r.output
    import _browser

    if _browser.CHROMIUM:  # the done-when of issue 13: the demo's report renders with every image drawn
        seen = _browser.load(out / "report.html")
        assert seen["images"] >= 6 and seen["broken"] == 0 and seen["errors"] == 0 and not seen["console"], seen
        assert seen["overflow"] == 0, seen  # the bench table (every backend's row) fits a 1300-pixel window


def test_demo_refuses_a_used_run_directory_in_one_line(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "model.keras").write_text("x")
    r = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "used")])
    assert r.exit_code == 2 and r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1
