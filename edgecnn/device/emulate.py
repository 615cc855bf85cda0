"""aarch64 parity under emulation: the on-device script on an arm64 Python (QEMU user-mode), compared with the
same script on this machine, top-1 for top-1. Raspberry Pi 4/5 run the aarch64 instruction set; this checks
that the int8 model's predictions survive the change of ISA and runtime build before a board is at hand.

    tools/setup_aarch64_root.sh                         # once: ~/.cache/edgecnn/aarch64-root (about 120 MB)
    edgecnn emulate RUN                # RUN/export/model_int8.tflite on all of RUN's data
    edgecnn emulate --model M.tflite --manifest manifest.json --npz data.npz --json
    python -m edgecnn.device.emulate RUN   # the same

Python::

    from edgecnn.device.emulate import emulated_parity
    row = emulated_parity("RUN/export/model_int8.tflite", "RUN/export/manifest.json", "data.npz")
    row["agreement"], row["differ"], row["n"]

The row has the bench row keys with device "aarch64 (emulated)"; its agreement and max_abs_diff are against
the x86 run (not the Keras reference), and its latency is QEMU's, not a device's (said in its note).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.contracts.manifest import FILENAME, read_manifest
from edgecnn.contracts.parity import parity
from edgecnn.device import script_path
from edgecnn.errors import ConfigError, EdgecnnError, MissingDependencyError, ParityError
from edgecnn.runtimes.base import KERNELS, check_kernels
from edgecnn.script.edgecnn_infer import KERNEL_FLAGS

__all__ = ["emulated_parity", "find_root", "DEFAULT_ROOT", "MIN_AGREEMENT"]

DEFAULT_ROOT = Path(os.environ.get("EDGECNN_AARCH64_ROOT") or "~/.cache/edgecnn/aarch64-root").expanduser()
MIN_AGREEMENT = 0.997
PYTHON = "usr/bin/python3.11"
SITE = "opt/edgecnn/site"
SETUP = "tools/setup_aarch64_root.sh"


def find_root(root=None) -> Optional[Path]:
    """The aarch64 root made by tools/setup_aarch64_root.sh, or None when it is absent or incomplete."""
    r = Path(root).expanduser() if root else DEFAULT_ROOT
    ok = (r / PYTHON).is_file() and (r / SITE).is_dir() and (r / ".edgecnn-stamp").is_file()
    return r if ok else None


def qemu_binary() -> Optional[str]:
    return shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")


def _run_json(argv: list, *, env: dict, timeout: float, what: str) -> dict:
    """Run the script; its JSON output, or EdgecnnError with its last stderr line."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **env))
    except subprocess.TimeoutExpired:
        raise EdgecnnError(f"{what} timed out after {timeout:g} s") from None
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("INFO:")]
        raise EdgecnnError(f"{what} failed (exit {p.returncode}): {lines[-1] if lines else 'no message'}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def emulated_parity(model, manifest, npz, *, root=None, runs: int = 20, threads: int = 1,
                    timeout: float = 900.0, allow_modified: bool = False, kernels: str = "xnnpack") -> dict:
    """Run the script on `npz` under qemu-aarch64 and on this machine; compare top-1 predictions.

    Args:
        model: the .tflite file (the int8 artifact is the one whose rounding can differ between ISAs).
        manifest: its export manifest.
        npz: inputs (`x` raw or `preprocessed=1`, labels `y` optional), as the script reads them.
        root: the aarch64 root (default: $EDGECNN_AARCH64_ROOT or ~/.cache/edgecnn/aarch64-root).
        runs: timed runs under emulation (the latency is not a device figure).
        allow_modified: run a model whose sha256 differs from the manifest (the script refuses it otherwise).
        kernels: the TFLite CPU kernels on both sides: "xnnpack", "builtin" or "reference" (bit-exact everywhere).
    Returns:
        A bench row (dict) with device "aarch64 (emulated)", agreement (fraction of identical top-1 with the
        x86 run), max_abs_diff (vs the x86 run), accuracy, plus "differ", "n", "reference_runtime".
    Raises:
        MissingDependencyError: no qemu-aarch64 (apt-get install qemu-user-static).
        ConfigError: no aarch64 root (run tools/setup_aarch64_root.sh).
        EdgecnnError: the script failed on either side.
    """
    qemu = qemu_binary()
    if qemu is None:
        raise MissingDependencyError("qemu-user-static", "aarch64 emulation (apt-get install)")
    r = find_root(root)
    if r is None:
        raise ConfigError(f"no aarch64 root at {Path(root or DEFAULT_ROOT)}: run {SETUP} first")
    check_kernels(kernels)
    args = ["--model", str(model), "--manifest", str(manifest), "--npz", str(npz), "--json", "--probs",
            "--threads", str(threads), *KERNEL_FLAGS[kernels]] + (["--allow-modified"] if allow_modified else [])
    script = str(script_path())
    x86 = _run_json([sys.executable, script, *args], env={}, timeout=timeout, what="the x86 run")
    arm = _run_json([qemu, "-L", str(r), str(r / PYTHON), "-s", script, *args, "--bench", str(runs), "--warmup", "2"],
                    env={"PYTHONPATH": str(r / SITE), "PYTHONNOUSERSITE": "1"}, timeout=timeout,
                    what="the emulated aarch64 run")
    a, b = np.asarray(arm["predictions"]), np.asarray(x86["predictions"])
    if a.shape != b.shape:
        raise EdgecnnError(f"the runs disagree on the number of inputs ({len(a)} vs {len(b)})")
    differ = int(np.sum(a != b))
    p = parity(np.asarray(arm["probs"], np.float32), np.asarray(x86["probs"], np.float32), None)
    row = {k: v for k, v in arm.items() if k not in ("probs", "predictions", "results")}
    row.update(
        device="aarch64 (emulated)", agreement=p.agreement, max_abs_diff=p.max_abs_diff if p.n else 0.0,
        differ=differ, n=int(len(a)),
        reference_runtime=x86["runtime"], reference_accuracy=x86["accuracy"],
        note=(f"QEMU user-mode emulation ({Path(qemu).name}, {r}): latency is not a device figure; agreement and "
              f"max_abs_diff are against the x86 run ({x86['runtime']}): {differ} of {len(a)} top-1 differ"),
    )
    return row


def _run_data(run_dir: Path, tmp: Path, data=None) -> tuple:
    """(model, manifest, npz) of a run directory: its int8 TFLite artifact and all of its data, preprocessed."""
    from edgecnn.rundir import open_run

    run = open_run(run_dir, data=data)
    path = run.export_dir / FILENAME
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no export manifest ({path}); run edgecnn export first")
    manifest = read_manifest(path)
    if "tflite_int8" not in manifest.artifacts:
        raise ConfigError(f"{path}: no tflite_int8 artifact; export it (edgecnn export --formats tflite_int8)")
    ds = run.load_dataset()
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    npz = tmp / "data.npz"
    np.savez(npz, x=x.astype(np.float32), y=y, preprocessed=np.array(1))
    return manifest.path_of("tflite_int8"), path, npz


def main(argv=None, prog: str = "python -m edgecnn.device.emulate") -> int:
    """`edgecnn emulate` [RUN] [--model M --manifest F --npz D]: exit 1 below --min-agreement."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", help="run directory (its int8 TFLite artifact on all of its data)")
    p.add_argument("--model"), p.add_argument("--manifest"), p.add_argument("--npz")
    p.add_argument("--root", help=f"aarch64 root (default {DEFAULT_ROOT})")
    p.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT)
    p.add_argument("--runs", type=int, default=20, help="timed runs under emulation")
    p.add_argument("--json", action="store_true", help="print the row as JSON")
    p.add_argument("--allow-modified", action="store_true", help="run a model whose sha256 differs from the manifest")
    p.add_argument("--data", help="with RUN: where the run's data is now, if it moved")
    p.add_argument("--kernels", choices=KERNELS, default="xnnpack",
                   help="TFLite CPU kernels on both machines (reference: bit-exact on any machine)")
    a = p.parse_args(argv)
    if bool(a.run) == bool(a.model and a.manifest and a.npz):
        p.error("give a run directory, or --model, --manifest and --npz")
    try:
        with tempfile.TemporaryDirectory(prefix="edgecnn-emulate-") as tmp:
            model, manifest, npz = _run_data(Path(a.run), Path(tmp), a.data) if a.run else (a.model, a.manifest,
                                                                                             a.npz)
            row = emulated_parity(model, manifest, npz, root=a.root, runs=a.runs, allow_modified=a.allow_modified,
                                  kernels=a.kernels)
        if row["agreement"] is not None and row["agreement"] < a.min_agreement:
            raise ParityError(f"aarch64 (emulated) top-1 agreement {row['agreement']:.4f} < {a.min_agreement} "
                              f"({row['differ']} of {row['n']} differ)")
    except EdgecnnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1 if isinstance(e, ParityError) else 2
    if a.json:
        print(json.dumps(row))
    else:
        acc = f", accuracy {row['accuracy']:.4f} (x86 {row['reference_accuracy']:.4f})" if row["accuracy"] is not None \
            else ""
        print(f"aarch64 (emulated) {row['file']} on {row['runtime']}: {row['differ']} of {row['n']} top-1 differ from "
              f"x86 ({row['reference_runtime']}), agreement {row['agreement']:.4f}{acc}, max abs diff "
              f"{row['max_abs_diff']:.4g}; latency under emulation is not a device figure")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
