"""Benchmark: a fleet of boards benched at once against one board alone (issue 14's target: three boards in at
most 1.5x the time of one). The boards are three OpenSSH servers on 127.0.0.1 (Debian's openssh-server), each
running the on-device script with this Python, as `edgecnn bench --remote` runs it on a Raspberry Pi.

    python benchmarks/fleet_bench.py [--runs 50] [--repeat 3]

Prints the wall time of one board, of three boards with --remote-jobs 3, and their ratio, measured in one run.
On this machine the "boards" share its 2 cores, so the ratio is an upper bound of a real fleet's.
"""
from __future__ import annotations

import argparse
import getpass
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=50, help="timed runs per model on each board")
    p.add_argument("--repeat", type=int, default=3, help="measurements of each case (median reported)")
    a = p.parse_args()

    import numpy as np

    from _sshd import SSHD, keygen, start_sshd, stop
    from edgecnn.data import DataConfig, load_dataset
    from edgecnn.device.fleet import run_fleet
    from edgecnn.device.remote import write_npz
    from edgecnn.export import ExportConfig, export
    from edgecnn.train import TrainConfig, train

    if not SSHD:
        print("needs OpenSSH: apt-get install openssh-server openssh-client", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        tmp = Path(tmp)
        run = tmp / "run"
        train(TrainConfig(out=str(run), epochs=3))
        export(run, ExportConfig(formats=("tflite_int8",)))
        ds = load_dataset(DataConfig())
        npz = write_npz(tmp / "data.npz", ds.x_test, ds.y_test)
        user_key = keygen(tmp / "user_key")
        servers, hosts = [], []
        for i in range(3):
            d = tmp / f"board{i}"
            d.mkdir()
            servers.append(start_sshd(d, user_key, keygen(d / "host_key")))
            hosts.append(f"{getpass.getuser()}@127.0.0.1:{servers[-1][1]}")
        kw = dict(timeout=300, runs=a.runs, identity=str(user_key), python=sys.executable,
                  ssh_options=[f"UserKnownHostsFile={tmp / 'known_hosts'}"], accept_new_host_keys=True)
        model, manifest = [run / "export" / "model_int8.tflite"], run / "export" / "manifest.json"
        try:
            def wall(entries, jobs):
                t0 = time.perf_counter()
                rows = run_fleet(entries, model, manifest, npz, jobs=jobs, **kw)
                assert all(r["status"] == "ok" for r in rows), [r.get("reason") for r in rows]
                return time.perf_counter() - t0

            wall(hosts, 3)  # warm-up: host keys, page cache
            one, three = [], []
            for _ in range(a.repeat):  # interleaved, so drift on a shared machine hits both alike
                one.append(wall(hosts[:1], 1))
                three.append(wall(hosts, 3))
        finally:
            for proc, _, log in servers:
                stop(proc, log)
    m1, m3 = statistics.median(one), statistics.median(three)
    print(f"one board: {m1:.2f} s, three boards (--remote-jobs 3): {m3:.2f} s, ratio {m3 / m1:.2f} "
          f"(target <= 1.5; {a.repeat} measurements each, median; {np.__name__} {np.__version__})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
