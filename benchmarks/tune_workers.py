"""Benchmark 6: `edgecnn tune --workers 2` against `--workers 1`, each worker one thread (target: <= 0.65x wall).

    python benchmarks/tune_workers.py                     # digits, 10 trials of 8 epochs, 3 repeats
    python benchmarks/tune_workers.py --trials 6 --repeats 1

Both runs are the same command (same seed, trials, epochs, data) on KerasTuner's chief/worker engine, one
after the other, alternating; the figure is the search's wall time as `trials.json` records it
(`search_seconds`: from building the chief's oracle to the last trial's end, worker start-up included). The retrain
of the best trial is the same for both and left out. The Bayesian oracle proposes from the trials finished so
far, so two workers see fewer results when they ask and may pick other hyperparameters: the summed trial
seconds are printed too, to show how much work each search did.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def search(workers: int, trials: int, epochs: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "edgecnn", "tune", "--out", str(out), "--overwrite", "--max-trials", str(trials),
           "--trial-epochs", str(epochs), "--workers", str(workers), "--worker-threads", "1", "--epochs", "1",
           "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout[-1500:]}\n{p.stderr[-1500:]}")
    rec = json.loads((out / "trials.json").read_text())
    done = [t for t in rec["trials"] if t["score"] is not None]
    return {"wall": rec["search_seconds"], "trials": len(done), "work": sum(t["seconds"] or 0 for t in done),
            "workers": sorted({t["worker"] for t in done})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    runs = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            for n in (1, 2):
                res = search(n, a.trials, a.epochs, Path(tmp) / f"w{n}_{r}")
                runs[n].append(res)
                print(f"workers {n} run {r + 1}: {res}", flush=True)
    wall = {n: statistics.median(x["wall"] for x in v) for n, v in runs.items()}
    work = {n: statistics.median(x["work"] for x in v) for n, v in runs.items()}
    print()
    print(f"search wall time: 1 worker {wall[1]:.1f} s, 2 workers {wall[2]:.1f} s (median of {a.repeats}); "
          f"summed trial time {work[1]:.1f} s vs {work[2]:.1f} s")
    pairs = ", ".join(f"{b['wall'] / a['wall']:.2f}" for a, b in zip(runs[1], runs[2]))
    print(f"ratio 2 workers / 1 worker: {wall[2] / wall[1]:.3f}  (target <= 0.65; run by run: {pairs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
