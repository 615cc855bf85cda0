"""aarch64 parity: the on-device script under qemu-aarch64 user-mode emulation (tflite-runtime 2.14 on an arm64
Python 3.11) against the same script on this machine (LiteRT). Needs the root of tools/setup_aarch64_root.sh."""
from __future__ import annotations

import json

import pytest

from _device_helpers import device_export
from edgecnn.device.emulate import MIN_AGREEMENT, emulated_parity, find_root, main, qemu_binary
from edgecnn.device.remote import ROW_KEYS
from edgecnn.errors import ConfigError

pytestmark = pytest.mark.emulated
needs_root = pytest.mark.skipif(
    find_root() is None or qemu_binary() is None,
    reason="no aarch64 root or qemu-aarch64-static: run tools/setup_aarch64_root.sh (about 15 s, needs apt and pip)")


@pytest.fixture(scope="session")
def export(digits_run, tmp_path_factory):
    return device_export(digits_run, tmp_path_factory)


@needs_root
def test_int8_predictions_survive_aarch64(export, capsys):
    code = main(["--model", str(export["int8"]), "--manifest", str(export["manifest"]), "--npz",
                 str(export["raw_npz"]), "--runs", "3", "--json"])
    row = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(ROW_KEYS) <= set(row)
    assert row["device"] == "aarch64 (emulated)" and row["machine"] == "aarch64"
    assert row["runtime"].startswith("tflite_runtime 2.14") and row["reference_runtime"].startswith("ai_edge_litert")
    assert row["n"] == len(export["y"]) and row["agreement"] >= MIN_AGREEMENT
    assert row["differ"] == round((1 - row["agreement"]) * row["n"])
    assert abs(row["accuracy"] - row["reference_accuracy"]) <= row["differ"] / row["n"] + 1e-9
    assert "latency is not a device figure" in row["note"] and row["latency"]["runs"] == 3


@needs_root
def test_reference_kernels_predict_on_aarch64_exactly_what_export_recorded(export):
    """The reference kernels are the same integer arithmetic on any machine: tflite-runtime 2.14 on arm64 gives
    the top-1 predictions export recorded with LiteRT on x86 (on an int8 MobileNetV2, XNNPACK and the builtin
    kernels differed there on 5 and 2 of 359 test images, the reference kernels on none)."""
    import subprocess

    from edgecnn.device import script_path
    from edgecnn.device.emulate import PYTHON, SITE

    root = find_root()
    p = subprocess.run([qemu_binary(), "-L", str(root), str(root / PYTHON), "-s", str(script_path()), "--model",
                        str(export["int8"]), "--npz", str(export["pre_npz"]), "--json", "--reference-kernels"],
                       capture_output=True, text=True, timeout=600,
                       env={"PYTHONPATH": str(root / SITE), "PYTHONNOUSERSITE": "1"})
    assert p.returncode == 0, p.stderr[-500:]
    row = json.loads(p.stdout.strip().splitlines()[-1])
    assert row["machine"] == "aarch64" and row["accelerator"] == "reference"
    assert row["manifest_predictions"] == "same" and row["note"] is None


def test_missing_root_says_how_to_make_it(export, tmp_path):
    if qemu_binary() is None:
        pytest.skip("qemu-aarch64-static not installed")
    with pytest.raises(ConfigError, match="setup_aarch64_root.sh"):
        emulated_parity(export["int8"], export["manifest"], export["pre_npz"], root=tmp_path)
