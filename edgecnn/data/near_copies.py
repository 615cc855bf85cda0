"""Test images that are near copies of training or validation images: burst shots, frames of one video, resized,
re-saved or brightened copies of one photo, or two framings of one scene, which a random split puts on both
sides. The model has as good as seen them, so the test figures, and every parity figure measured on the test
split, count as new what is not.

Each image is reduced to what the model sees, grey and block-averaged to a 16x16 thumbnail with its mean
removed (a brighter copy is still a copy). A test image is a near copy of a held-out one when their thumbnails
correlate at MIN_CORR or more and differ by at most MAX_DIFF (root mean square), or differ by less than one grey
level whatever the correlation (NOISE: a re-saved copy of a low-contrast sky, whose JPEG noise is most of its
structure). Blank thumbnails (FLAT) are nobody's copy. Two images that differ only in detail finer than a
sixteenth of the frame are near copies here: two tiles of one hazy sky, an ok part and the same part with a thin
scratch under a fixed camera. Every test image is compared with every held-out one, a block of test images per
matrix product: 20,000 against 80,000 take about 42 s on 2 cores. Byte-identical files are found without
decoding (`duplicates`).

Measured (2026-12-08) on 150 random crops of each of three photos (64x64 input, 4 seeds): of the 55 test images
whose copy was held out, all 40 resized, re-saved (JPEG q60), 5% brighter and 2-pixel-shifted copies were found,
and 12 of 15 copies shifted by 2% of the frame (a burst shot; the 3 missed correlated 0.955-0.977 at 0.051-0.072
apart); crops that were not copies were found only where they overlapped by 79% or more of their area (3 pairs,
correlation 0.98-0.99); digits' 359 test images have none (its writers' alike digits correlate 0.97+ only at
0.063 or more apart).
"""
from __future__ import annotations

import numpy as np

THUMB = 16  # thumbnail side
LEVELS = 4095  # steps of a thumbnail's pixel (12 bits)
MIN_CORR = 0.97  # thumbnail correlation of a near copy...
MAX_DIFF = 0.05  # ...at most this root-mean-square difference apart (pixels in [0, 1], means removed)...
NOISE = 1 / 255  # ...or, whatever the correlation, closer than one grey level (a copy of a low-contrast sky)
FLAT = 1 / 255  # thumbnail standard deviation below which an image is compared with nothing (a blank frame)
BLOCK = 64  # test images compared at a time (a BLOCK x held-out images matrix)
SHOWN = 3  # example pairs named


def _block_means(x: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(n, h, w) -> (n, rows, cols): the mean of each block (area averaging); an axis shorter than its blocks is
    first repeated up to them."""
    n, h, w = x.shape
    if h < rows or w < cols:
        x = np.repeat(np.repeat(x, -(-rows // h), axis=1), -(-cols // w), axis=2)
        n, h, w = x.shape
    r, c = (np.arange(rows) * h) // rows, (np.arange(cols) * w) // cols
    sums = np.add.reduceat(np.add.reduceat(x, r, axis=1), c, axis=2)
    counts = np.diff(np.append(r, h))[:, None] * np.diff(np.append(c, w))[None, :]
    return (sums / counts).astype(np.float32)


class Prints:
    """Fingerprints of images: grey THUMB x THUMB thumbnails on a grid of LEVELS steps, their mean removed and
    flattened, as whole numbers (`centred`: THUMB^2 x each step minus their sum), their squared lengths (`sq`) and
    which are flat. Whole numbers below 2^53 make every product and sum of them exact in float64, whatever the
    order a BLAS adds them in: the near copies, and the splits --group-by near makes of them, are the same on
    every machine from the same thumbnails."""

    def __init__(self, thumbs: np.ndarray):
        n = len(thumbs)
        q = np.rint(np.clip(np.asarray(thumbs, np.float64).reshape(n, -1), 0.0, 1.0) * LEVELS)
        self.size = q.shape[1]
        self.centred = q * self.size - q.sum(axis=1, keepdims=True)
        self.sq = np.einsum("ij,ij->i", self.centred, self.centred)
        self.flat = self.rms(self.sq) < FLAT

    def rms(self, squares: np.ndarray) -> np.ndarray:
        """Root mean square, in pixels of [0, 1], of centred thumbnails whose squared length is `squares`."""
        return np.sqrt(np.maximum(squares, 0.0) / self.size) / (self.size * LEVELS)

    @classmethod
    def of(cls, *splits) -> "Prints":
        """Fingerprints of splits' preprocessed images, in order, read a chunk at a time."""
        out = [_block_means(np.asarray(x, np.float32).mean(axis=-1), THUMB, THUMB)
               for split in splits for x in split.chunks()]
        return cls(np.concatenate(out) if out else np.zeros((0, THUMB, THUMB), np.float32))

    def __len__(self) -> int:
        return len(self.centred)


def matches(a: Prints, b: Prints, start: int, stop: int) -> tuple:
    """(corr, diff): the (stop - start, len(b)) thumbnail correlations and root-mean-square differences of images
    a[start:stop] with every image of b, corr -2 where they are not near copies (neither flat, correlating at
    MIN_CORR or more and at most MAX_DIFF apart, or at most NOISE apart). One exact matrix product gives both:
    |x - y|^2 = |x|^2 + |y|^2 - 2 x.y."""
    dot = a.centred[start:stop] @ b.centred.T
    xx, yy = a.sq[start:stop, None], b.sq[None, :]
    corr = dot / np.sqrt(np.maximum(xx * yy, 1.0))
    diff = a.rms(xx + yy - 2.0 * dot)
    near = (((corr >= MIN_CORR) & (diff <= MAX_DIFF)) | (diff <= NOISE)) & ~b.flat[None, :] & ~a.flat[start:stop, None]
    return np.where(near, corr, -2.0), diff


def nearest(test: Prints, held: Prints) -> tuple:
    """(j, corr, diff) per test image: the held image that correlates best with it among its near copies
    (`matches`; j = -1, corr = -1, diff = inf when it has none), BLOCK test images at a time."""
    best = np.full(len(test), -1, np.int64)
    corr = np.full(len(test), -1.0, np.float32)
    diff = np.full(len(test), np.inf, np.float32)
    if not len(held) or not len(test):
        return best, corr, diff
    for start in range(0, len(test), BLOCK):
        c, d = matches(test, held, start, min(start + BLOCK, len(test)))
        k = np.argmax(c, axis=1)
        rows = np.flatnonzero(c[np.arange(len(c)), k] > -2.0)
        best[start + rows], corr[start + rows], diff[start + rows] = k[rows], c[rows, k[rows]], d[rows, k[rows]]
    return best, corr, diff


def find(test_split, held_splits: dict, name=None) -> dict:
    """Test images with a near copy among the held-out splits' (training, validation) images.

    Args:
        test_split: the test Split.
        held_splits: {"train": Split, "val": Split}.
        name: (split name, position in that split) -> how an image is named in the examples.
    Returns:
        {"test": test images checked, "near": how many have a near copy, "examples": ["a.jpg ~ b.jpg (0.99)", ...],
        "min_corr": MIN_CORR, "max_diff": MAX_DIFF} (corr: the example's thumbnail correlation).
    """
    name = name or (lambda split, i: f"{split} image {i}")
    owner = [(k, i) for k, split in held_splits.items() for i in range(len(split))]
    j, corr, _ = nearest(Prints.of(test_split), Prints.of(*held_splits.values()))
    near = np.flatnonzero(j >= 0)
    examples = [f"{name('test', int(t))} ~ {name(*owner[int(j[t])])} ({corr[t]:.3f})"
                for t in near[np.argsort(-corr[near], kind="stable")][:SHOWN]]
    return {"test": len(test_split), "near": int(len(near)), "examples": examples, "min_corr": MIN_CORR,
            "max_diff": MAX_DIFF}


def near_warning(found: dict, exact_seen: int = 0) -> str:
    """One line when test images have near copies beyond the byte-identical ones already said, or ""."""
    if not found or found.get("near", 0) <= exact_seen:
        return ""
    also = f", {exact_seen} of them byte-identical" if exact_seen else ""
    return (f"{found['near']} of {found['test']} test images are near copies of training or validation images as "
            f"the model sees them (16x16 thumbnails correlating {found['min_corr']}+{also}: "
            f"{'; '.join(found['examples'])}): burst shots, video frames or edited copies split apart, which the "
            f"test figures count as unseen; keep each scene or session in one split for figures on new scenes "
            f"(train --group-by near, or subfolder). A fixed camera makes them too: there they are what the "
            f"device will see")
