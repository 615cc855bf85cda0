"""Benchmark 5: training at real data sizes: peak memory and the speed of streaming input.

    python benchmarks/data_scale.py                 # all three checks (about 10 minutes on 2 cores)
    python benchmarks/data_scale.py --only speed    # one of: npz, folders, speed, photos, cache
    python benchmarks/data_scale.py --scale 0.02    # every image count x 0.02: checks the script runs, in a minute

It prints, side by side in one run:
1. A 60,000-image 64x64x3 uint8 .npz (738 MB): peak RSS of one epoch of `edgecnn train` against the file's size
   plus 2 GB (target: ratio <= 1.0). Holding it as float32 would take 2.9 GB before the first step.
2. Image folders of 5,000 and 20,000 PNGs at 96x96x3: peak RSS of one epoch each (target: 20k/5k <= 1.10).
3. A 50,000-image 32x32x3 .npz: seconds per epoch with float32 splits in memory (`--stream off`) and streamed
   from the uint8 pixels (`--stream on`), epochs after the first (target: in-memory/streamed >= 0.9).
4. Phone photos (12 MP JPEGs, 4032x3024) read for a 96x96 model: seconds per photo of the script's `read_image`
   (what training and the device do with a file) against decoding the JPEG alone (target: <= 3.0), and, for
   the record, against converting the whole photo to float32 before resizing, as edgecnn did before 2026-12-03.
5. A folder of 1,200 2 MP JPEGs for a 64x64 model (--speed-epochs + 3 epochs): seconds per epoch after the
   first with the image cache off (`EDGECNN_CACHE=off`: every image decoded and resized every epoch) against on
   (target: off/on >= 3.0), export's wall time and each training's peak RSS.

Each `edgecnn train` is its own process; its peak RSS is the kernel's high-water mark from wait4(). The data is
synthetic (class-coloured patterns plus noise), written once under --work and reused.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GB = 2 ** 30
MB = 2 ** 20


def _images(rng, n: int, size: int, classes: int = 10):
    """uint8 (n, size, size, 3) images whose colour and stripe frequency depend on the class, with noise."""
    y = rng.integers(0, classes, n).astype(np.int64)
    grid = np.linspace(0, 1, size, dtype=np.float32)
    out = np.empty((n, size, size, 3), np.uint8)
    for start in range(0, n, 2000):
        yy = y[start:start + 2000]
        k = (yy + 1)[:, None, None].astype(np.float32)
        base = 0.5 + 0.5 * np.sin(k * np.pi * grid[None, :, None] + grid[None, None, :] * 3)
        col = np.stack([base, base[:, ::-1], 1 - base], -1) * (0.5 + 0.05 * yy[:, None, None, None])
        noise = rng.normal(0, 0.04, col.shape).astype(np.float32)
        out[start:start + 2000] = np.clip((col + noise) * 255, 0, 255).astype(np.uint8)
    return out, y


def make_npz(path: Path, n: int, size: int) -> Path:
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    n_test = n // 6
    x, y = _images(rng, n, size)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x_train=x[n_test:], y_train=y[n_test:], x_test=x[:n_test], y_test=y[:n_test])
    os.replace(tmp, path)
    return path


def make_folder(path: Path, n: int, size: int) -> Path:
    from PIL import Image

    done = path / ".complete"
    if done.is_file():
        return path
    rng = np.random.default_rng(1)
    x, y = _images(rng, n, size)
    for i, (im, label) in enumerate(zip(x, y)):
        d = path / f"class_{label}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{i:06d}.png", compress_level=1)
    done.write_text("ok")
    return path


def train(data: Path, out: Path, epochs: int, *extra: str) -> dict:
    """One `edgecnn train` in its own process: peak RSS (MB), wall seconds, seconds of each epoch."""
    cmd = [sys.executable, "-m", "edgecnn", "train", "--data", str(data), "--out", str(out), "--overwrite",
           "--epochs", str(epochs), "--patience", str(epochs), "-v", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{text[-2000:]}")
    epochs_s = [float(m) for m in re.findall(r"^epoch \d+/\d+ .*?\s([\d.]+) s\s+ETA", text, re.M)]
    return {"rss_mb": usage.ru_maxrss / 1024, "wall_s": wall, "epochs_s": epochs_s}


def photos(work: Path, count: int) -> tuple:
    """Seconds per 12 MP JPEG: decoding alone, the script's read_image, and the whole-photo float32 path."""
    from PIL import Image

    from edgecnn.script.edgecnn_infer import image_array, read_image, resize_bilinear, to_channels

    folder = work / "photos_12mp"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        f = folder / f"{i}.jpg"
        if not f.is_file():  # a smooth random scene at 1/8 size, upscaled: compresses like a photo
            small = rng.integers(0, 256, (378, 504, 3), dtype=np.uint8)
            Image.fromarray(small).resize((4032, 3024), Image.BILINEAR).save(f, quality=90)
        files.append(f)
    prep = {"image_size": [96, 96], "channels": 3, "pixel_max": 255.0}

    def decode(f):
        with Image.open(f) as im:
            im.load()

    def whole_float(f):  # before 2026-12-03: every pixel to float32, then the resize
        with Image.open(f) as im:
            x = image_array(im, str(f)).astype(np.float32)[None] / np.float32(255.0)
        return np.clip(resize_bilinear(to_channels(x, 3), prep["image_size"]), 0, 1)

    sec = {}
    for name, fn in (("decode", decode), ("read_image", lambda f: read_image(str(f), prep)),
                     ("whole_float", whole_float)):
        fn(files[0])  # warm-up
        t = time.perf_counter()
        for f in files:
            fn(f)
        sec[name] = (time.perf_counter() - t) / len(files)
    print(f"photos: {sec}", flush=True)
    return ("12 MP JPEG -> 96x96, s/photo",
            f"read_image {sec['read_image']:.3f} s, decode alone {sec['decode']:.3f} s, whole photo to float32 "
            f"first {sec['whole_float']:.3f} s ({sec['whole_float'] / sec['read_image']:.1f}x read_image)",
            sec["read_image"] / sec["decode"], "<= 3.0")


def make_photo_folder(path: Path, n: int, size=(1200, 1600), classes: int = 4) -> Path:
    """`n` JPEG photos of `size` (2 MP by default), class-coloured smooth scenes, one folder per class."""
    from PIL import Image

    done = path / ".complete"
    if done.is_file():
        return path
    rng = np.random.default_rng(2)
    h, w = size
    for i in range(n):
        k = i % classes
        d = path / f"class_{k}"
        d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (h // 8, w // 8, 3)).astype(np.float32)
        small[..., k % 3] = small[..., k % 3] * 0.3 + 170  # the class's colour dominates
        Image.fromarray(small.astype(np.uint8)).resize((w, h), Image.BILINEAR).save(d / f"{i:05d}.jpg", quality=90)
    done.write_text("ok")
    return path


def cache(work: Path, count: int, epochs: int) -> tuple:
    """A folder of 2 MP photos for a 64x64 model: seconds per epoch after the first, and export's wall time, with
    the image cache off and on (a fresh cache: the first epoch fills it)."""
    import shutil

    folder = make_photo_folder(work / f"photos{count}_2mp", count)
    store = work / "image_cache"
    shutil.rmtree(store, ignore_errors=True)
    runs = {}
    for mode, env in (("off", "off"), ("on", str(store))):
        os.environ["EDGECNN_CACHE"] = env
        runs[mode] = train(folder, work / f"run_photos{count}_{mode}", epochs, "--image-size", "64", "64")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "edgecnn", "export", str(work / f"run_photos{count}_{mode}"), "-q",
                        "--formats", "tflite"], check=True)
        runs[mode]["export_s"] = time.perf_counter() - t
        print(f"cache {mode}: {runs[mode]}", flush=True)
    os.environ.pop("EDGECNN_CACHE")
    sec = {m: statistics.median(r["epochs_s"][1:] or r["epochs_s"]) for m, r in runs.items()}
    first = runs["on"]["epochs_s"][0] if runs["on"]["epochs_s"] else float("nan")
    return (f"{count} 2 MP JPEGs -> 64x64, s/epoch",
            f"no cache {sec['off']:.2f} s, cached {sec['on']:.2f} s (first epoch, filling it, {first:.2f} s); "
            f"export {runs['off']['export_s']:.1f} vs {runs['on']['export_s']:.1f} s; peak RSS "
            f"{runs['off']['rss_mb']:.0f} vs {runs['on']['rss_mb']:.0f} MB",
            sec["off"] / sec["on"], ">= 3.0")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "edgecnn" / "data_scale"),
                    help="where the synthetic data and runs go (reused between runs)")
    ap.add_argument("--only", choices=["npz", "folders", "speed", "photos", "cache"], default=None)
    ap.add_argument("--speed-epochs", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every image count (0.02: a smoke run; the targets hold at 1.0 only)")
    a = ap.parse_args()
    n = lambda count: max(60, int(count * a.scale))  # noqa: E731
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    results = []

    if a.only in (None, "npz"):
        big = make_npz(work / f"x{n(72_000)}_64.npz", n(72_000), 64)  # 60,000 train (+12,000 test)
        size_mb = big.stat().st_size / MB
        r = train(big, work / f"run_{n(60_000)}", 1)
        limit = size_mb + 2048
        results.append((f"{n(60_000) // 1000}k 64x64x3 .npz, 1 epoch",
                        f"peak RSS {r['rss_mb']:.0f} MB; file {size_mb:.0f} MB + 2 GB = {limit:.0f} MB",
                        r["rss_mb"] / limit, "<= 1.0"))
        print(f"npz: {r}", flush=True)

    if a.only in (None, "folders"):
        rss = {}
        small, large = n(5_000), n(20_000)
        for count in (small, large):
            folder = make_folder(work / f"png{count}_96", count, 96)
            rss[count] = train(folder, work / f"run_png{count}", 1)
            print(f"folder {count}: {rss[count]}", flush=True)
        results.append(("PNG folders 96x96x3, 1 epoch", f"peak RSS {large} images {rss[large]['rss_mb']:.0f} MB vs "
                        f"{small} {rss[small]['rss_mb']:.0f} MB", rss[large]["rss_mb"] / rss[small]["rss_mb"],
                        "<= 1.10"))

    if a.only in (None, "speed"):
        mid = make_npz(work / f"x{n(60_000)}_32.npz", n(60_000), 32)  # 50,000 train (+10,000 test)
        runs = {}
        for mode in ("off", "on"):
            runs[mode] = train(mid, work / f"run_{n(50_000)}_{mode}", a.speed_epochs, "--stream", mode)
            print(f"stream {mode}: {runs[mode]}", flush=True)
        sec = {m: statistics.median(r["epochs_s"][1:] or r["epochs_s"]) for m, r in runs.items()}
        results.append((f"{n(50_000) // 1000}k 32x32x3 .npz, s/epoch",
                        f"in memory {sec['off']:.1f} s, streamed {sec['on']:.1f} s "
                        f"(peak RSS {runs['off']['rss_mb']:.0f} vs {runs['on']['rss_mb']:.0f} MB)",
                        sec["off"] / sec["on"], ">= 0.9"))

    if a.only in (None, "photos"):
        results.append(photos(work, max(3, int(24 * min(1.0, a.scale * 10)))))

    if a.only in (None, "cache"):
        results.append(cache(work, n(1_200), a.speed_epochs + 3))  # the median of several cached epochs

    print()
    print(f"{'check':32} {'ratio':>7}  {'target':8} measured")
    for name, detail, ratio, target in results:
        print(f"{name:32} {ratio:7.3f}  {target:8} {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
