"""The scripts under benchmarks/ still run: each once with the smallest settings, in its own process, printing
its side-by-side ratio. No test runs them otherwise, and a renamed option, a changed progress line or a moved
function would break them unseen until the next person measures. The figures of a smoke run mean nothing (the
targets hold at full size, on a quiet machine): only that the script ends well and prints a finite ratio."""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _sshd import SSHD

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

CASES = {
    "bench_vs_litert_tool": (["--models", "digits", "--repeats", "1", "--runs", "30", "--warmup", "5"],
                             r"^digits\s+int8(?:\s+\S+){4}\s+([\d.]+)\s+([\d.]+)$"),
    "int8_vs_fp32": (["--models", "digits", "--threads", "1", "--repeats", "1", "--runs", "20"],
                     r"^digits\s+tflite\s+1\s+[\d.]+\s+[\d.]+\s+([\d.]+)$"),
    "train_throughput": (["--epochs", "2", "--repeats", "1"], r"^median epoch:.*ratio ([\d.]+)"),
    "data_scale": (["--scale", "0.02", "--speed-epochs", "2", "--work", "{tmp}"],
                   r"^1k 32x32x3 \.npz, s/epoch\s+([\d.]+)"),
    "kernel_parity": (["--size", "32", "--images", "40"], r"^\s+ratio ([\d.]+) .*\n\s+figures identical: yes$"),
    "quant_recipes": (["--archs", "simple_cnn", "--recipes", "ptq,auto", "--image-size", "8", "--work", "{tmp}"],
                      r"^simple_cnn\s+auto\s+([\d.]+) / [\d.]+ .*100\.0%"),
    "tune_workers": (["--trials", "2", "--epochs", "1", "--repeats", "1"], r"^ratio 2 workers / 1 worker: ([\d.]+)"),
    "fleet_bench": (["--runs", "5", "--repeat", "1"], r"ratio ([\d.]+) \(target <= 1\.5"),
}


def test_every_benchmark_script_has_a_smoke_case():
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_")}
    assert scripts == set(CASES), scripts ^ set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_benchmark_runs_and_prints_its_ratio(name, tmp_path):
    if name == "fleet_bench" and not (SSHD and shutil.which("ssh") and shutil.which("scp")):
        pytest.skip("needs OpenSSH (apt-get install openssh-server openssh-client)")
    args, pattern = CASES[name]
    cmd = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *(a.format(tmp=tmp_path) for a in args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    m = re.search(pattern, p.stdout, re.M)
    assert m, p.stdout[-2000:]
    assert all(math.isfinite(float(v)) and float(v) > 0 for v in m.groups()), m.groups()
