"""`edgecnn demo`: the whole pipeline on the embedded digits data, in one command and a few minutes.

    edgecnn demo --out runs/demo --overwrite

train (simple_cnn on scikit-learn's digits) -> export (fp32 and int8 TFLite, fp32 and int8 ONNX, each verified)
-> bench (every artifact on every backend here, with parity gates) -> the on-device script (no TensorFlow) on
a few test images written as PNG files.
Exit 0 when every artifact passed the gates, 1 when one broke a gate, 2 on a user error.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import click

from edgecnn.cli.common import report_verdict, user_errors


def _stage(n: int, text: str) -> None:
    click.secho(f"\n[{n}/4] {text}", bold=True)


def _write_samples(run_dir: str, n: int = 3) -> list:
    """The first `n` test images as 8-bit PNG files in RUN/samples/ (digit_<label>_<index>.png)."""
    import numpy as np
    from PIL import Image

    from edgecnn.io import atomic_path
    from edgecnn.rundir import open_run

    run = open_run(run_dir)
    ds = run.load_dataset()
    folder = Path(run_dir) / "samples"
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(min(n, len(ds.y_test))):
        img = np.round(ds.test[i] * 255).astype(np.uint8)
        img = img[..., 0] if img.shape[-1] == 1 else img
        path = folder / f"digit_{ds.class_names[int(ds.y_test[i])]}_{i}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(img).save(tmp)
        paths.append(path)
    return paths


@click.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="Run directory (the export and bench reports go inside it).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty run directory.")
@click.option("--quant", type=click.Choice(["ptq", "qat"]), default="ptq", show_default=True,
              help="int8 by post-training quantization or by quantization-aware training.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the split, training and calibration: the same seed gives the same run on this machine.")
@click.option("--epochs", type=int, default=60, show_default=True, help="Maximum training epochs.")
@click.option("--max-acc-drop", type=float, default=0.5, show_default=True,
              help="Bench gate: accuracy points an artifact may lose against the Keras model.")
@click.option("--min-agreement", type=float, default=0.99, show_default=True,
              help="Bench gate: top-1 agreement with the Keras model (fraction).")
@click.option("--threads", type=int, default=1, show_default=True, help="Bench CPU threads.")
@user_errors
def demo(out, overwrite, quant, seed, epochs, max_acc_drop, min_agreement, threads):
    """Train -> export -> bench on the embedded digits data: the whole pipeline in a few minutes on a CPU."""
    from edgecnn.bench import BenchConfig
    from edgecnn.bench import bench as run_bench
    from edgecnn.bench.report import print_report
    from edgecnn.cli.export import print_export_summary
    from edgecnn.cli.train import print_train_summary
    from edgecnn.export import ExportConfig
    from edgecnn.export import export as run_export
    from edgecnn.train import TrainConfig
    from edgecnn.train import train as run_train

    from edgecnn.errors import ConfigError

    t0 = time.perf_counter()
    if not overwrite and Path(out).is_dir() and any(Path(out).iterdir()):
        raise ConfigError(f"{out} is not empty: pass --overwrite to replace it, or choose another --out")
    # a tour, not a measurement: each row timed for 0.25 s (at least 50 runs: thousands on these us-scale models)
    # instead of bench's 1 s; `edgecnn bench RUN` times them again at its defaults
    bench_cfg = BenchConfig(threads=threads, max_acc_drop=max_acc_drop, min_agreement=min_agreement,
                            min_s=0.25, warmup_min_s=0.1)
    export_cfg = ExportConfig(quant=quant, seed=seed).validate()  # option errors before training starts

    _stage(1, f"train: simple_cnn on digits -> {out}")
    trained = run_train(TrainConfig(out=out, epochs=epochs, seed=seed, overwrite=overwrite))
    print_train_summary(trained)

    _stage(2, f"export: fp32/int8 TFLite ({quant}) and fp32/int8 ONNX, each verified against the Keras model")
    exported = run_export(out, export_cfg)
    print_export_summary(exported)

    _stage(3, "bench: every artifact on every backend here, gated on parity")
    result = run_bench(out, config=bench_cfg)
    print_report(result)
    sys.stdout.flush()

    exp = exported.export_dir
    _stage(4, "on the device: the one-file script (numpy + a TFLite runtime, no TensorFlow) on test images")
    samples = _write_samples(out)
    click.echo(f"test images written as PNG files to {Path(out) / 'samples'}/ (digit_<label>_<index>.png)")
    python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") \
        else sys.executable  # this environment's Python: the command below runs as printed
    cmd = [python, str(exp / "edgecnn_infer.py"), "--model", str(exp / "model_int8.tflite"),
           *(str(p) for p in samples)]
    click.echo("$ " + shlex.join(cmd))
    ran = subprocess.run([sys.executable, *cmd[1:]], capture_output=True, text=True)
    click.echo(ran.stdout.rstrip())
    if ran.returncode != 0:
        click.echo(f"{ran.stderr.rstrip()}\nthe on-device script failed (exit {ran.returncode})", err=True)
        sys.exit(1)

    click.echo(f"\nrun directory {out} (model, metrics, plots), artifacts in {exp}, bench report in "
               f"{result.out_dir} ({time.perf_counter() - t0:.0f} s in all)")
    click.echo(f"everything on one page: {Path(out) / 'report.html'} (open it in a browser)")
    click.echo("next: copy the export folder to a board, or bench one over SSH:\n"
               f"  edgecnn bench {out} --remote pi@raspberrypi.local   (docs/boards.md)")
    report_verdict(bench_cfg.gates, result.violations, sum(r.status == "ok" for r in result.rows),
                   int(result.settings.get("test_images") or 0), result.warnings,
                   smallest=result.settings.get("smallest_class"))
    if result.violations:
        sys.exit(1)
