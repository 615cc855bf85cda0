"""A disk cache of preprocessed images for image folders whose files are larger than the model's input.

Decoding and resizing a photo costs far more than the model's step on it (a 3 MP JPEG read for a 64x64 model:
18 ms; a 12 MP one: 150 ms), and training reads every image every epoch, export verifies every artifact on the
whole test split, and bench runs it once per row. The first read of an image stores what `preprocess` made of it
(float32, the model's input exactly, so nothing the device sees changes); every later read, in this process or
another stage's, is a file read.

Files (under `$EDGECNN_CACHE`, default `$XDG_CACHE_HOME/edgecnn/images` or `~/.cache/edgecnn/images`):
- `KEY.npy`: a NumPy array (n, h, w, c) float32, one row per source image (a sparse file that fills as images are
  read; `np.load(path, mmap_mode="r")` opens it).
- `KEY.idx`: n little-endian uint64, 0 for a row not written yet, else 2**32 + the CRC-32 of the row's bytes. A
  row is used only when its CRC matches (a row cut short or written over by another process is read again).
KEY is a SHA-256 over the preprocessing, every file's path, size and modification time, the on-device script's
source, Pillow's and NumPy's versions: change any and the images are read afresh. Rows are written with pwrite
and read with pread (no memory map: a process's resident memory does not grow with the cache), so concurrent
processes (tuning workers, a bench beside a training) share one cache safely: they write identical bytes.

`EDGECNN_CACHE=off` turns it off; `EDGECNN_CACHE_GB` (default 20) caps the folder: the least recently used caches
are deleted to make room for a new one, and a cache larger than the cap or than the free disk space (less 1 GiB)
is not made.
"""
from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ENV_DIR, ENV_GB = "EDGECNN_CACHE", "EDGECNN_CACHE_GB"
DEFAULT_GB = 20.0
MIN_SHRINK = 2.0  # cache a folder only when its images hold at least this many times the model input's pixels
FILLED = np.uint64(1 << 32)
VERSION = 1  # bump when the file layout changes


def cache_dir() -> Optional[Path]:
    """Where caches live, or None when `EDGECNN_CACHE=off`."""
    v = os.environ.get(ENV_DIR, "")
    if v.lower() in ("off", "0", "none"):
        return None
    if v:
        return Path(v).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgecnn" / "images"


def worth_caching(sizes: list, prep: dict) -> bool:
    """True when the images hold on average at least MIN_SHRINK times the model input's pixels: there decoding and
    resizing dominate; images near the input's size decode in well under a millisecond, and their float32 copy
    would take several times the folder's space."""
    if not sizes:
        return False
    h, w = (int(v) for v in prep["image_size"])
    return float(np.mean([a * b for a, b in sizes])) >= MIN_SHRINK * h * w


def cache_key(paths: list, prep: dict) -> str:
    """A SHA-256 over what decides the cached pixels (see the module's docstring)."""
    import PIL

    from edgecnn.script import edgecnn_infer

    h = hashlib.sha256()
    h.update(json.dumps({"version": VERSION, "prep": prep, "pillow": PIL.__version__, "numpy": np.__version__},
                        sort_keys=True).encode())
    h.update(hashlib.sha256(Path(edgecnn_infer.__file__).read_bytes()).digest())
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _allocated(p: Path) -> int:
    try:
        return p.stat().st_blocks * 512
    except OSError:
        return 0


def _make_room(folder: Path, need: int, keep: str) -> Optional[str]:
    """Delete the least recently used caches so `need` more bytes fit the cap; a reason when they cannot."""
    import shutil

    cap = float(os.environ.get(ENV_GB, DEFAULT_GB)) * 2 ** 30
    if need > cap:
        return f"it would take {need / 2 ** 30:.1f} GiB, over the {cap / 2 ** 30:g} GiB cap ({ENV_GB})"
    def last_used(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:  # deleted meanwhile by another process
            return 0.0

    import time

    for tmp in folder.glob(".*.tmp"):  # left by a process killed while creating a cache
        if last_used(tmp) < time.time() - 3600:
            tmp.unlink(missing_ok=True)
    others = sorted((p for p in folder.glob("*.npy") if p.stem != keep), key=last_used)
    used = sum(_allocated(p) for p in others)
    while others and used + need > cap:
        old = others.pop(0)
        used -= _allocated(old)
        for q in (old, old.with_suffix(".idx")):
            q.unlink(missing_ok=True)
    free = shutil.disk_usage(folder).free
    if need > free - 2 ** 30:
        return f"it would take {need / 2 ** 30:.1f} GiB and {folder} has {free / 2 ** 30:.1f} GiB free"
    return None


def _create(path: Path, write: Callable) -> None:
    """Make `path` once, atomically: written under a temporary name and linked into place; when another process
    got there first, its file stands."""
    import threading

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # tf.data's threads too
    with open(tmp, "wb") as f:
        write(f)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


class PixelCache:
    """The cached preprocessed images of one source and preprocessing."""

    def __init__(self, folder: Path, key: str, n: int, shape: tuple):
        self.n, self.shape = n, tuple(int(v) for v in shape)
        self.row_bytes = int(np.prod(self.shape)) * 4
        self.path = folder / f"{key}.npy"
        index = folder / f"{key}.idx"
        _create(index, lambda f: f.truncate(8 * n))
        header = {"descr": "<f4", "fortran_order": False, "shape": (n, *self.shape)}

        def data(f):
            np.lib.format.write_array_header_1_0(f, header)
            f.truncate(f.tell() + n * self.row_bytes)  # sparse: filled as rows are written

        _create(self.path, data)
        with open(self.path, "rb") as f:
            np.lib.format.read_magic(f)
            np.lib.format.read_array_header_1_0(f)
            self.offset = f.tell()
        os.utime(self.path)  # least recently used is what the cap deletes first
        self.index = index

    @classmethod
    def open(cls, paths: list, sizes: list, prep: dict) -> tuple:
        """(cache, None), or (None, why not) when caching is off, not worth it, or does not fit."""
        folder = cache_dir()
        if folder is None:
            return None, f"{ENV_DIR}=off"
        if not worth_caching(sizes, prep):
            return None, "the images are about the model input's size"
        h, w = (int(v) for v in prep["image_size"])
        shape = (h, w, int(prep["channels"]))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            key = cache_key(paths, prep)
            need = 0 if (folder / f"{key}.npy").exists() else len(paths) * int(np.prod(shape)) * 4 + 8 * len(paths)
            why = _make_room(folder, need, key) if need else None
            if why:
                return None, why
            return cls(folder, key, len(paths), shape), None
        except OSError as e:
            return None, f"{folder}: {e.strerror or e}"
        except ValueError as e:  # a damaged .npy header (edited by hand?): read the images without it
            return None, f"{folder}: {e}"

    def get(self, positions: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Preprocessed images at source `positions`: cached rows whose CRC holds, the rest from `compute`
        (and stored). The files are opened per call, so a cache can be copied or pickled with its split."""
        positions = np.asarray(positions, np.int64).reshape(-1)
        out = np.empty((len(positions), *self.shape), np.float32)
        missing = []
        try:
            data = os.open(self.path, os.O_RDWR)
            index = os.open(self.index, os.O_RDWR)
        except OSError:  # deleted under us (another process's cap, a user's rm): read without it
            return np.ascontiguousarray(compute(positions), np.float32)
        try:
            for j, i in enumerate(positions):
                tag = np.frombuffer(os.pread(index, 8, 8 * int(i)), "<u8")
                if tag.size and tag[0] & FILLED:
                    row = os.pread(data, self.row_bytes, self.offset + int(i) * self.row_bytes)
                    if len(row) == self.row_bytes and zlib.crc32(row) == int(tag[0] & np.uint64(0xFFFFFFFF)):
                        out[j] = np.frombuffer(row, "<f4").reshape(self.shape)
                        continue
                missing.append(j)
            if missing:
                fresh = np.ascontiguousarray(compute(positions[missing]), "<f4")
                for j, img in zip(missing, fresh):
                    out[j] = img
                    i, row = int(positions[j]), img.tobytes()
                    try:
                        os.pwrite(data, row, self.offset + i * self.row_bytes)  # the row, then its tag
                        os.pwrite(index, np.array([FILLED | np.uint64(zlib.crc32(row))], "<u8").tobytes(), 8 * i)
                    except OSError:  # a full disk: the image is still returned, only not kept
                        pass
        finally:
            os.close(data)
            os.close(index)
        return out

    def filled(self) -> int:
        """Rows written so far."""
        try:
            tags = np.frombuffer(self.index.read_bytes(), "<u8")
        except OSError:  # deleted since (another process's cap)
            return 0
        return int(np.count_nonzero(tags & FILLED))
