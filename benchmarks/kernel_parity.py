"""Benchmark: export's parity on the other TFLite kernel sets (builtin, reference) with one interpreter against
one interpreter per CPU, side by side on the same int8 model and test images.

    python benchmarks/kernel_parity.py                      # MobileNetV2-0.35 at 96x96x3, 359 digits test images
    python benchmarks/kernel_parity.py --size 160 --images 120

`edgecnn.export.verify.kernel_parity` runs the test split on the kernel sets export did not verify on. The
reference kernels (TFLite Micro's arithmetic) are single-threaded and slow: on an int8 MobileNetV2-1.0 at
224x224 they took 78 s of a 203 s export for 480 images. Spreading the images over one interpreter per CPU must
give the same figures (each image's arithmetic is its own): printed are both timings, their ratio, and whether
the parity records (accuracy, agreement, digest of the top-1 predictions) are identical.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import quiet, tflite_pair  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96, help="input height and width (RGB)")
    ap.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width")
    ap.add_argument("--images", type=int, default=359, help="test images (digits, resized)")
    ap.add_argument("--train-epochs", type=int, default=1,
                    help="epochs on digits first: an untrained MobileNetV2's logits are about zero, and the reference "
                         "kernels refuse its int8 Softmax")
    a = ap.parse_args()

    import numpy as np

    from edgecnn.data import DataConfig, load_dataset
    from edgecnn.export import verify
    from edgecnn.runtimes import RuntimeOptions, open_session

    with tempfile.TemporaryDirectory() as tmp:
        print(f"building MobileNetV2-{a.alpha} at {a.size}x{a.size}x3 ({a.train_epochs} epoch(s) on digits) ...",
              flush=True)
        paths = tflite_pair("mobilenet_v2", (a.size, a.size, 3), Path(tmp), params={"alpha": a.alpha},
                            train_epochs=a.train_epochs)
        with quiet():
            ds = load_dataset(DataConfig(source="digits", image_size=(a.size, a.size), channels=3))
            x, y = ds.x_test[:a.images], ds.y_test[:a.images]
            fp32 = open_session("tflite", paths["fp32"], RuntimeOptions())
            reference = fp32.predict(x)
            fp32.close()
        results, seconds = {}, {}
        workers = verify._workers()
        for n in sorted({1, workers}):
            verify._workers = lambda n=n: n
            t0 = time.perf_counter()
            with quiet():
                results[n] = verify.kernel_parity(paths["int8"], x, y, reference, budget_s=1e9)
            seconds[n] = time.perf_counter() - t0
        keys = ("accuracy", "top1_agreement", "predictions_sha256")
        same = all({k: results[n][s].get(k) for s in results[n] for k in keys}
                   == {k: results[1][s].get(k) for s in results[1] for k in keys} for n in results)
        print(f"{len(x)} images, kernel sets {', '.join(results[1])}")
        for n, s in seconds.items():
            print(f"  {n} interpreter(s): {s:7.1f} s")
        if workers > 1:
            print(f"  ratio {seconds[workers] / seconds[1]:.2f} ({workers} CPUs; below 1: faster)")
        else:
            print("  one CPU here: nothing to compare")
        print(f"  figures identical: {'yes' if same else 'NO'}")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
