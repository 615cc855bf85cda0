"""Benchmark 7: int8 recipes side by side: PTQ, QAT and `--quant auto` for simple_cnn, resnet8 and MobileNetV2-0.35.

    python benchmarks/quant_recipes.py                         # digits; the three architectures at 32x32
    python benchmarks/quant_recipes.py --archs simple_cnn --image-size 8
    python benchmarks/quant_recipes.py --archs mobilenet_v2 --augment   # a less input-sensitive float model

Each architecture is trained once (edgecnn's defaults; digits is grey, so MobileNetV2 takes 1 channel, as issue 12's
`edgecnn train --arch mobilenet_v2 --image-size 32 32`), then exported three times (tflite_int8 only) from
copies of the run. For each recipe it prints the test split's top-1 agreement with the float model and the
accuracy drop (as the manifest records them, on XNNPACK and on the reference kernels), the share of conv/dense multiply-accumulates on int8
activations, the file size, the export's seconds, and the int8 latency (LiteRT, XNNPACK, 1 thread, median of
the bench loop). `--quant auto` targets: --min-agreement 0.985 --max-acc-drop 0.3 (issue 12's); when PTQ misses
them, the float model's rounding floor (input and weights rounded to int8, activations float) is printed too.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

RECIPES = ("ptq", "qat", "auto")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="simple_cnn,resnet8,mobilenet_v2")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--work", default=None, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--reuse", action="store_true", help="use the trained runs already in --work")
    ap.add_argument("--augment", action="store_true", help="train with edgecnn's random shift, rotation and zoom")
    a = ap.parse_args()

    from edgecnn.data import DataConfig
    from edgecnn.export import ExportConfig, export
    from edgecnn.runtimes import RuntimeOptions, open_session
    from edgecnn.runtimes.tflite import mac_share
    from edgecnn.script.edgecnn_infer import latency_stats, time_runs
    from edgecnn.train import AugmentConfig, TrainConfig, train

    work = Path(a.work or tempfile.mkdtemp(prefix="quant-recipes-"))
    rows = []
    for arch in a.archs.split(","):
        base = work / arch
        size = (a.image_size, a.image_size)
        t0 = time.perf_counter()
        if not (a.reuse and (base / "model.keras").is_file()):
            res = train(TrainConfig(out=str(base), arch=arch, overwrite=True, data=DataConfig(image_size=size),
                                    augment=AugmentConfig() if a.augment else None))
            print(f"{arch}: float test accuracy {res.metrics['test_accuracy']:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        for recipe in a.recipes.split(","):
            run = work / f"{arch}-{recipe}"
            shutil.rmtree(run, ignore_errors=True)
            shutil.copytree(base, run, ignore=shutil.ignore_patterns("export", "bench*"))
            kw = {"min_agreement": 0.985, "max_acc_drop": 0.3} if recipe == "auto" else {}
            t0 = time.perf_counter()
            result = export(str(run), ExportConfig(formats=("tflite_int8",), quant=recipe, **kw))
            seconds = time.perf_counter() - t0
            entry = result.manifest["artifacts"]["tflite_int8"]
            path = run / "export" / entry["file"]
            sess = open_session("tflite", path, RuntimeOptions(threads=1))
            try:
                import numpy as np

                x = np.zeros((1, *sess.input_shape), np.float32) + 0.5
                lat = latency_stats(time_runs(sess.runner(x), runs=100, min_s=1.0))["median_ms"]
            finally:
                sess.close()
            auto = entry["details"].get("auto") or {}
            ref = (entry.get("parity_kernels") or {}).get("reference") or {}
            rows.append({"arch": arch, "recipe": recipe, "agreement": entry["parity"]["top1_agreement"],
                         "drop": entry["parity"]["accuracy_drop"], "ref_agreement": ref.get("top1_agreement"),
                         "ref_drop": ref.get("accuracy_drop"), "int8_macs": mac_share(path)["share"],
                         "size_kb": entry["size_bytes"] / 1024, "latency_ms": lat, "export_s": seconds,
                         "kept_float": len(auto.get("kept_float", [])),
                         "floor": (auto.get("rounding_floors") or {}).get("input_and_weights")})
            print(json.dumps(rows[-1]), flush=True)
    print()
    print("agreement and drop: XNNPACK (the manifest's `parity`) / the reference kernels (TFLite Micro's arithmetic)")
    print(f"{'arch':14} {'recipe':6} {'agreement':>15} {'drop pts':>13} {'int8 MACs':>9} {'float':>5} {'size KiB':>8} "
          f"{'int8 ms':>8} {'export s':>8}")

    def pair(a, b, fmt):
        return f"{a:{fmt}} / " + ("-" if b is None else f"{b:{fmt}}")

    for r in rows:
        print(f"{r['arch']:14} {r['recipe']:6} {pair(r['agreement'], r['ref_agreement'], '.4f'):>15} "
              f"{pair(r['drop'], r['ref_drop'], '+.2f'):>13} {r['int8_macs']:9.1%} "
              f"{r['kept_float']:5d} {r['size_kb']:8.1f} {r['latency_ms']:8.3f} {r['export_s']:8.1f}")
    for r in rows:
        if r["floor"]:
            f = r["floor"]
            print(f"{r['arch']}: the float model with only its input and weights rounded to int8 agrees with itself "
                  f"on {f['agreement']:.4f} of {f['images']} validation images (auto's rounding floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
