"""`edgecnn bench` and `edgecnn predict`: options -> BenchConfig -> edgecnn.bench.bench -> table and reports.

    edgecnn bench runs/d --max-acc-drop 0.5 --min-agreement 0.99
    edgecnn predict runs/d/export/model_int8.tflite digit.png --top-k 3
"""
from __future__ import annotations

import sys

import click

from edgecnn.cli.common import gate_options, report_verdict, user_errors, wrap

TOP_K = 3  # the on-device script's default too (edgecnn_infer.py --top-k)


def _split(values) -> tuple:
    """Comma-separated and repeated option values -> a tuple of names."""
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())


@click.command()
@click.argument("run_dir", required=False, type=click.Path(file_okay=False))
@click.option("--model", type=click.Path(dir_okay=False), help="Bench one model file (.keras, .tflite, .onnx) instead.")
@click.option("--data", default=None,
              help="With --model: data source of the test split (digits, an .npz, a folder; default: the model's run). "
                   "With RUN_DIR: where the run's data is now, if it moved (checked against the run's record).")
@click.option("--backends", multiple=True, metavar="NAMES",
              help="Backends to run, comma-separated: keras, tflite, litert-cpu, litert-gpu, litert-npu, onnxruntime, "
                   "tflm, ethos-u, openvino. Default: all.")
@click.option("--artifacts", multiple=True, metavar="NAMES",
              help="Manifest artifacts to run (tflite_int8, onnx_fp32, ..., keras). Default: all.")
@click.option("--threads", type=int, default=1, show_default=True, help="CPU threads (tflite, litert-*, onnxruntime).")
@click.option("--batch", type=int, default=1, show_default=True, help="Batch size of the throughput measurement.")
@click.option("--xnnpack/--no-xnnpack", default=True, show_default=True,
              help="tflite: LiteRT's default XNNPACK delegate, or builtin kernels only.")
@click.option("--reference-kernels", is_flag=True,
              help="tflite: the builtin reference kernels, whose arithmetic TFLite Micro shares (slow).")
@click.option("--delegate", default=None, metavar="PATH[:k=v,...]",
              help="tflite: external delegate library with options, e.g. libedgetpu.so.1 or "
                   "libarmnnDelegate.so:backends=CpuAcc.")
@click.option("--providers", multiple=True, metavar="NAMES",
              help="onnxruntime execution providers, one row each: cpu, cuda, tensorrt, openvino, xnnpack, coreml, "
                   "qnn, ... Default: cpu.")
@click.option("--graph-opt", type=click.Choice(["disable", "basic", "extended", "all"]), default="all",
              show_default=True, help="onnxruntime graph optimization level.")
@click.option("--npu", default="ethos-u55-128", show_default=True, metavar="CONFIG",
              help="ethos-u: Vela accelerator configuration (ethos-u55-32..256, ethos-u65-256/512, ethos-u85-*).")
@click.option("--npu-system", default=None, metavar="NAME",
              help="ethos-u: system config of Vela's Arm/vela.ini. Default: per accelerator (U55: "
                   "Ethos_U55_High_End_Embedded, U65: Ethos_U65_High_End, U85: Ethos_U85_SYS_DRAM_Mid).")
@click.option("--npu-memory", default=None, metavar="NAME",
              help="ethos-u: memory mode of Vela's Arm/vela.ini. Default: Shared_Sram (U55), Dedicated_Sram (U65, U85).")
@click.option("--keep-compiled", is_flag=True, help="ethos-u: keep Vela's <model>_vela.tflite beside the model.")
@click.option("--precision", type=click.Choice(["f32", "bf16", "f16"]), default="f32", show_default=True,
              help="openvino: inference precision hint (f32 for parity; bf16/f16 for the CPU's fast path).")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs (at least).")
@click.option("--min-time", type=float, default=1.0, show_default=True, help="Timed seconds (at least).")
@click.option("--max-time", type=float, default=30.0, show_default=True, help="Timed seconds (at most) per row.")
@click.option("--warmup", type=int, default=1, show_default=True, help="Warm-up runs (at least).")
@click.option("--warmup-time", type=float, default=0.5, show_default=True, help="Warm-up seconds (at least).")
@click.option("--timing/--no-timing", default=True, show_default=True,
              help="--no-timing: accuracy and parity only (fast CI gate).")
@click.option("--include-copies", is_flag=True, help="Time input/output tensor copies with the inference.")
@click.option("--limit", type=int, default=None, help="Evaluate at most this many test images.")
@gate_options()
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for bench.json, bench.md and plots. Default: RUN_DIR/bench.")
@click.option("--plots/--no-plots", default=True, show_default=True,
              help="Write latency.png, accuracy_vs_latency.png and the int8 confusion matrices.")
@click.option("--remote", multiple=True, metavar="USER@HOST[:PORT]",
              help="Also run the tflite artifacts on this board over SSH (repeatable).")
@click.option("--hosts", "hosts_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Boards to bench too: one USER@HOST[:PORT] [NAME] per line (# comments), like repeated --remote.")
@click.option("--remote-jobs", type=int, default=4, show_default=True, help="Boards benched at the same time.")
@click.option("--remote-timeout", type=float, default=300.0, show_default=True, metavar="SECONDS",
              help="Time for everything on one board; a board past it is a failed row, the others finish.")
@click.option("--allow-modified", is_flag=True,
              help="Run artifacts whose sha256 differs from the manifest (refused by default; the rows say so).")
@click.option("--accept-new-host-keys", is_flag=True,
              help="--remote: accept a board's SSH host key on first contact (refused by default; rows say so).")
@click.option("--wide", is_flag=True, help="Every column (accelerator, max diff, load, first, p90, throughput, "
                                           "memory); the default table fits 100 columns.")
@click.option("--json", "as_json", is_flag=True, help="Print bench.json to stdout instead of the table.")
@click.option("--fail-on-error", is_flag=True, help="Exit 1 when a row failed (not only on broken gates).")
@user_errors
def bench(run_dir, model, data, backends, artifacts, threads, batch, xnnpack, reference_kernels, delegate, providers,
          graph_opt, npu, npu_system, npu_memory, keep_compiled, precision, runs,
          min_time, max_time, warmup, warmup_time, timing, include_copies, limit, max_acc_drop, min_agreement,
          max_abs_diff, max_class_drop, out, plots, remote, hosts_file, remote_jobs, remote_timeout, allow_modified,
          accept_new_host_keys, wide, as_json, fail_on_error):
    """Run every exported artifact of RUN_DIR on every backend here: accuracy, parity with the Keras model,
    size, load, first-inference and steady latency, throughput, memory. Exit 1 when a parity gate breaks."""
    import json

    from rich.console import Console

    from edgecnn.bench import BenchConfig
    from edgecnn.bench import bench as run_bench
    from edgecnn.bench.report import print_report
    from edgecnn.device.fleet import read_hosts

    cfg = BenchConfig(
        backends=_split(backends), artifacts=_split(artifacts), threads=threads, batch=batch, xnnpack=xnnpack,
        reference_kernels=reference_kernels,
        delegate=delegate, providers=_split(providers) or ("cpu",), graph_optimization=graph_opt, npu=npu,
        npu_system=npu_system, npu_memory=npu_memory, keep_compiled=keep_compiled, precision=precision,
        warmup_runs=warmup, warmup_min_s=warmup_time, runs=runs, min_s=min_time, max_s=max_time, timing=timing,
        include_copies=include_copies, limit=limit, max_acc_drop=max_acc_drop, min_agreement=min_agreement,
        max_abs_diff=max_abs_diff, max_class_drop=max_class_drop, out=out, plots=plots, remote=tuple(remote) + tuple(read_hosts(hosts_file) if
                                                                              hosts_file else ()),
        remote_jobs=remote_jobs, remote_timeout=remote_timeout, allow_modified=allow_modified,
        accept_new_host_keys=accept_new_host_keys,
    )
    err = Console(stderr=True)
    progress = None if as_json else (lambda s: err.print(f"[dim]bench: {s}[/dim]", highlight=False))
    result = run_bench(run_dir, model=model, data=data, config=cfg, progress=progress)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        print_report(result, wide=wide)
        if result.files:
            click.echo(wrap(f"wrote {result.out_dir}: " + ", ".join(p.name for p in result.files)))
    failed = [r for r in result.rows if r.status == "failed"]
    report_verdict(cfg.gates, result.violations, sum(r.status == "ok" for r in result.rows),
                   int(result.settings.get("test_images") or 0), result.warnings,
                   smallest=result.settings.get("smallest_class"))
    for r in result.refused:  # an artifact that is not what the manifest describes: never a green run
        click.echo(f"error: {r.artifact} not run: {r.reason}", err=True)
    if result.refused:
        sys.exit(2)
    if fail_on_error and failed:
        click.echo(f"{len(failed)} row(s) failed (--fail-on-error)", err=True)
    if result.violations or (fail_on_error and failed):
        sys.exit(1)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--model", "model_opt", type=click.Path(dir_okay=False), default=None,
              help="The model (.keras, .tflite, .onnx), as the on-device script takes it. Without it, the first "
                   "argument is the model.")
@click.option("--top-k", type=int, default=TOP_K, show_default=True, help="Labels to show per input.")
@click.option("--manifest", type=click.Path(dir_okay=False), default=None,
              help="Manifest or run config.json with preprocessing and class names. Default: beside MODEL.")
@click.option("--threads", type=int, default=1, show_default=True, help="CPU threads of the runtime.")
@click.option("--allow-modified", is_flag=True, help="Run a model whose sha256 differs from its manifest entry.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document with every prediction.")
@user_errors
def predict(inputs, model_opt, top_k, manifest, threads, allow_modified, as_json):
    """Classify image files (or folders of them) or the images of an .npz with a model (.keras, .tflite or
    .onnx), using the preprocessing and class names recorded beside it. Same options, text and JSON as the
    on-device script: `edgecnn predict --model M.tflite a.png` and `python3 edgecnn_infer.py --model M.tflite
    a.png`."""
    import json

    from edgecnn.errors import ConfigError
    from edgecnn.predict import predict as run_predict

    inputs = list(inputs)
    model = model_opt or inputs.pop(0)
    if not inputs:
        raise ConfigError("nothing to classify: give image files or an .npz after the model")
    preds = run_predict(model, inputs, top_k=top_k, manifest=manifest, threads=threads,
                        allow_modified=allow_modified)
    from edgecnn.predict import folder_scores
    from edgecnn.script.edgecnn_infer import wrong_line

    labelled = folder_scores(model, inputs, preds, manifest)  # folders with one subfolder per class
    results = [dict(p.result(), **({"true_label": t} if t is not None else {}))
               for p, t in zip(preds, labelled.pop("true_labels", [None] * len(preds)))]
    if as_json:  # the script's shape: {"model", "results": [{input, label, index, confidence, top_k}]}
        click.echo(json.dumps({"model": model, "results": results, **labelled}, indent=2))
        return
    shown = 10 if "accuracy" in labelled else len(preds)  # a scored set: its misses, not every line (as the script)
    for p in preds[:shown]:
        others = ", ".join(f"{t['label']} {t['confidence']:.3f}" for t in p.top[1:])
        click.echo(f"{p.input}: {p.label} ({p.confidence:.3f})" + (f"  [{others}]" if others else ""))
    if len(preds) > shown:
        click.echo(f"... {len(preds) - shown} more (--json for all)")
    if labelled.get("accuracy") is not None:
        click.echo(f"accuracy: {labelled['accuracy']:.4f} on {len(preds)} labelled inputs (labels: their class "
                   "folders)")
        wrong = wrong_line(results)
        if wrong:
            click.echo(wrong)
    if labelled.get("note"):
        click.echo(f"note: {labelled['note']}")

