"""Parity: how far an artifact's predictions are from the reference's. One function for export
verification, bench rows, board rows and the emulated aarch64 run.

Python::

    from edgecnn.contracts.parity import parity
    p = parity(probs, reference_probs, labels)
    p.accuracy, p.accuracy_drop, p.agreement, p.max_abs_diff
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from edgecnn.script.edgecnn_infer import manifest_figures


@dataclass(frozen=True)
class Parity:
    """Accuracy against the labels, and agreement with the reference predictions."""

    accuracy: Optional[float]  # top-1 accuracy on the labels (None without labels)
    reference_accuracy: Optional[float]  # the reference's accuracy on the same labels
    accuracy_drop: Optional[float]  # points (percent) below the reference; negative: better
    agreement: Optional[float]  # fraction of identical top-1 predictions (None without reference probabilities)
    max_abs_diff: Optional[float]  # max |p - p_ref| over every probability
    n: int  # inputs compared
    class_drop: Optional[float] = None  # the largest drop of one class's recall below the reference's, points
    # (0: none falls; None without labels and reference predictions)
    worst_class: Optional[int] = None  # that class (None when none falls)
    class_lost: Optional[int] = None  # its test images the reference gets right beyond the artifact's (net)
    class_support: Optional[int] = None  # its test images

    @property
    def flips(self) -> Optional[int]:
        """How many top-1 predictions differ from the reference's."""
        return None if self.agreement is None else differing(self.agreement, self.n)

    def to_manifest(self) -> dict:
        """The manifest's parity record (its key for agreement is `top1_agreement`)."""
        return {"accuracy": self.accuracy, "reference_accuracy": self.reference_accuracy,
                "accuracy_drop": self.accuracy_drop, "top1_agreement": self.agreement,
                "max_abs_diff": self.max_abs_diff, "n": self.n, "class_drop": self.class_drop,
                "worst_class": self.worst_class, "class_lost": self.class_lost, "class_support": self.class_support}

    def row_fields(self, class_names=None) -> dict:
        """The bench row's parity keys: accuracy, agreement, max_abs_diff, class_drop and worst_class
        (`worst_class_record`)."""
        return {"accuracy": self.accuracy, "agreement": self.agreement, "max_abs_diff": self.max_abs_diff,
                "class_drop": self.class_drop, "worst_class": worst_class_record(self.to_manifest(), class_names)}


def one_class_warning(pred, labels, class_names, images: str, parity_follows: bool = False) -> Optional[str]:
    """The warning train, import, export and bench give when a model predicts one class for every input (two or
    more) while their `labels` hold several; None otherwise. An untrained model, or one whose BatchNorm moving
    statistics have not settled, does this, and parity against it proves little: any artifact stuck on the same
    class agrees. `images` names the inputs ("test images"); `parity_follows`: figures comparing artifacts with
    the model come with the warning."""
    pred = np.asarray(pred).reshape(-1)
    if len(pred) < 2 or np.any(pred != pred[0]) or len(np.unique(np.asarray(labels).reshape(-1))) < 2:
        return None
    c = int(pred[0])
    name = str(class_names[c]) if class_names is not None and c < len(class_names) else str(c)
    text = (f"the model predicts {name} for all {len(pred)} {images}: is it trained (and its BatchNorm moving "
            f"statistics settled)?")
    return text + (" Agreement with it proves little: an artifact stuck on the same class agrees 100%"
                   if parity_follows else "")


def chance_warning(pred, labels, class_names, images: str) -> Optional[str]:
    """A warning when the predictions are no more accurate than always answering the largest class (within two
    binomial standard errors of its share): a model that has not learned, or is near stuck on a few classes,
    though its predictions vary (the one-class case is `one_class_warning`'s). None otherwise, and below 20
    inputs, where chance cannot be told apart."""
    pred, labels = np.asarray(pred).reshape(-1), np.asarray(labels).reshape(-1)
    n = len(labels)
    if n < 20 or len(pred) != n or len(np.unique(labels)) < 2:
        return None
    counts = np.bincount(labels)
    share = counts.max() / n
    acc = float(np.mean(pred == labels))
    if acc > share + 2 * np.sqrt(share * (1 - share) / n):
        return None
    c = int(counts.argmax())
    name = str(class_names[c]) if class_names is not None and c < len(class_names) else str(c)
    top = np.bincount(pred).max() / n
    return (f"accuracy {acc:.4f} on {n} {images} is no better than always answering the largest class ({name}, "
            f"{share:.4f} of them); the most predicted class takes {top:.0%} of the predictions: the model has not "
            f"learned these classes.")


def one_class_on_test(metrics: dict) -> Optional[str]:
    """`one_class_warning` for a run's metrics.json (train, import): from its confusion matrix and class names."""
    cm = np.asarray(metrics.get("confusion_matrix") or [[]])
    if not cm.size:
        return None
    cell = np.repeat(np.arange(cm.size), cm.ravel())  # each image's (true, predicted) cell, row-major
    labels, pred = cell // cm.shape[1], cell % cm.shape[1]
    names = list(metrics.get("per_class") or {}) or None
    return one_class_warning(pred, labels, names, "test images") or chance_warning(pred, labels, names, "test images")


def differing(agreement: float, n: int) -> int:
    """The number of top-1 predictions that differ, from an agreement measured on n inputs."""
    return int(round((1 - agreement) * n))


def smallest_class(labels, class_names=None) -> Optional[dict]:
    """{"name", "images"} of the class with the fewest test images (among those that have any), where one image
    weighs most in a per-class gate; None without labels."""
    y = np.asarray(labels, np.int64).reshape(-1)
    if not y.size:
        return None
    counts = np.bincount(y)
    held = np.flatnonzero(counts)
    c = int(held[np.argmin(counts[held])])
    name = str(class_names[c]) if class_names is not None and c < len(class_names) else str(c)
    return {"name": name, "images": int(counts[c])}


def worst_class_record(record: dict, class_names=None) -> Optional[dict]:
    """{"name", "lost", "images"} of the class whose recall falls most, from a parity record (`to_manifest`'s
    keys), as bench rows hold it and `Gates.check` names it; None when no class falls. `name` is the class's
    name, or its number when the names are unknown."""
    c = record.get("worst_class")
    if c is None:
        return None
    name = str(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)
    return {"name": name, "lost": record.get("class_lost"), "images": record.get("class_support")}


def worst_class(pred, ref_pred, labels) -> tuple:
    """(drop in points, class, images lost net, support) of the class whose recall falls most below the
    reference's: the figure an overall accuracy drop hides on imbalanced data (2 of 9 defects lost is 22 points
    of the defect class's recall and 0.65 of accuracy on 309 images). (0.0, None, None, None) when no class's
    recall falls."""
    labels, pred, ref_pred = (np.asarray(a, np.int64).reshape(-1) for a in (labels, pred, ref_pred))
    best = (0.0, None, None, None)
    for c in np.unique(labels):
        mine = labels == c
        support = int(mine.sum())
        lost = int(np.sum(ref_pred[mine] == c)) - int(np.sum(pred[mine] == c))
        drop = round(100.0 * lost / support, 6)
        if lost > 0 and (drop > best[0] or (drop == best[0] and lost > best[2])):
            best = (drop, int(c), lost, support)
    return best


def parity(probs: np.ndarray, reference: Optional[np.ndarray], labels: Optional[np.ndarray],
           reference_accuracy: Optional[float] = None) -> Parity:
    """Compare probabilities (N, classes) with the reference's and with the labels.

    Args:
        probs: the artifact's probabilities.
        reference: the reference's probabilities for the same inputs, or None (then only accuracy, and the drop
            against `reference_accuracy`).
        labels: integer labels, or None.
        reference_accuracy: used when `reference` is None (a manifest's figure).
    """
    probs = np.asarray(probs)
    pred = probs.argmax(axis=1) if probs.size else np.zeros(len(probs), np.int64)
    has_labels = labels is not None and len(labels) > 0
    acc = float(np.mean(pred == labels)) if has_labels else None
    ref_ok = reference is not None and np.shape(reference) == probs.shape
    ref_acc = reference_accuracy
    agreement = max_diff = None
    worst = (None, None, None, None)
    if ref_ok:
        ref_pred = reference.argmax(axis=1) if probs.size else pred
        if has_labels:
            ref_acc = float(np.mean(ref_pred == labels))
            worst = worst_class(pred, ref_pred, labels)
        agreement = float(np.mean(pred == ref_pred)) if len(pred) else None
        max_diff = float(np.max(np.abs(probs.astype(np.float64) - reference))) if probs.size else 0.0
    drop = round((ref_acc - acc) * 100.0, 6) if acc is not None and ref_acc is not None else None
    return Parity(accuracy=acc, reference_accuracy=ref_acc, accuracy_drop=drop, agreement=agreement,
                  max_abs_diff=max_diff, n=int(len(probs)), class_drop=worst[0], worst_class=worst[1],
                  class_lost=worst[2], class_support=worst[3])


def manifest_mismatch(entry: Optional[dict], kernels: Optional[str], accuracy: Optional[float],
                      agreement: Optional[float], n: int) -> Optional[str]:
    """A note when figures measured on `n` test images with `kernels` ("xnnpack", "builtin", "reference") are
    not the ones the manifest entry recorded for those kernels on the same split; None when they are, or when
    the manifest has no figures for them (another delegate, another image count)."""
    if not entry or not kernels or accuracy is None or agreement is None:
        return None
    rec = manifest_figures(entry, kernels)
    if rec is None or rec.get("n") != n or not isinstance(rec.get("top1_agreement"), (int, float)):
        return None
    if abs(rec["accuracy"] - accuracy) > 1e-9 or abs(rec["top1_agreement"] - agreement) > 1e-9:
        return (f"differs from the manifest's figures for the {kernels} kernels (accuracy {rec['accuracy']:.4f}, "
                f"agreement {rec['top1_agreement']:.4f}): not the arithmetic export verified")
    return None
