"""Bench reports: the terminal table (rich), bench.json, bench.md and the plots (matplotlib, Agg)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.io import atomic_path, write_json, write_text

COLUMNS = ("artifact", "backend", "accel", "status", "acc", "drop pt", "agree", "max|dp|", "size KB", "load ms",
           "first ms", "median ms", "p90 ms", "thru/s", "mem +MB")


def _f(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


def cells(r) -> list:
    """A row as the table's text cells."""
    lat = r.latency or {}
    return [
        r.artifact + ("" if not r.device or r.device.startswith("local") else f" @{r.device}"),
        r.backend or "", (r.accelerator or "").replace("ExecutionProvider", ""), r.status,
        _f(r.accuracy, ".4f"), _f(r.accuracy_drop, "+.2f"), _f(r.agreement, ".4f"), _f(r.max_abs_diff, ".2g"),
        _f(r.size_bytes / 1024 if r.size_bytes is not None else None, ".1f"), _f(r.load_ms, ".1f"),
        _f(r.first_ms, ".3f"), _f(lat.get("median_ms"), ".4f"), _f(lat.get("p90_ms"), ".4f"),
        _f(r.throughput_ips, ".0f"), _f(r.footprint_mb, ".1f"),
    ]


def target_figures(r) -> Optional[str]:
    """The keys only some targets report (TFLite Micro, Ethos-U), as one line, or None."""
    parts = []
    if r.arena_bytes is not None:
        parts.append(f"arena {r.arena_bytes / 1024:.1f} KiB")
    if r.sram_bytes is not None:
        parts.append(f"SRAM {r.sram_bytes / 1024:.1f} KiB")
    if r.flash_bytes is not None:
        parts.append(f"flash {r.flash_bytes / 1024:.1f} KiB")
    if r.npu_ops is not None:
        parts.append(f"{r.npu_ops} op(s) on the NPU, {r.cpu_ops} on the CPU")
    if r.est_ms is not None:
        parts.append(f"estimated {r.est_ms:.4g} ms (compiler estimate)")
    if r.max_int8_steps is not None:
        parts.append(f"{r.max_int8_steps} int8 step(s) at most from the builtin reference kernels")
    return ", ".join(parts) or None


def footnotes(result) -> list:
    """Reasons of skipped and failed rows, row notes, and how the timing was taken."""
    def where(r) -> str:
        return f"{r.artifact} on {r.backend}" + ("" if not r.device or r.device.startswith("local") else
                                                 f" @{r.device}")

    lines = [f"{r.status}: {where(r)}: {r.reason}" for r in result.rows if r.status != "ok"]
    lines += [f"{r.backend}: {where(r)}: {target_figures(r)}" for r in result.rows if target_figures(r)]
    lines += [f"note: {where(r)}: {r.note}" for r in result.rows if r.note]
    lines.append(f"timing: {result.settings.get('timing')}; latency at batch 1, throughput at batch "
                 f"{result.settings.get('batch')}; mem +MB: the row's peak resident memory above its start "
                 "(peak_rss_mb in bench.json: the process's peak during the row)")
    return lines


def print_report(result, console=None) -> None:
    """The rows as a rich table, then reasons, notes and gate violations."""
    from rich.console import Console
    from rich.table import Table

    if console is None:  # a pipe or a CI log gets the full table, not 80 columns
        console = Console() if sys.stdout.isatty() else Console(width=200)
    src = result.settings.get("source", {})
    table = Table(title=f"edgecnn bench: {src.get('run_dir') or src.get('model')} "
                        f"({result.settings.get('test_images')} test images, {result.settings.get('threads')} thread)")
    for c in COLUMNS:
        table.add_column(c, justify="left" if c in ("artifact", "backend", "accel", "status") else "right",
                         overflow="fold")
    style = {"ok": None, "skipped": "dim", "failed": "red"}
    for r in result.rows:
        table.add_row(*cells(r), style=style.get(r.status))
    console.print(table)
    for line in footnotes(result):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def markdown(result) -> str:
    """bench.md: the table, the footnotes and the settings."""
    out = [f"# edgecnn bench ({result.created})", "",
           f"Host: {result.host.get('cpu')} ({result.host.get('cpus')} CPUs), {result.host.get('os')}, "
           f"Python {result.host.get('python')}.", "",
           "| " + " | ".join(c.replace("|", "\\|") for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in result.rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |")
    out += [""] + [f"- {line}" for line in footnotes(result)]
    if result.violations:
        out += ["", "## Parity gates failed", ""] + [f"- {v}" for v in result.violations]
    out += ["", "Columns: `drop pt` is the accuracy drop against the Keras reference in points (percent), `agree` "
            "the top-1 agreement with it, `max|dp|` the largest absolute probability difference (int8 outputs "
            "dequantized). Keys of bench.json: see docs/bench.md.", ""]
    return "\n".join(out)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _savefig(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    _plt().close(fig)


def plot_latency(rows, path: Path) -> Optional[Path]:
    """Median latency per artifact and backend (bar), p90 and min as whiskers."""
    timed = [r for r in rows if r.status == "ok" and r.median_ms]
    if not timed:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(timed) + 1.5))
    labels = [f"{r.artifact} / {r.backend}" + (f" @{r.device}" if r.device and not r.device.startswith("local")
                                                else "") for r in timed]
    med = np.array([r.latency["median_ms"] for r in timed])
    lo = med - np.array([r.latency["min_ms"] for r in timed])
    hi = np.array([r.latency["p90_ms"] for r in timed]) - med
    ax.barh(range(len(timed)), med, xerr=[np.maximum(lo, 0), np.maximum(hi, 0)], color="tab:blue", alpha=0.8,
            capsize=3)
    ax.set_yticks(range(len(timed)), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("latency per inference, ms (bar: median; whiskers: min to p90; log scale)")
    ax.grid(axis="x", alpha=0.3)
    _savefig(fig, path)
    return path


def plot_accuracy_latency(rows, path: Path) -> Optional[Path]:
    """Accuracy against median latency, one point per row."""
    pts = [r for r in rows if r.status == "ok" and r.median_ms and r.accuracy is not None]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    artifacts = sorted({r.artifact for r in pts})
    backends = sorted({r.backend for r in pts})
    markers = "osD^v<>P*Xh"
    for r in pts:  # colour: artifact, marker: backend (labels would overlap: rows often share an accuracy)
        ax.scatter(r.median_ms, r.accuracy, s=50, alpha=0.8, color=f"C{artifacts.index(r.artifact) % 10}",
                   marker=markers[backends.index(r.backend) % len(markers)],
                   label=f"{r.artifact} / {r.backend}" + (f" @{r.device}" if r.device and
                                                         not r.device.startswith("local") else ""))
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_xscale("log")
    ax.set_xlabel("median latency, ms (log)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    _savefig(fig, path)
    return path


def write_reports(result, target, ref_pred, predictions: dict, cfg) -> None:
    """Write bench.json, bench.md and the plots into the target's out dir; record them in `result.files`."""
    out = Path(target.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.out_dir = out
    files = [write_json(out / "bench.json", result.to_dict()), write_text(out / "bench.md", markdown(result))]
    if cfg.plots:
        files += [plot_latency(result.rows, out / "latency.png"),
                  plot_accuracy_latency(result.rows, out / "accuracy_vs_latency.png")]
        if ref_pred is not None:
            files += _confusions(result.rows, target, ref_pred, predictions, out)
    result.files = [Path(f) for f in files if f]


def _confusions(rows, target, ref_pred, predictions: dict, out: Path) -> list:
    """Reference prediction (rows) against each quantized artifact's prediction (columns)."""
    from sklearn.metrics import confusion_matrix

    from edgecnn.reporting import plot_confusion

    files = []
    quantized = {r.artifact for r in rows if r.status == "ok" and r.precision and r.precision != "fp32"}
    labels = list(range(len(target.class_names)))
    for name in sorted(quantized & set(predictions)):
        pred = predictions[name].argmax(axis=1)
        cm = confusion_matrix(ref_pred, pred, labels=labels)
        agree = float(np.trace(cm)) / max(1, int(cm.sum()))
        path = out / f"confusion_{name}_vs_keras.png"
        plot_confusion(cm, target.class_names, path,
                       title=f"{name} vs Keras reference (agreement {agree:.4f}); rows: reference, columns: {name}")
        files.append(path)
    return files
