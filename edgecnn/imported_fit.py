"""What a model trained elsewhere was fed and what it outputs, measured on the data (`edgecnn import`): the
input range it was trained on, how its training read photos with an EXIF orientation, and whether its outputs
are probabilities, logits or one binary unit."""
from __future__ import annotations

import numpy as np

RANGES = {"0-1": (1.0, 0.0), "0-255": (255.0, 0.0), "-1-1": (2.0, -1.0)}  # input range -> (scale, offset) from [0, 1]
AUTO = "auto"  # the range measured on the validation images: the best accuracy, then BatchNorm, then the loss
CLEARLY_BETTER = 0.10  # accuracy by which the measured range beats one asked for, for a warning (or half its loss)


def outputs_probabilities(probe: np.ndarray) -> bool:
    """Whether the model's outputs on a probe batch are probabilities: one per class summing to 1, or one
    sigmoid output in [0, 1] (a logit is negative on about half the images of a trained binary classifier)."""
    if probe.shape[1] == 1:
        return bool(np.all((probe >= -1e-6) & (probe <= 1 + 1e-6)))
    return bool(np.all(probe >= -1e-6) and np.allclose(probe.sum(axis=1), 1.0, atol=1e-3))


def predicted(p: np.ndarray) -> np.ndarray:
    """Predicted classes from a model's outputs (probabilities, logits, or one binary unit)."""
    if p.shape[1] == 1:
        return (p[:, 0] > (0.5 if outputs_probabilities(p) else 0.0)).astype(np.int64)
    return p.argmax(axis=1)


def class_order_warning(pred: np.ndarray, y: np.ndarray, class_names: list) -> list:
    """A warning when the validation images are classified far better with the model's outputs matched to the
    classes in another order (the best one-to-one assignment on the confusion matrix): a model trained with
    another class order than the data's sorted names."""
    order, best = matched(pred, y, len(class_names))
    plain = float(np.mean(pred == y)) if len(y) else 0.0
    if best - plain < 0.2:
        return []
    order = [class_names[k] for k in order]
    return [f"validation accuracy {plain:.3f} with the classes in the data's order ({', '.join(class_names)}), "
            f"{best:.3f} if the model's outputs are in the order {', '.join(order)}: was it trained with another "
            f"class order? (a folder's classes are sorted by name)"]


def matched(pred: np.ndarray, y: np.ndarray, k: int) -> tuple[list, float]:
    """(the class each output j stands for, accuracy) under the best one-to-one matching of outputs to classes
    (the assignment that maximizes the confusion matrix's matched counts)."""
    from scipy.optimize import linear_sum_assignment

    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (y, pred), 1)
    rows, cols = linear_sum_assignment(-confusion)
    order = [int(r) for r, _ in sorted(zip(rows, cols), key=lambda rc: rc[1])]
    return order, float(confusion[rows, cols].sum() / max(len(y), 1))


def right_at_best(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which images a model's outputs `p` classify right, with its outputs matched to the classes at best."""
    pred = predicted(np.asarray(p, np.float64))
    order, _ = matched(pred, y, max(int(np.asarray(p).shape[1]), 2))
    return np.asarray(order)[pred] == y


def scores(p: np.ndarray, y: np.ndarray) -> dict:
    """{"accuracy", "matched_accuracy", "loss"} of a model's outputs `p` on images labelled `y` (matched: with its
    outputs matched one-to-one to the classes at best, so a model trained with another class order still shows
    which input range it takes; loss: the mean cross-entropy of the true class). Fed the wrong range, a model is
    near chance, or, when it is a ReLU network that only sees its input scaled, as accurate but with flattened
    probabilities: hence the loss too."""
    p = np.asarray(p, np.float64)
    pred = predicted(p)
    probs_ok = outputs_probabilities(p)
    if p.shape[1] == 1:  # one output: P(second class) or its logit
        p1 = p[:, 0] if probs_ok else 1.0 / (1.0 + np.exp(-p[:, 0]))
        p = np.stack([1.0 - p1, p1], axis=1)
    elif not probs_ok:
        e = np.exp(p - p.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
    true = p[np.arange(len(y)), y] if len(y) else np.ones(0)
    return {"accuracy": float(np.mean(pred == y)) if len(y) else 0.0,
            "matched_accuracy": matched(pred, y, p.shape[1])[1],
            "loss": max(0.0, float(-np.mean(np.log(np.clip(true, 1e-12, 1.0))))) if len(y) else 0.0}


FEW_TO_TELL = 32  # validation images below which a tie on accuracy broken by loss is said, not trusted


def alike(best: np.ndarray, other: np.ndarray) -> bool:
    """Whether a range that gets the images `other` right scores no worse than the one getting `best` right by
    more than chance: paired on the same images, those only the best gets right outnumber those only the other
    gets right by at most one image or two standard deviations (McNemar's statistic)."""
    only_best, only_other = int(np.sum(best & ~other)), int(np.sum(other & ~best))
    return only_best - only_other <= max(1.0, 2.0 * np.sqrt(only_best + only_other))


BN_SETTLED = 1.0  # BatchNorm mismatch below which a range's statistics are the model's own...
BN_TELLS = 10.0  # ...and by how many times every other range's must exceed it for BatchNorm to decide


def batchnorm_mismatch(model, images: np.ndarray) -> dict | None:
    """{range: mismatch} between the batch statistics each trainable BatchNorm layer sees when `images` are fed
    in each input range and the moving statistics training left in it (weights and statistics unchanged
    afterwards); None for a model without such a layer. Mismatch: the mean over layers of the median over
    channels of KL(batch || moving) between the two Gaussians. A model remembers in its BatchNorm what its
    input looked like: fed 255 times its training range, its first layer's batch variance is 65,025 times the
    moving one (a KL of about 3e4), where accuracy and loss may not tell."""
    from edgecnn.precise_bn import Settler, Snapshot

    settler = Settler(model)
    if not settler.layers or not len(images):
        return None
    kept = Snapshot(settler.layers)
    out = {}
    try:
        for name, (scale, offset) in RANGES.items():
            settler(images * scale + offset, 32)
            per_layer = []
            for layer, (mean, var) in zip(settler.layers, kept.values):
                eps = float(layer.epsilon)
                vm, mm = var.astype(np.float64) + eps, mean.astype(np.float64)
                vb = layer.moving_variance.numpy().astype(np.float64) + eps
                mb = layer.moving_mean.numpy().astype(np.float64)
                per_layer.append(float(np.median(0.5 * (vb / vm + (mb - mm) ** 2 / vm - 1.0 + np.log(vm / vb)))))
            out[name] = float(np.mean(per_layer))
            kept.restore()
    finally:
        kept.restore()
    return out


def batchnorm_range(mismatch: dict | None) -> str | None:
    """The range a model's BatchNorm statistics say it was trained on, or None when they do not say it clearly:
    its mismatch below BN_SETTLED (statistics that never settled match no range) and every other range's
    BN_TELLS times higher."""
    if not mismatch:
        return None
    best, *others = sorted(mismatch, key=mismatch.get)
    low = mismatch[best]
    return best if low < BN_SETTLED and all(mismatch[k] > BN_TELLS * max(low, 0.01) for k in others) else None


def choose_range(asked: str, fit: dict, n: int, right: dict) -> tuple[str, list]:
    """(the range to use, warnings). The measured range: among those whose matched accuracy is alike the best
    one's (`alike`: a model trained on 0-1 and fed 0-255, a ReLU network without BatchNorm, classifies as well by
    chance as often as not, with 8 times the loss), the one its BatchNorm statistics clearly match
    (`batchnorm_range`, from fit[k]["batchnorm_mismatch"] when measured), else the lowest loss. The loss is
    the weaker witness: a model whose images are all right in two ranges has the lower loss in the one that
    makes its logits larger (96 validation images took 0-255 for a model trained on 0-1), and fewer than
    FEW_TO_TELL images left to it are a warning;
    a range asked for is kept, with a warning when the measured one is clearly better (10 points more accurate,
    or less than half the loss) or clearly matches the model's BatchNorm statistics."""
    top = max(RANGES, key=lambda k: fit[k]["matched_accuracy"])
    near = [k for k in RANGES if k == top or alike(right[top], right[k])]
    told = batchnorm_range({k: v["batchnorm_mismatch"] for k, v in fit.items() if "batchnorm_mismatch" in v})
    best = told if told in near else min(near, key=lambda k: fit[k]["loss"])
    if asked == AUTO:
        if len(near) > 1 and n < FEW_TO_TELL and best != told:  # a loss on a handful of images cannot decide
            return best, [f"input range {best} measured on only {n} validation image(s), where "
                          f"{', '.join(near)} cannot be told apart by accuracy: if the model was trained on "
                          f"another range, pass --input-range"]
        return best, []
    a, b = fit[asked], fit[best]
    if best != asked and best == told:
        return asked, [f"with --input-range {asked} the model's BatchNorm layers see statistics unlike those they "
                       f"were trained with (mismatch {a['batchnorm_mismatch']:.3g}, with {best} "
                       f"{b['batchnorm_mismatch']:.3g}): was it trained on {best} pixels?"]
    if best != asked and (b["matched_accuracy"] - a["matched_accuracy"] >= CLEARLY_BETTER or b["loss"] < a["loss"] / 2):
        return asked, [f"with --input-range {asked} the model scores validation accuracy {a['accuracy']:.3f} "
                       f"(loss {a['loss']:.3f}), with {best} {b['accuracy']:.3f} (loss {b['loss']:.3f}): was it "
                       f"trained on {best} pixels?"]
    return asked, []


def fit_text(fit: dict) -> str:
    """The per-range figures as import prints them and the report shows them."""
    told = batchnorm_range({k: v["batchnorm_mismatch"] for k, v in fit.items() if "batchnorm_mismatch" in v})
    text = "validation accuracy / loss with each: " + \
        ", ".join(f"{k} {v['accuracy']:.3f} / {v['loss']:.3f}" for k, v in fit.items())
    return text + (f"; BatchNorm statistics match {told}" if told else "")


ORIENTATION_PROBE = 256  # photos with an EXIF orientation, of the training and validation splits, read both ways


def turned_positions(split, limit: int) -> np.ndarray:
    """Positions in `split` of the image files whose EXIF Orientation turns or mirrors them (at most `limit`)."""
    from edgecnn.data import ImageFiles

    if not isinstance(split.raw, ImageFiles):
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.asarray(split.raw.tags)[split.index] != 1)[:limit]


def choose_orientation(model, ds, data, scale: float, offset: float) -> tuple:
    """(orientation, fit, the dataset read upright) for `--orientation auto`: "stored" (as Keras' loader reads files) unless the folder has
    photos with an EXIF orientation and the model classifies those clearly better upright. Measured on such photos
    of the validation split, then the training split (never the test split); fit: {"images", "exif", "stored"}
    accuracies, or None when no photo carries a tag."""
    import dataclasses

    from edgecnn.data import load_dataset

    upright = load_dataset(dataclasses.replace(data, orientation="exif"))
    right = {"exif": [], "stored": []}
    for name in ("val", "train"):
        pos = turned_positions(getattr(ds, name), ORIENTATION_PROBE - len(right["exif"]))
        if not len(pos):
            continue
        y = getattr(ds, name).labels[pos]
        for way, d in (("stored", ds), ("exif", upright)):
            p = model.predict(getattr(d, name)[pos] * scale + offset, verbose=0)
            right[way] += (predicted(p) == y).tolist()
    if not right["exif"]:
        return "stored", None, upright
    return (*orientation_verdict(np.asarray(right["exif"]), np.asarray(right["stored"])), upright)


def orientation_verdict(exif: np.ndarray, stored: np.ndarray) -> tuple:
    """(orientation, fit) from which photos the model gets right read each way: "exif" only when upright is
    clearly better (paired, McNemar's statistic, as `alike` judges input ranges), else "stored", Keras'
    loader's way; fit: {"images", "exif", "stored"} accuracies."""
    fit = {"images": int(len(exif)), "exif": float(np.mean(exif)), "stored": float(np.mean(stored))}
    return ("exif" if fit["exif"] > fit["stored"] and not alike(exif, stored) else "stored"), fit
