"""`edgecnn demo`: the whole pipeline on the embedded digits data, in one command and a few minutes.

    edgecnn demo --out runs/demo --overwrite

train (simple_cnn on scikit-learn's digits) -> export (fp32 and int8 TFLite, fp32 and int8 ONNX, each verified)
-> bench (every artifact on every backend here, with parity gates) -> how to run it on a device.
Exit 0 when every artifact passed the gates, 1 when one broke a gate, 2 on a user error.
"""
from __future__ import annotations

import sys
import time

import click

from edgecnn.cli.common import user_errors


def _stage(n: int, text: str) -> None:
    click.secho(f"\n[{n}/3] {text}", bold=True)


@click.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="Run directory (the export and bench reports go inside it).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty run directory.")
@click.option("--quant", type=click.Choice(["ptq", "qat"]), default="ptq", show_default=True,
              help="int8 by post-training quantization or by quantization-aware training.")
@click.option("--seed", type=int, default=0, show_default=True)
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

    t0 = time.perf_counter()
    bench_cfg = BenchConfig(threads=threads, max_acc_drop=max_acc_drop, min_agreement=min_agreement)
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
    click.echo(f"\nrun directory {out} (model, metrics, plots), artifacts in {exp}, bench report in "
               f"{result.out_dir} ({time.perf_counter() - t0:.0f} s in all)")
    click.echo("on a device (numpy + ai-edge-litert, no TensorFlow):\n"
               f"  python3 {exp}/edgecnn_infer.py --model {exp}/model_int8.tflite --manifest {exp}/manifest.json "
               "IMAGE.png\n"
               f"  edgecnn bench {out} --remote pi@raspberrypi.local   # the same rows from a board over SSH")
    for v in result.violations:
        click.echo(f"parity gate failed: {v}", err=True)
    if result.violations:
        sys.exit(1)
    click.echo(f"parity gates passed: every artifact within {max_acc_drop:g} accuracy points and "
               f"{min_agreement:.0%} top-1 agreement of the Keras model")
