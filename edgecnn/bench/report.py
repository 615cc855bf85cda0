"""Bench reports: the terminal table (rich), bench.json, bench.md and the plots (matplotlib, Agg)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.contracts.rows import at_device, kib, ms, skipped_groups, worst_class_text
from edgecnn.io import atomic_path, write_json, write_text


def _f(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


def _where(r) -> str:
    return r.artifact + at_device(r.device)


def _worst(r) -> str:
    return worst_class_text(r.class_drop, r.worst_class)


# (header, cell, right-aligned, narrow table, timing column): the narrow set fits 100 columns; --wide shows all
COLUMN_SPECS = (
    ("artifact", _where, False, True, False),
    ("backend", lambda r: r.backend or "", False, True, False),
    ("accel", lambda r: (r.accelerator or "").replace("ExecutionProvider", ""), False, False, False),
    ("status", lambda r: r.status, False, True, False),
    ("acc", lambda r: _f(r.accuracy, ".4f"), True, True, False),
    ("drop pt", lambda r: _f(r.accuracy_drop, "+.2f"), True, True, False),
    ("agree", lambda r: _f(r.agreement, ".4f"), True, True, False),
    ("max|dp|", lambda r: _f(r.max_abs_diff, ".2g"), True, False, False),
    ("worst class pt", _worst, False, False, False),
    ("size", lambda r: kib(r.size_bytes), True, True, False),
    ("load", lambda r: ms(r.load_ms), True, False, True),
    ("first", lambda r: ms(r.first_ms), True, False, True),
    ("median", lambda r: ms((r.latency or {}).get("median_ms")), True, True, True),
    ("p90", lambda r: ms((r.latency or {}).get("p90_ms")), True, False, True),
    ("thru/s", lambda r: _f(r.throughput_ips, ".0f"), True, False, True),
    ("mem +MB", lambda r: _f(r.footprint_mb, ".1f"), True, False, False),
)
COLUMNS = tuple(c[0] for c in COLUMN_SPECS)


def columns(wide: bool = True, timing: bool = True) -> list:
    """The column specs to show: all (`wide`) or the narrow set, without timing columns when nothing was timed."""
    return [c for c in COLUMN_SPECS if (wide or c[3]) and (timing or not c[4])]


def cells(r, specs=COLUMN_SPECS) -> list:
    """A row as the table's text cells."""
    return [c[1](r) for c in specs]


def target_figures(r) -> Optional[str]:
    """The keys only some targets report (TFLite Micro, Ethos-U), as one line, or None."""
    parts = []
    if r.arena_bytes is not None:
        parts.append(f"arena {kib(r.arena_bytes)}")
    if r.sram_bytes is not None:
        parts.append(f"SRAM {kib(r.sram_bytes)}")
    if r.flash_bytes is not None:
        parts.append(f"flash {kib(r.flash_bytes)}")
    if r.npu_ops is not None:
        parts.append(f"{r.npu_ops} op(s) on the NPU, {r.cpu_ops} on the CPU")
    if r.est_ms is not None:
        parts.append(f"estimated {r.est_ms:.4g} ms (compiler estimate)")
    if r.max_int8_steps is not None:
        parts.append(f"{r.max_int8_steps} int8 step(s) at most from the builtin reference kernels")
    return ", ".join(parts) or None


def footnotes(result) -> list:
    """Reasons of skipped rows (once for the artifacts one runtime skips alike) and of failed rows, row notes,
    and how the timing was taken."""
    def where(r) -> str:
        return f"{r.artifact} on {r.backend}{at_device(r.device)}"

    lines = [f"failed: {where(r)}: {r.reason}" for r in result.rows if r.status == "failed"]
    lines += [f"skipped: {', '.join(arts)} on {b}{at_device(d)}: {why}"
              for b, d, arts, why in skipped_groups(result.rows)]
    lines += [f"{r.backend}: {where(r)}: {target_figures(r)}" for r in result.rows if target_figures(r)]
    lines += [f"note: {where(r)}: {r.note}" for r in result.rows if r.note]
    lines.append(f"timing: {result.settings.get('timing')}; latency at batch 1, throughput at batch "
                 f"{result.settings.get('batch')}; mem +MB: the row's peak resident memory above its start "
                 "(peak_rss_mb in bench.json: the process's peak during the row)")
    return lines


def console_width() -> int:
    """COLUMNS when set, else the terminal's width, else 100 (a pipe or a CI log)."""
    import os
    import shutil

    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    return shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else 100


def print_report(result, console=None, wide: bool = False) -> None:
    """The rows as a table, one line each, then reasons, notes and how the timing was taken, wrapped to the
    width. The narrow table (artifact, backend, status, accuracy, drop, agreement, size, median) fits 100
    columns; `wide` shows every column."""
    from rich.console import Console
    from rich.table import Table

    timing = any(r.latency for r in result.rows)
    specs = columns(wide, timing)
    if console is None:
        width = console_width()
        if wide:  # as wide as the table needs: a wide table is for a file or a wide window
            width = max(width, sum(max(len(c[0]), *(len(c[1](r)) for r in result.rows)) + 3 for c in specs) + 1)
        console = Console(width=width, soft_wrap=False)
    model, images = _what_ran(result)
    table = Table(title=f"edgecnn bench: {model} ({images}, {result.settings.get('threads')} thread(s))",
                  title_justify="left")
    for header, _, right, _, _ in specs:
        table.add_column(header, justify="right" if right else "left", no_wrap=True, overflow="ellipsis")
    style = {"ok": None, "skipped": "dim", "failed": "red"}
    for r in result.rows:
        table.add_row(*cells(r, specs), style=style.get(r.status))
    console.print(table)
    for line in footnotes(result):
        console.print(line, markup=False, highlight=False)


def _what_ran(result) -> tuple:
    """(the model file or run directory benched, "359 test images" or "33 images: all of FOLDER")."""
    src = result.settings.get("source", {})
    return (src.get("model") or src.get("run_dir"),
            f"{result.settings.get('test_images')} {src.get('images') or 'test images'}")


def markdown(result) -> str:
    """bench.md: the table, the footnotes and the settings."""
    model, images = _what_ran(result)
    out = [f"# edgecnn bench ({result.created})", "",
           f"Host: {result.host.get('cpu')} ({result.host.get('cpus')} CPUs), {result.host.get('os')}, "
           f"Python {result.host.get('python')}.", "",
           f"Run on {images}, model {model}.", "",
           "| " + " | ".join(c.replace("|", "\\|") for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in result.rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |")
    out += [""] + [f"- warning: {w}" for w in result.warnings]
    out += [f"- {line}" for line in footnotes(result)]
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


def plot_latency(rows, path: Path, title: str = "") -> Optional[Path]:
    """Median latency per artifact and backend (bar, value written beside it), min to p90 as whiskers, on a
    linear axis; the title names the host, threads and batch."""
    timed = [r for r in rows if r.status == "ok" and r.median_ms]
    if not timed:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(timed) + 1.8))
    labels = [f"{r.artifact} / {r.backend}{at_device(r.device)}" for r in timed]
    med = np.array([r.latency["median_ms"] for r in timed])
    lo = med - np.array([r.latency["min_ms"] for r in timed])
    hi = np.array([r.latency["p90_ms"] for r in timed]) - med
    ax.barh(range(len(timed)), med, xerr=[np.maximum(lo, 0), np.maximum(hi, 0)], color="tab:blue", alpha=0.8,
            capsize=3)
    ax.set_yticks(range(len(timed)), labels)
    ax.invert_yaxis()
    top = float(np.max(med + np.maximum(hi, 0)))
    for i, m in enumerate(med):
        ax.text(m + np.maximum(hi, 0)[i] + top * 0.01, i, ms(float(m)), va="center", fontsize=8)
    ax.set_xlim(0, top * 1.18)
    ax.set_xlabel("latency per inference, ms (bar: median; whiskers: min to p90)")
    ax.set_title(title or "median latency per artifact and backend")
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
                   label=f"{r.artifact} / {r.backend}{at_device(r.device)}")
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
        host = result.host
        title = (f"{host.get('cpu')} ({host.get('name')}), {result.settings.get('threads')} thread(s), "
                 f"batch 1; median of >= {result.settings.get('runs')} runs")
        files += [plot_latency(result.rows, out / "latency.png", title),
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
        plot_confusion(cm, target.class_names, path, title=f"{name} vs the Keras reference (agreement {agree:.4f})",
                       ylabel="Keras reference prediction", xlabel=f"{name} prediction")
        files.append(path)
    return files
