"""Device-aware tuning: each trial's model converted to int8 TFLite and measured on the target, a budget that
penalises the trials over it, and the Pareto front of accuracy against latency and size.

The measurement goes through the runtime layer, as `edgecnn bench` measures:
- `tflite`: LiteRT on this host, 1 thread, XNNPACK; the median of the bench timing loop (`time_runs`);
- `tflm`: TensorFlow Lite for Microcontrollers; the smallest arena that allocates (`arena_bytes`), and the
  median latency on this host's reference kernels;
- `ethos-u`: Arm Vela's compile for Ethos-U55-128 (`--npu` in bench); its estimated time is the latency
  (`est_ms`), with SRAM and the ops left on the CPU.
The objective KerasTuner maximises becomes `score`: the search's objective (validation accuracy, or balanced
accuracy with balanced class weights) inside the budget, and it minus one outside it (so the oracle learns from
over-budget trials and steers away).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgecnn.errors import ConfigError
from edgecnn.models.metrics import BALANCED_ACCURACY

MEASURE_ON = ("tflite", "tflm", "ethos-u")
SCORE = "score"  # the constrained objective's name
PENALTY = 1.0
OBJECTIVE_LABELS = {"val_accuracy": "validation accuracy",
                    BALANCED_ACCURACY: "validation balanced accuracy (mean recall)"}
FIGURES = ("int8_size_bytes", "int8_latency_ms", "arena_bytes", "est_ms", "sram_bytes", "cpu_ops")


@dataclass(frozen=True)
class DeviceBudget:
    """What a trial's int8 model must fit; None leaves a figure unconstrained."""

    max_latency_ms: Optional[float] = None
    max_size_kb: Optional[float] = None
    max_arena_kb: Optional[float] = None
    measure_on: str = "tflite"  # tflite | tflm | ethos-u | USER@HOST[:PORT] (a board, over SSH)
    ssh_options: tuple = ()  # a board: extra OpenSSH options "Key=Value" (Python API; the CLI uses ~/.ssh/config)
    identity: Optional[str] = None  # a board: private key file

    def __post_init__(self):
        object.__setattr__(self, "ssh_options", tuple(self.ssh_options))
        if self.on_board:
            from edgecnn.device.remote import parse_host

            parse_host(self.measure_on)  # ConfigError when malformed
        elif self.measure_on not in MEASURE_ON:
            raise ConfigError(f"--measure-on must be one of {', '.join(MEASURE_ON)} or a board USER@HOST[:PORT] "
                              f"(got {self.measure_on})")
        for name in ("max_latency_ms", "max_size_kb", "max_arena_kb"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0 (got {v})")
        if self.max_arena_kb is not None and self.measure_on != "tflm":
            raise ConfigError("--max-arena-kb is measured by TFLite Micro: add --measure-on tflm")

    @property
    def on_board(self) -> bool:
        return "@" in self.measure_on

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.max_latency_ms, self.max_size_kb, self.max_arena_kb))

    def violations(self, figures: dict) -> list:
        """The budget lines a trial's figures break (empty: inside the budget)."""
        out = []
        lat, size, arena = figures.get("int8_latency_ms"), figures.get("int8_size_bytes"), figures.get("arena_bytes")
        if self.max_latency_ms is not None and (lat is None or lat > self.max_latency_ms):
            out.append(f"latency {lat if lat is None else f'{lat:.3f}'} ms > {self.max_latency_ms:g} ms")
        if self.max_size_kb is not None and (size is None or size / 1024 > self.max_size_kb):
            out.append(f"size {size if size is None else f'{size / 1024:.1f}'} KiB > {self.max_size_kb:g} KiB")
        if self.max_arena_kb is not None and (arena is None or arena / 1024 > self.max_arena_kb):
            out.append(f"arena {arena if arena is None else f'{arena / 1024:.1f}'} KiB > {self.max_arena_kb:g} KiB")
        return out


def measure(model, probe: dict, budget: DeviceBudget) -> dict:
    """Convert `model` to int8 TFLite (PTQ on `probe["calib"]`) and measure it on `budget.measure_on`; `probe`
    also holds the data's "preprocessing" and "class_names", which a board's manifest needs.

    Returns:
        {"int8_size_bytes", "int8_latency_ms", and per target "arena_bytes" | "est_ms", "sram_bytes", "cpu_ops",
        "measured_on"}; a figure the target cannot give is None and the reason is under "note".
    """
    from edgecnn.export.converter import keras_to_tflite
    from edgecnn.runtimes import RuntimeOptions, Unavailable, open_session

    calib = probe["calib"]
    flat = keras_to_tflite(model, int8=True, calib=calib)
    out = {"int8_size_bytes": len(flat), "int8_latency_ms": None, "measured_on": budget.measure_on}
    with tempfile.TemporaryDirectory(prefix="edgecnn-trial-") as tmp:
        path = Path(tmp) / "model_int8.tflite"
        path.write_bytes(flat)
        if budget.on_board:
            _measure_board(path, probe, budget, out)
            return out
        try:
            sess = open_session(budget.measure_on, path, RuntimeOptions(threads=1))
        except Unavailable as e:
            out["note"] = str(e)
            return out
        try:
            x = calib[:1]
            _measure_on(sess, x, budget, out)
        except Exception as e:  # a model the target cannot take is a trial over the budget, not a failed search
            from edgecnn.native import one_line

            out["note"] = f"{budget.measure_on}: {one_line(e)}"
        finally:
            sess.close()
    return out


def _measure_board(path: Path, probe: dict, budget: DeviceBudget, out: dict) -> None:
    """The on-device script on the board over SSH, as `edgecnn bench --remote` runs it, with a manifest that
    vouches for this trial's model (its sha256)."""
    import json

    from edgecnn.device.remote import run_remote, write_npz
    from edgecnn.io import sha256

    manifest = {"schema": "edgecnn.manifest/1", "class_names": list(probe["class_names"]),
                "preprocessing": dict(probe["preprocessing"]),
                "artifacts": {"tflite_int8": {"file": path.name, "format": "tflite", "precision": "int8",
                                              "sha256": sha256(path)}}}
    mpath = path.parent / "manifest.json"
    mpath.write_text(json.dumps(manifest))
    npz = write_npz(path.parent / "probe.npz", probe["calib"][:4])
    rows = run_remote(budget.measure_on, [path], mpath, npz, threads=1, runs=30, warmup=1, min_s=0.3,
                      warmup_min_s=0.1, max_s=5.0, timeout=120, ssh_options=budget.ssh_options,
                      identity=budget.identity)
    row = rows[0] if rows else {}
    if row.get("status") == "ok" and row.get("latency"):
        out["int8_latency_ms"] = row["latency"]["median_ms"]
        out["device"] = row.get("device")
    else:
        out["note"] = f"{budget.measure_on}: {row.get('reason') or 'no result'}"


def _measure_on(sess, x, budget: DeviceBudget, out: dict) -> None:
    """The target's figures into `out`: Vela's estimate on ethos-u, else the bench timing loop's median (and the
    smallest arena on tflm)."""
    from edgecnn.script.edgecnn_infer import latency_stats, time_runs

    if budget.measure_on == "ethos-u":
        extras = sess.extras(x)
        out.update({k: extras.get(k) for k in ("est_ms", "sram_bytes", "cpu_ops")})
        out["int8_latency_ms"] = extras.get("est_ms")
        return
    fn = sess.runner(x)
    out["int8_latency_ms"] = latency_stats(time_runs(fn, warmup_min_s=0.1, runs=30, min_s=0.3, max_s=5.0))["median_ms"]
    if budget.measure_on == "tflm":
        out["arena_bytes"] = sess.extras(x).get("arena_bytes")


def pareto_front(trials: list, keys=("int8_latency_ms", "int8_size_bytes"), objective: str = "val_accuracy") -> list:
    """Ids of the trials no other trial beats on the objective and on every figure in `keys` at once."""
    pts = [(t["trial_id"], t.get(objective) if t.get(objective) is not None else t.get("score"),
            [t.get(k) for k in keys]) for t in trials]
    pts = [p for p in pts if p[1] is not None and all(v is not None for v in p[2])]
    front = []
    for tid, acc, figs in pts:
        dominated = any(a >= acc and all(f2 <= f for f2, f in zip(fs, figs))
                        and (a > acc or any(f2 < f for f2, f in zip(fs, figs)))
                        for other, a, fs in pts if other != tid)
        if not dominated:
            front.append(tid)
    return front


def plot_pareto(trials: list, front: list, path: Path, budget: DeviceBudget,
                objective: str = "val_accuracy") -> Optional[Path]:
    """The objective against int8 latency (left) and int8 size (right), the front joined, the budget as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecnn.io import atomic_path

    rows = [t for t in trials if t.get(objective) is not None and t.get("int8_latency_ms") is not None]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, scale, label, limit in (
            (axes[0], "int8_latency_ms", 1.0, f"int8 latency (ms, {budget.measure_on})", budget.max_latency_ms),
            (axes[1], "int8_size_bytes", 1 / 1024, "int8 size (KiB)", budget.max_size_kb)):
        colours = ["tab:red" if t.get("over_budget") else "tab:green" for t in rows]
        ax.scatter([t[key] * scale for t in rows], [t[objective] for t in rows], c=colours)
        on = sorted((t[key] * scale, t[objective]) for t in rows if t["trial_id"] in front)
        if on:
            ax.plot([p[0] for p in on], [p[1] for p in on], "k--", linewidth=1, label="Pareto front")
        if limit is not None:
            ax.axvline(limit, color="tab:red", linewidth=1, label="budget")
        ax.set_xlabel(label)
        ax.set_ylabel(OBJECTIVE_LABELS.get(objective, objective))
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("trials: green inside the budget, red over it")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
