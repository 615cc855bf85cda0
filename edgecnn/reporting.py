"""Plots and terminal tables shared by the stages (matplotlib with the Agg backend, rich tables)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgecnn.io import atomic_path

MARKED_EPOCHS = 20  # curves of this many epochs or fewer mark each epoch's point


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png")
    _pyplot().close(fig)


def best_epoch(history: dict):
    """The epoch (1-based) with the lowest validation loss, whose weights the run keeps, or None."""
    val = history.get("val_loss") or []
    if not val:
        return None
    epochs = np.asarray(history.get("epoch", range(len(val)))) + 1
    return int(epochs[int(np.nanargmin(val))])


def plot_curves(history: dict, path: Path) -> None:
    """Train and validation accuracy and loss per epoch, with the best epoch (lowest val_loss) marked."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.asarray(history.get("epoch", range(len(history.get("loss", []))))) + 1
    best = best_epoch(history)
    for ax, metric, ylabel in zip(axes, ("accuracy", "loss"), ("accuracy (fraction correct)",
                                                               "loss (sparse categorical cross-entropy)")):
        for key, style in (("", "-"), ("val_", "--"), ("val_balanced_", ":")):  # the last: --class-weight balanced
            if key + metric in history:
                ax.plot(epochs, history[key + metric], style, label=(key or "train_") + metric,
                        marker="o" if len(epochs) <= MARKED_EPOCHS else None)  # one epoch: a line of one point
        if best is not None:
            ax.axvline(best, color="tab:red", linestyle=":", label=f"best epoch {best} (kept)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 1.5" on a short run
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)  # else matplotlib spans 0.945-1.055 in fractional ticks
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


ANNOTATED_CLASSES = 30  # above this many classes a confusion matrix's cells carry no counts (Ultralytics' rule)
CONFUSION_INCHES = 14.0  # and the figure stops growing: 120 classes drew 14,400 counts on 5,300 px in 28 s
LABELLED_CLASSES = 80  # tick labels at most; beyond, every k-th class is named


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: Path, title: str = "",
                   ylabel: str = "true class", xlabel: str = "predicted class") -> None:
    """A confusion matrix (rows: `ylabel`, columns: `xlabel`): counts in the cells up to 30 classes; beyond, a
    log colour scale with empty cells white, so a single off-diagonal image still shows among thousands."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    cm = np.asarray(cm)
    n = len(class_names)
    size = min(CONFUSION_INCHES, max(4.0, 0.45 * n + 2))
    fig, ax = plt.subplots(figsize=(size, size))
    step = max(1, -(-n // LABELLED_CLASSES))
    ticks = list(range(0, n, step))
    font = 10 if n <= ANNOTATED_CLASSES else max(5.0, min(9.0, 700 / len(ticks)))
    ax.set_xticks(ticks, [str(class_names[i]) for i in ticks], rotation=45 if n <= ANNOTATED_CLASSES else 90,
                  ha="right" if n <= ANNOTATED_CLASSES else "center", fontsize=font)
    ax.set_yticks(ticks, [str(class_names[i]) for i in ticks], fontsize=font)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if n <= ANNOTATED_CLASSES:
        ax.imshow(cm, cmap="Blues")
        hi = cm.max() if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > hi / 2 else "black")
    else:
        from matplotlib.colors import ListedColormap

        cmap = ListedColormap(plt.get_cmap("Blues")(np.linspace(0.3, 1.0, 256))).with_extremes(bad="white")
        # (Blues' own pale end hid a 1)
        im = ax.imshow(np.ma.masked_less(cm, 1), cmap=cmap, norm=LogNorm(vmin=1, vmax=max(1, int(cm.max()))),
                       interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="images (log scale; white: none)")
    if title:
        ax.set_title(title)
    _save(fig, path)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence], console=None,
                no_wrap: bool = False) -> None:
    """Print a rich table; cells are rendered with str(). `no_wrap` keeps every cell on one line (a table of
    figures, whose columns must fit the width)."""
    from rich.console import Console
    from rich.table import Table

    cells = [["" if v is None else str(v) for v in r] for r in rows]
    table = Table(title=title)
    for i, c in enumerate(columns):
        column = [r[i] for r in cells if i < len(r)]
        table.add_column(c, no_wrap=no_wrap, justify="right" if figures_only(column) else "left")
    for r in cells:
        table.add_row(*r)
    (console or Console()).print(table)


FIGURE = re.compile(r"[+-]?\d[\d,]*(\.\d+)?(e[+-]?\d+)?( ?(%|x|KiB|MiB|ms|s|us|MB))?")


def figures_only(column: Sequence[str]) -> bool:
    """Whether a column holds figures (numbers with a unit, or "-" where there is none): those are right-aligned,
    so their digits line up."""
    filled = [c.strip() for c in column if c.strip() not in ("", "-")]
    return bool(filled) and all(FIGURE.fullmatch(c) for c in filled)
