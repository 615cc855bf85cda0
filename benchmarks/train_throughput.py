"""Benchmark 3: training throughput of `edgecnn train` against a plain `model.fit` of the same model, data
and batch size (target: edgecnn at least 0.95x the plain fit).

    python benchmarks/train_throughput.py                      # digits, simple_cnn, batch 32, 12 epochs, 4 repeats
    python benchmarks/train_throughput.py --epochs 12 --batch-size 64 --repeats 3

Each run is its own process (edgecnn's determinism settings are process-wide), alternating. Both fits
validate every epoch on the same validation split. Throughput is training images per second over the
epochs after the first (tracing and compilation excluded), from an epoch timer callback given to both:
the median epoch (typical speed) and the fastest epoch (the intrinsic cost, least touched by other tenants of
a shared machine) of each run, then the median over runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

WORKER = "--worker"


def _timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._t0)

    return EpochTimer()


def worker(kind: str, epochs: int, batch_size: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edgecnn.data import DataConfig, load_dataset

    ds = load_dataset(DataConfig())
    timer = _timer()
    if kind == "edgecnn":
        from edgecnn.train import TrainConfig, train

        with tempfile.TemporaryDirectory() as out:
            train(TrainConfig(out=out, epochs=epochs, patience=epochs, lr_patience=epochs, batch_size=batch_size,
                              overwrite=True), extra_callbacks=[timer])
    else:
        import keras

        from edgecnn.models import ModelSpec, build, compile_model

        keras.utils.set_random_seed(0)
        spec = ModelSpec("simple_cnn", ds.input_shape, ds.num_classes)
        model = compile_model(build(spec), spec)
        model.fit(ds.x_train, ds.y_train, batch_size=batch_size, epochs=epochs, shuffle=True,
                  validation_data=(ds.x_val, ds.y_val), callbacks=[timer], verbose=0)
    steady = timer.seconds[1:] or timer.seconds
    return {"images": int(len(ds.y_train)), "epoch_s": timer.seconds,
            "images_per_s": len(ds.y_train) / float(np.median(steady)),
            "best_images_per_s": len(ds.y_train) / float(np.min(steady))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument(WORKER, choices=["edgecnn", "plain"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.epochs, args.batch_size)))
        return
    print(f"benchmark 3: edgecnn train vs plain model.fit, digits simple_cnn, batch {args.batch_size}, "
          f"{args.epochs} epochs, {args.repeats} alternating repeats (own process each)")
    got = {"edgecnn": [], "plain": []}
    best = {"edgecnn": [], "plain": []}
    for _ in range(args.repeats):
        for kind in ("plain", "edgecnn"):
            p = subprocess.run([sys.executable, __file__, WORKER, kind, "--epochs", str(args.epochs),
                                "--batch-size", str(args.batch_size)], capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit(f"{kind} run failed: {p.stderr.strip()[-800:]}")
            r = json.loads(p.stdout.strip().splitlines()[-1])
            got[kind].append(r["images_per_s"])
            best[kind].append(r["best_images_per_s"])
            print(f"  {kind:<8} {r['images_per_s']:8.0f} images/s  (epochs s: "
                  f"{', '.join(f'{s:.2f}' for s in r['epoch_s'])})")
    e, p = float(np.median(got["edgecnn"])), float(np.median(got["plain"]))
    be, bp = float(np.median(best["edgecnn"])), float(np.median(best["plain"]))
    print(f"median epoch:  edgecnn train {e:.0f} images/s, plain fit {p:.0f} images/s: ratio {e / p:.3f} "
          "(target >= 0.95)")
    print(f"fastest epoch: edgecnn train {be:.0f} images/s, plain fit {bp:.0f} images/s: ratio {be / bp:.3f}")


if __name__ == "__main__":
    main()
