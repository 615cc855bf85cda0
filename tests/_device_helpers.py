"""Shared by the device tests: the session's digits run exported by `edgecnn export` with its test split and
`edgecnn bench` tflite rows, LiteRT called directly, and an import blocker that makes chosen top-level packages
(tensorflow, edgecnn, ai_edge_litert, ...) fail to import."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgecnn.device import script_path

PREP = {"image_size": [8, 8], "channels": 1, "pixel_max": 16.0, "resize": "bilinear", "orientation": "exif"}
_CACHE: dict = {}

BLOCKER = '''
import os, sys
_blocked = set(filter(None, os.environ.get("EDGECNN_BLOCK_IMPORTS", "").split(",")))
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, _Block())
'''


def device_export(digits_run, tmp_path_factory) -> dict:
    """The session's digits run exported by `edgecnn export` (shared with the bench tests), its test split
    as .npz files (preprocessed floats, and raw 0..16 pixels), and the tflite rows of `edgecnn bench` on it."""
    if "export" in _CACHE:
        return _CACHE["export"]
    from bench_artifacts import exported_run

    from edgecnn.bench import BenchConfig, bench
    from edgecnn.rundir import open_run

    run = exported_run(digits_run, tmp_path_factory.mktemp("device-export"))
    ds = open_run(run).load_dataset()
    assert ds.preprocessing == PREP, ds.preprocessing  # so raw pixels are x * 16 exactly
    out = tmp_path_factory.mktemp("device-data")
    raw = np.round(ds.x_test[..., 0] * PREP["pixel_max"]).astype(np.uint8)
    np.savez(out / "test_raw.npz", x=raw, y=ds.y_test)
    np.savez(out / "test_pre.npz", x=ds.x_test, y=ds.y_test, preprocessed=np.array(1))
    res = bench(run, config=BenchConfig(backends=("tflite",), artifacts=("tflite_fp32", "tflite_int8"), timing=False,
                                        write=False))
    exp = run / "export"
    _CACHE["export"] = {
        "run": run, "dir": exp, "fp32": exp / "model_fp32.tflite", "int8": exp / "model_int8.tflite",
        "manifest": exp / "manifest.json", "raw_npz": out / "test_raw.npz", "pre_npz": out / "test_pre.npz",
        "x": ds.x_test, "y": ds.y_test, "raw": raw,
        "bench": {r.artifact: r for r in res.rows if r.backend == "tflite"},
    }
    return _CACHE["export"]


def litert_probs(model_path, x: np.ndarray) -> np.ndarray:
    """Dequantized probabilities from LiteRT's Interpreter called directly, one image at a time."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model_path))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    (si, zi), (so, zo) = i["quantization"], o["quantization"]
    out = []
    for k in range(len(x)):
        xk = x[k:k + 1]
        if i["dtype"] != np.float32:
            xk = np.clip(np.round(xk / np.float32(si) + zi), -128, 127).astype(i["dtype"])
        it.set_tensor(i["index"], xk)
        it.invoke()
        q = it.get_tensor(o["index"])
        out.append(q.astype(np.float32) if q.dtype == np.float32 else (q.astype(np.float32) - zo) * np.float32(so))
    return np.concatenate(out)


def blocked_python(tmp_dir: Path, *blocked: str) -> tuple:
    """(argv prefix, env) for this test's Python with `blocked` top-level packages failing to import."""
    site = Path(tmp_dir) / "blocker"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=str(site), EDGECNN_BLOCK_IMPORTS=",".join(blocked), PYTHONNOUSERSITE="1")
    return [sys.executable], env


def run_script(*args, python=(sys.executable,), env=None, timeout=120) -> subprocess.CompletedProcess:
    """Run the on-device script as a user would (a fresh process)."""
    return subprocess.run([*python, str(script_path()), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)
