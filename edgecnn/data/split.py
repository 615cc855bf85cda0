"""Splits that keep the source's raw pixels and preprocess one batch at a time.

A `Split` is a view of a raw source (an in-memory array, an `.npz` member read on first use, or a list of
image files decoded when asked) through an index, with its labels and the recorded preprocessing. It acts as a
lazy float32 array: `len(split)`, `split.shape`, `split[i:j]` and `split[positions]` preprocess only those
images; `np.asarray(split)` preprocesses all of them. `split.dataset(...)` is a `tf.data` pipeline that calls
the on-device script's `preprocess` per batch, so training reads exactly what a device reads.

Memory: an `.npz` holds its uint8 pixels (its size on disk, uncompressed) and nothing per epoch; an image
folder holds file names and header sizes, whatever the number of images.
"""
from __future__ import annotations

import os
import zipfile
from typing import Iterator, Optional

import numpy as np

from edgecnn.errors import DataError
from edgecnn.script.edgecnn_infer import TURNS_SIDEWAYS, preprocess

EVAL_CHUNK = 1024  # images preprocessed at a time when a split is evaluated in pieces...
CHUNK_BYTES = 128 << 20  # ...and at most this much float32 (222 RGB images at 224x224, all 1024 of digits)


def check_pixels(x: np.ndarray, where: str) -> None:
    """The device's pixel rule (the script's `check_pixels`), as a DataError."""
    from edgecnn.script.edgecnn_infer import UsageError, check_pixels as device_rule

    try:
        device_rule(x, where)
    except UsageError as e:
        raise DataError(str(e)) from None


def check_raw_pixels(name: str, x) -> None:
    """`check_pixels` for a source's raw images: arrays and lists now; an .npz member is checked when read
    (NpzArray.load) and image files by their headers (scan_images)."""
    if isinstance(x, (NpzArray, ImageFiles)):
        return
    for a in x if isinstance(x, list) else [x]:
        check_pixels(np.asarray(a), name)


class NpzArray:
    """One array of an `.npz`, known by its header (shape, dtype) and read whole on first use."""

    def __init__(self, path: str, key: str):
        self.path, self.key = path, key
        try:
            with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
            raise DataError(f"{path}: cannot read its array '{key}' ({e})") from None
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        if self.dtype.hasobject:
            raise DataError(f"{path}: cannot read its arrays ('{key}' holds Python objects, which need pickle); "
                            "save numbers, not objects")
        self._array: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def load(self) -> np.ndarray:
        """The whole array (read once, then kept: the uint8 pixels are the one copy held in memory)."""
        if self._array is None:
            a = np.load(self.path, allow_pickle=False)[self.key]
            check_pixels(a, f"{self.path}: {self.key}")
            self._array = a
        return self._array

    def __getitem__(self, idx):
        return self.load()[idx]


class ImageFiles:
    """Image files known by their headers; pixels are decoded when asked for (`files[i]`, `preprocessed`)."""

    def __init__(self, paths: list, sizes: list, colour: list, tags: Optional[list] = None,
                 orientation: str = "stored"):
        self.paths = paths
        self.tags = list(tags) if tags is not None else [1] * len(paths)  # EXIF Orientation per file, 1: none
        self.orientation = orientation  # "exif": read upright (the script's image_array), "stored": as stored
        upright = orientation == "exif"  # sizes: (h, w) per file as read, from the header
        self.sizes = [(w, h) if upright and t in TURNS_SIDEWAYS else (h, w) for (h, w), t in zip(sizes, self.tags)]
        self.promote = len(set(colour)) > 1  # mixed grey and colour: every image is read as RGB
        self.channels = 3 if any(colour) else 1
        self._caches: dict = {}  # preprocessing (JSON) -> (PixelCache or None, why not)

    @property
    def turned(self) -> int:
        """How many files a viewer shows turned or mirrored (an EXIF Orientation other than 1)."""
        return sum(t != 1 for t in self.tags)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple:
        h, w = self.sizes[0] if self.sizes else (0, 0)
        return (len(self.paths), h, w) if self.channels == 1 else (len(self.paths), h, w, 3)

    def read(self, i: int) -> np.ndarray:
        from edgecnn.script.edgecnn_infer import UsageError, image_array, open_image

        f = self.paths[i]
        try:
            with open_image(f) as im:
                a = image_array(im, str(f), self.orientation)  # the device's rule: 16-bit images are refused
        except UsageError as e:
            raise DataError(str(e)) from None
        except Exception as e:
            raise DataError(f"{f}: not a readable image ({e})") from None
        if self.promote and a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=-1)
        return a

    def __getitem__(self, idx):
        return self.read(int(idx))  # one file: a split reads several through `preprocessed`, one at a time

    def cache(self, prep: dict) -> tuple:
        """(the disk cache of these files under `prep`, or None; why not), opened on first use (data/cache.py)."""
        import json

        from edgecnn.data.cache import PixelCache

        key = json.dumps(prep, sort_keys=True)
        if key not in self._caches:
            self._caches[key] = PixelCache.open(self.paths, self.sizes, prep)
        return self._caches[key]

    def preprocessed(self, positions: np.ndarray, prep: dict) -> np.ndarray:
        """The images at `positions` as the model takes them: from the disk cache where it holds them, else
        decoded and preprocessed one file at a time (a chunk of 1,024 2 MP photos decoded at once held 5.6 GB)."""
        cache, _ = self.cache(prep)
        if cache is None:
            return self._decode(positions, prep)
        return cache.get(positions, lambda pos: self._decode(pos, prep))

    def _decode(self, positions, prep: dict) -> np.ndarray:
        h, w = (int(v) for v in prep["image_size"])
        out = np.empty((len(positions), h, w, int(prep["channels"])), np.float32)
        for j, i in enumerate(np.asarray(positions).reshape(-1)):
            out[j] = preprocess(self.read(int(i))[None], prep)[0]
        return out


END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}  # the last bytes of a whole file of each format
SHOWN_UNREADABLE = 3  # unreadable files named in the error; the rest are counted


def _whole(path, im) -> None:
    """Raise if the file was cut short. Cheap for a whole file: JPEG and PNG end with a marker (EOI, IEND) that a
    truncated copy lacks, so only a file without it is decoded in full (a JPEG may carry data after its EOI)."""
    marker = END_MARKERS.get(im.format)
    if marker is None:
        return
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - len(marker)))
        if f.read() != marker:
            im.load()


def scan_images(files: list, orientation: str = "stored") -> ImageFiles:
    """Headers only: sizes, modes and EXIF orientations of every file, refusing the modes the device refuses and,
    in one error that names the first few, every file that is not a whole image (a folder of photos is fixed in
    one pass). `orientation`: how the files are read (the preprocessing's "exif" or "stored")."""
    from edgecnn.script.edgecnn_infer import UsageError, check_mode, exif_orientation, is_grey, open_image

    sizes, colour, tags, unreadable = [], [], [], []
    for f in files:
        try:
            with open_image(f) as im:
                check_mode(im.mode, str(f))
                tag = exif_orientation(im)  # from the header, as the device reads it (before any decoding)
                _whole(f, im)
                w, h = im.size
                colour.append(not is_grey(im))
                tags.append(tag)
        except UsageError as e:
            raise DataError(str(e)) from None
        except Exception as e:
            unreadable.append(f"{f}: not a readable image ({e})")
            continue
        sizes.append((h, w))
    if unreadable:
        more = len(unreadable) - SHOWN_UNREADABLE
        raise DataError(f"{len(unreadable)} of {len(files)} files are not readable images; remove or replace them: "
                        + "; ".join(unreadable[:SHOWN_UNREADABLE]) + (f"; and {more} more" if more > 0 else ""))
    return ImageFiles(list(files), sizes, colour, tags, orientation)


def raw_shape(raw) -> tuple:
    """The shape of one raw image (h, w[, c])."""
    if isinstance(raw, (np.ndarray, NpzArray, ImageFiles)):
        return tuple(raw.shape[1:])
    return tuple(np.asarray(raw[0]).shape) if len(raw) else ()


def raw_sizes(raw) -> set:
    """The distinct (h, w) of a source's images."""
    if isinstance(raw, ImageFiles):
        return set(raw.sizes)
    if isinstance(raw, list):
        return {tuple(im.shape[:2]) for im in raw}
    return {tuple(raw.shape[1:3])}


def _apply(images, prep: dict) -> np.ndarray:
    h, w = (int(v) for v in prep["image_size"])
    if isinstance(images, list):  # images of varying sizes, or decoded files: one at a time
        if not images:
            return np.zeros((0, h, w, int(prep["channels"])), np.float32)
        return np.concatenate([preprocess(im[None], prep) for im in images])
    return preprocess(images, prep)


class Split:
    """One split of a data source: raw pixels seen through `index`, their labels, and the preprocessing."""

    dtype = np.dtype(np.float32)
    ndim = 4

    def __init__(self, raw, index: np.ndarray, labels: np.ndarray, prep: dict):
        self.raw, self.index, self.prep = raw, np.asarray(index, np.int64), prep
        self.labels = np.asarray(labels, np.int64)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple:
        h, w = (int(v) for v in self.prep["image_size"])
        return (len(self), h, w, int(self.prep["channels"]))

    @property
    def float32_bytes(self) -> int:
        return int(np.prod(self.shape)) * 4

    def prepare(self) -> None:
        """Read what must be in memory (an .npz member) now, so bad pixels fail here and not mid-epoch."""
        if isinstance(self.raw, NpzArray):
            self.raw.load()

    def __getitem__(self, key) -> np.ndarray:
        """Preprocessed float32 images: an int gives one (h, w, c), a slice or positions give (n, h, w, c)."""
        if isinstance(key, (int, np.integer)):
            return self[np.array([int(key)])][0]
        positions = self.index[key]
        if isinstance(self.raw, ImageFiles):
            return self.raw.preprocessed(positions, self.prep)
        if isinstance(self.raw, list):
            return _apply([self.raw[int(i)] for i in positions], self.prep)
        if len(positions) > 1 and np.any(np.diff(positions) < 0):  # read in file order, hand back in asked order
            order = np.argsort(positions, kind="stable")
            out = np.empty((len(positions), *self.shape[1:]), np.float32)
            out[order] = _apply(self.raw[positions[order]], self.prep)
            return out
        return _apply(self.raw[positions], self.prep)

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a.astype(dtype) if dtype is not None else a

    def chunks(self, size: int = EVAL_CHUNK) -> Iterator[np.ndarray]:
        """The preprocessed images, `size` at a time (fewer when they would exceed CHUNK_BYTES), in order."""
        from edgecnn.runtimes.base import images_per_batch

        size = images_per_batch(self.shape[1:], size, CHUNK_BYTES)
        for start in range(0, len(self), size):
            yield self[start:start + size]

    @property
    def eval_batch(self) -> int:
        """Images per inference batch when a whole split is evaluated: 256 up to 64x64 inputs, 32 above (a batch
        of 256 96x96 images holds over half a gigabyte of activations in one 64-filter conv layer)."""
        h, w = (int(v) for v in self.prep["image_size"])
        return 256 if h * w <= 64 * 64 else 32

    def predict_with(self, model) -> np.ndarray:
        """A Keras model's (either flavour) outputs on the whole split, a chunk at a time."""
        return map_chunks(lambda x: model.predict(x, batch_size=self.eval_batch, verbose=0), self)

    def map(self, fn, size: int = EVAL_CHUNK) -> np.ndarray:
        """`fn` over the split `size` images at a time, concatenated (probabilities of a whole test split)."""
        return map_chunks(fn, self, size)

    def dataset(self, batch_size: int, shuffle: bool = False, seed: int = 0, parallel: int = 2):
        """A `tf.data.Dataset` of (images, labels) batches, preprocessed per batch by the device's `preprocess`.

        Args:
            batch_size: images per batch.
            shuffle: reshuffle the order every epoch (seeded).
            parallel: batches prepared concurrently (NumPy and Pillow release the GIL for most of the work).
        """
        import tensorflow as tf

        n, h, w, c = self.shape
        labels = self.labels

        def load(pos):
            return self[pos], labels[pos]

        def batch_of(pos):
            x, y = tf.numpy_function(load, [pos], (tf.float32, tf.int64), stateful=False)
            x.set_shape((None, h, w, c))
            y.set_shape((None,))
            return x, y

        ds = tf.data.Dataset.range(n)
        if shuffle:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size).map(batch_of, num_parallel_calls=max(1, parallel), deterministic=True)
        return ds.prefetch(2)


def map_chunks(fn, x, size: int = EVAL_CHUNK) -> np.ndarray:
    """`fn(x)` for an array; `fn` over `size`-image pieces, concatenated, for a `Split` (never all of it at once)."""
    if not isinstance(x, Split):
        return fn(x)
    outs = [np.asarray(fn(part)) for part in x.chunks(size)]
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)

