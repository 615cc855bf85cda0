"""`edgecnn export` and `edgecnn inspect`: options -> ExportConfig -> library call -> summary table."""
from __future__ import annotations

import json
import sys

import click

from edgecnn.cli.common import gate_options, report_verdict, report_violations, user_errors, warn, wrap
from edgecnn.contracts.rows import kib
from edgecnn.runtimes.base import KERNELS

FORMAT_HELP = ("Comma list of tflite_fp32, tflite_int8, onnx_fp32, onnx_int8, or short forms "
               "tflite, onnx, fp32, int8, all.")


def _console():
    from rich.console import Console

    from edgecnn.bench.report import console_width

    return Console(width=console_width())


def _attempt_text(t: dict) -> str:
    """One `--quant auto` attempt: "float3 0.9861 (4 of 288 differ) [test 0.9777, 8 of 359]"."""
    text = f"{t['name']} {t['val_agreement']:.4f}"
    if "val_flips" in t:
        text += f" ({t['val_flips']} of {t['val_images']} differ)"
    if "test_flips" in t:
        text += f" [test {t['test_agreement']:.4f}, {t['test_flips']} of {t['test_images']}]"
    return text


def kernel_lines(a: dict) -> list:
    """A line for each figure an int8 artifact has on other kernels than those it was verified on: kernel sets
    with the same figures share one line (TFLite Micro and the reference kernels usually do)."""
    p, groups = a["parity"], {}
    for kernels, b in (a.get("parity_kernels") or {}).items():
        if "accuracy" in b and (b["accuracy"], b["top1_agreement"]) != (p["accuracy"], p["top1_agreement"]):
            groups.setdefault((b["accuracy"], b["accuracy_drop"], b["top1_agreement"]), []).append(
                KERNEL_TEXT.get(kernels, f"on the {kernels} kernels"))
    return [f"{a['name']} {' and '.join([', '.join(where[:-1]), where[-1]] if len(where) > 1 else where)}: "
            f"accuracy {acc:.4f}, drop {drop:+.2f} pts, agreement {agree * 100:.2f}%; the kernels round int8 "
            "differently and this model is sensitive to it (the manifest records each)"
            for (acc, drop, agree), where in groups.items()]


def print_export_summary(result, gates=None) -> None:
    """The per-artifact table: size and int8/fp32 ratio, accuracy, drop, agreement, max abs diff."""
    from edgecnn.reporting import print_table

    m = result.manifest
    rows = []
    for a in result.artifacts:
        p, ratio = a["parity"], a["details"].get("size_ratio_to_fp32")
        rows.append((
            a["name"], a["quant"] or "-", kib(a["size_bytes"]), f"{ratio:.3f}x" if ratio else "-",
            f"{p['accuracy']:.4f}", f"{p['accuracy_drop']:+.2f}", f"{p['top1_agreement'] * 100:.2f}%",
            f"{p['max_abs_diff']:.2e}",
        ))
    title = (f"edgecnn export: {m['source_run']['arch']}, Keras reference accuracy "
             f"{m['reference']['accuracy']:.4f} on {m['reference']['n']} test images")
    print_table(title, ("artifact", "quant", "size", "int8/fp32", "accuracy", "drop pts", "agreement", "max |diff|"),
                rows, console=_console(), no_wrap=True)
    for a in result.artifacts:
        for line in kernel_lines(a):
            click.echo(wrap(line))
        qat = a["details"].get("qat")
        if qat:
            vs = a["details"].get("against_ptq")
            click.echo(wrap(f"QAT ({a['name']}): fake-quant test accuracy {qat['accuracy_before']:.4f} before, "
                            f"{qat['accuracy_after']:.4f} after {qat['epochs']} epoch(s) at lr "
                            f"{qat['learning_rate']:g} (float model {qat['float_accuracy']:.4f})"
                            + (f"; validation agreement {vs['qat']['val_agreement']:.4f} against plain PTQ's "
                               f"{vs['ptq']['val_agreement']:.4f}" if vs else "")))
        auto = a["details"].get("auto")
        if auto:
            tried = "; ".join(_attempt_text(t) for t in auto["attempts"] if "val_agreement" in t)
            if any("test_flips" in t for t in auto["attempts"]):
                tried += " ([test]: measured after the choice, never used for it)"
            from edgecnn.export.quant_auto import floors_text
            from edgecnn.graph import layer_name

            short = [layer_name(t) for t in auto["kept_float"]]
            kept = ", ".join(short[:6]) + (" ..." if len(short) > 6 else "")
            share = auto["int8_mac_share"]
            click.echo(wrap(f"auto ({a['name']}): {auto['chosen']}; "
                            f"{len(auto['kept_float'])} layer(s) kept in float{': ' + kept if kept else ''}; "
                            f"int8 MAC share {'-' if share is None else f'{share:.1%}'}; validation agreement "
                            f"per attempt: {tried}"
                            + (f"; the float model's agreement with itself when only these are rounded to "
                               f"int8: {floors_text(auto['rounding_floors'])}" if auto.get("rounding_floors") else "")))
        cands = a["details"].get("candidates")
        if cands:
            figures = ", ".join(f"{k} {v['val_accuracy']:.4f}" for k, v in cands.items())
            click.echo(wrap(f"int8 ONNX route: {a['details']['method']} (validation accuracy: {figures})"))
    sys.stdout.flush()  # keep the table above the warnings when both streams go to one pipe
    for w in result.warnings:  # before the verdict and the "wrote" line, where they are read
        warn(w)
    if gates is not None:
        report_verdict(gates, result.failures, len(result.artifacts), int(m["reference"]["n"]),
                       smallest=m["reference"].get("smallest_class"))
    if result.written:
        files = ", ".join([a["file"] for a in result.artifacts] + ["manifest.json", "edgecnn_infer.py"])
        click.echo(wrap(f"wrote {result.export_dir} ({files}) in {result.seconds:.1f} s"))


KERNEL_TEXT = {  # how the summary names each arithmetic an int8 artifact's `parity_kernels` records
    "xnnpack": "on the xnnpack kernels (LiteRT's default)", "builtin": "on the builtin kernels (XNNPACK off)",
    "reference": "on the reference kernels (TFLite Micro's arithmetic)",
    "tflm": "on TFLite Micro (its reference kernels, which round a per-channel FULLY_CONNECTED twice)",
    "qdq": "with its Q/DQ applied in float (onnxruntime's basic graph optimization: the file's own arithmetic)",
}


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--formats", default="all", show_default=True, help=FORMAT_HELP)
@click.option("--quant", type=click.Choice(["ptq", "qat", "auto"]), default="ptq", show_default=True,
              help="int8 by post-training quantization, by quantization-aware fine-tuning (tfmot), or auto: PTQ, "
                   "then the fewest layers that miss --min-agreement / --max-acc-drop on the validation split "
                   "kept in float (defaults 0.99 and 0.5 points), then QAT; the best on validation.")
@click.option("--calib-samples", type=int, default=300, show_default=True,
              help="Calibration images drawn (seeded) from the training split.")
@click.option("--calib-method", type=click.Choice(["minmax", "percentile"]), default="minmax", show_default=True,
              help="Activation ranges of the int8 ONNX quantize_static route: the calibration images' minimum and "
                   "maximum, or a percentile of their histogram (clips outliers; onnxruntime's Percentile). "
                   "--quant auto builds both and keeps the better on validation. TFLite's converter takes min/max "
                   "only.")
@click.option("--calib-percentile", type=float, default=99.999, show_default=True,
              help="--calib-method percentile: the percentile kept.")
@click.option("--onnx-weight-bits", type=click.Choice(["auto", "8", "7"]), default="auto", show_default=True,
              help="Weights of the int8 ONNX. 7: onnxruntime's reduce_range, for x86 CPUs with AVX2 and no VNNI, whose "
                   "int8 kernels (onnxruntime's, OpenVINO's) saturate on 8-bit weights. auto: 8 bits, and 7 joins "
                   "the candidates when the kernels here miscompute 8-bit ones.")
@click.option("--io", "io_type", type=click.Choice(["int8", "float"]), default="int8", show_default=True,
              help="Input/output type of the int8 TFLite model.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (13-18).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the calibration draw and QAT.")
@click.option("--qat-epochs", type=int, default=3, show_default=True, help="QAT fine-tuning epochs.")
@click.option("--qat-lr", type=float, default=None, help="QAT learning rate [default: the run's / 10].")
@click.option("--min-int8-macs", type=float, default=0.8, show_default=True,
              help="--quant auto: keep at least this share of the conv/dense multiply-accumulates on int8.")
@click.option("--auto-qat/--no-auto-qat", default=True, show_default=True,
              help="--quant auto: try QAT when keeping layers in float does not meet the targets.")
@click.option("--kernels", type=click.Choice(KERNELS), default="xnnpack",
              show_default=True,
              help="TFLite CPU kernels whose figures the int8 TFLite's parity, gates and --quant auto use: LiteRT's "
                   "XNNPACK, the builtin kernels, or the reference kernels (what TFLite Micro computes); the "
                   "manifest records all three.")
@gate_options(size_ratio=True)
@click.option("--strict", is_flag=True, help="When a gate breaks, write nothing (exit 2) instead of writing and "
                                             "exiting 1.")
@click.option("--data", default=None, metavar="PATH",
              help="Where the run's data is now, if it moved since training (checked against the run's record).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of the table.")
@user_errors
def export(run_dir, formats, quant, calib_samples, calib_method, calib_percentile, onnx_weight_bits, io_type, opset,
           seed, qat_epochs, qat_lr, min_int8_macs, auto_qat, kernels, max_acc_drop, min_agreement, max_abs_diff,
           max_class_drop, max_size_ratio, strict, data, as_json):
    """Export RUN_DIR to int8/float TFLite and ONNX, verify each artifact against the Keras model, and write
    RUN_DIR/export/ (artifacts, manifest.json, edgecnn_infer.py). Artifacts of formats left out are removed."""
    from edgecnn.export import ExportConfig, ThresholdError, export as run_export, resolve_formats

    config = ExportConfig(formats=resolve_formats(formats), quant=quant, calib_samples=calib_samples, io=io_type,
                          calib_method=calib_method, calib_percentile=calib_percentile,
                          onnx_weight_bits=onnx_weight_bits, opset=opset, seed=seed, qat_epochs=qat_epochs, qat_lr=qat_lr, strict=strict,
                          min_int8_macs=min_int8_macs, auto_qat=auto_qat, kernels=kernels,
                          max_acc_drop=max_acc_drop, min_agreement=min_agreement, max_abs_diff=max_abs_diff,
                          max_size_ratio=max_size_ratio, max_class_drop=max_class_drop, progress=sys.stdout.isatty() and not as_json)
    config.validate()  # option errors before TensorFlow starts
    try:
        result = run_export(run_dir, config, data=data)
    except ThresholdError as e:
        print_export_summary(e.result, config.gates)
        raise
    if as_json:
        click.echo(json.dumps(result.manifest, indent=2))
        report_violations(result.failures)
    else:
        print_export_summary(result, config.gates)
    if result.failures:
        sys.exit(1)


def _io_rows(report):
    for kind in ("inputs", "outputs"):
        for t in report[kind]:
            q = t.get("quantization")
            yield (kind[:-1], t["name"], str(t["shape"]), t["dtype"],
                   f"scale {q['scale']:.6g}, zero point {q['zero_point']}" if q else "-")


def print_inspect(report) -> None:
    from edgecnn.reporting import print_table

    con = _console()
    acc = report.get("acceleration") or {}
    rows = [("format", report["format"]), ("size", f"{kib(report['size_bytes'])} ({report['size_bytes']} bytes)"),
            ("parameters", f"{report['parameters']:,}"), ("ops", str(report["num_ops"]))]
    if report["format"] == "keras":  # float by construction: export makes the int8 models
        rows.append(("precision", "float (a Keras model; `edgecnn export` makes the int8 ones)"))
    elif report["fully_int8"]:
        rows.append(("fully int8", "yes"))
    else:
        what = "int8 except the float I/O edges" if report.get("int8_except_io") else f"{len(report['not_int8_ops'])} op(s) in float"
        rows.append(("fully int8", f"no: {what}"))
    if acc:
        xnn = acc["xnnpack"]
        rows.append(("XNNPACK (CPU)", "takes every op" if xnn["fully_delegated"] else
                     f"leaves {len(xnn['not_delegated'])} op(s) to builtin kernels, {xnn['partitions']} partition(s)"))
        lit = acc.get("litert_cpu_fully_accelerated")
        rows.append(("LiteRT CPU fully accelerated", "unknown" if lit is None else ("yes" if lit else "no")))
        gpu = acc["gpu"]
        rows.append(("GPU delegate", "compatible (analyzer)" if gpu["compatible"] else
                     f"{len(gpu['incompatible'])} incompatible op(s)"))
    print_table(f"edgecnn inspect: {report['path']}", ("", "value"), rows, console=con)
    print_table("inputs and outputs", ("", "name", "shape", "dtype", "quantization"), _io_rows(report), console=con)
    print_table("ops", ("op", "count"), sorted(report["ops"].items(), key=lambda kv: -kv[1]), console=con)
    if report["not_int8_ops"] and report["format"] != "keras":
        print_table("ops not in int8", ("#", "op", "dtypes"),
                    ((o["index"], o["op"], ", ".join(o.get("dtypes", []))) for o in report["not_int8_ops"]), console=con)
    if acc and acc["xnnpack"]["not_delegated"]:
        print_table("ops XNNPACK does not take", ("#", "op"),
                    ((o["index"], o["op"]) for o in acc["xnnpack"]["not_delegated"]), console=con)
    if acc and acc["gpu"]["incompatible"]:
        print_table("ops a GPU delegate does not take", ("#", "op", "reason"),
                    ((o["index"], o["op"], o["reason"]) for o in acc["gpu"]["incompatible"]), console=con)


def _print_layers(report, top: int = 15) -> None:
    from edgecnn.reporting import print_table

    print_table(f"int8 error per layer, worst first (RMSE/scale; rounding noise alone is 0.29; {report['images']} "
                "validation images)", ("#", "op", "layer", "RMSE/scale", "max |error|"),
                ((i + 1, r["op"], r["layer"], f"{r['rmse_over_scale']:.3f}", f"{r['max_abs_error']:.3g}")
                 for i, r in enumerate(report["layers"][:top])))
    print_table("weight ranges per output channel, widest spread first", ("layer", "channels", "max", "median",
                                                                           "max/median"),
                ((w["layer"], w["channels"], f"{w['max_range']:.3g}", f"{w['median_range']:.3g}",
                  "-" if w["spread"] is None else f"{w['spread']:.1f}") for w in report["weights"][:top]))
    floors = report.get("rounding_floors")
    if floors:
        print_table("the float model against itself with only these rounded to int8 (validation split)",
                    ("rounded", "agreement", "flips", "drop (pts)"),
                    ((k.replace("_", " "), f"{f['agreement']:.4f}", f"{f['flips']} of {f['images']}",
                      f"{f['accuracy_drop_pts']:+.2f}") for k, f in floors.items()))
        click.echo(wrap("No int8 recipe that keeps those int8 can be expected to agree better than its floor; "
                        "--quant auto keeps layers in float only as far as that removes their share."))
    if report.get("plot"):
        click.echo(f"plot: {report['plot']}")


@click.command()
@click.argument("model", type=click.Path())
@click.option("--layers", is_flag=True,
              help="MODEL is a run directory: rank its layers by int8 error against the float model on validation "
                   "images (TF's QuantizationDebugger), with per-channel weight ranges; plot to RUN/layers.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@user_errors
def inspect(model, layers, as_json):
    """Describe MODEL (.tflite, .onnx or .keras): size, I/O and quantization, ops, parameters, whether it is
    fully int8, and which ops XNNPACK or a GPU delegate would not take. With --layers, where int8 hurts a run."""
    if layers:
        from edgecnn.inspect import inspect_layers

        report = inspect_layers(model)
        if as_json:
            click.echo(json.dumps(report, indent=2))
        else:
            _print_layers(report)
        return
    from edgecnn.inspect import inspect_model

    report = inspect_model(model)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_inspect(report)
