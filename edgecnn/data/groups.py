"""Groups of images that a split keeps together (`--group-by`): every image of a group lands in the same split,
so that burst shots, frames of one video or photos of one session are never on both sides of the test split.

- `subfolder`: an image folder's second level (`cat/session_03/img.jpg` is in group `session_03`, whatever its
  class: a session that photographed several classes stays together); an image directly in its class folder is a
  group of its own.
- `near`: near copies as the model sees them (`near_copies`: thumbnails that correlate 0.97+ and differ by at
  most 0.05, or by less than a grey level), joined transitively (a burst of 20 shots is one group even where its
  first and last shot are no near copies of each other). Each image's TOP closest near copies are its links: a
  fixed camera's thousands of alike frames become one group without holding every pair. Finding them reads every
  image and compares every pair (30,000 images: 20-28 s on 2 cores, growing with the square of the count:
  100,000 in about 4-5 minutes), so the groups are kept in the image cache's folder, keyed by the source's files
  or bytes, the preprocessing and this code, for the later stages that split the same data again. The
  comparisons are exact (`near_copies.Prints`), so another machine makes the same groups, and the same split,
  from the same thumbnails.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import numpy as np

GROUP_BY = ("none", "subfolder", "near")
TOP = 16  # near copies linked per image


def subfolder_groups(paths: list, root: str) -> np.ndarray:
    """Group ids per file: the subfolder under the class folder, else the file itself."""
    keys = []
    for p in paths:
        parts = Path(p).relative_to(root).parts
        keys.append("/" + parts[1] if len(parts) > 2 else str(p))
    return np.unique(np.asarray(keys), return_inverse=True)[1].astype(np.int64)


def near_groups(prints) -> np.ndarray:
    """Group ids per image (`near_copies.Prints`): the connected components of each image's links to its TOP
    closest near copies."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from edgecnn.data.near_copies import BLOCK, matches

    n, rows, cols = len(prints), [], []
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        c = matches(prints, prints, start, stop)[0]
        c[np.arange(stop - start), np.arange(start, stop)] = -2.0  # not its own copy
        linked = c > -2.0
        many = np.flatnonzero(linked.sum(axis=1) > TOP)
        if len(many):  # keep only the TOP closest of an image with more near copies
            cut = -np.partition(-c[many], TOP - 1, axis=1)[:, TOP - 1:TOP]
            linked[many] &= c[many] >= cut
        r, t = np.nonzero(linked)
        rows.append(start + r)
        cols.append(t)
    if not rows:
        return np.arange(n, dtype=np.int64)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _identity(raw, prep: dict) -> Optional[str]:
    """What decides a source's pixels, for the memo key: an image folder's image-cache key (its files' paths, sizes
    and times, the preprocessing, the script, Pillow's and NumPy's versions), an .npz's path, size and time, or an
    in-memory array's bytes; None when unknown."""
    import os

    from edgecnn.data.cache import cache_key
    from edgecnn.data.split import ImageFiles, NpzArray

    if isinstance(raw, ImageFiles):
        return cache_key(raw.paths, prep)
    if isinstance(raw, NpzArray):
        st = os.stat(raw.path)
        return f"npz|{Path(raw.path).resolve()}|{raw.key}|{st.st_size}|{st.st_mtime_ns}"
    if isinstance(raw, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(raw).tobytes()).hexdigest() + str(raw.shape) + str(raw.dtype)
    return None


def _memo_path(raw, prep: dict, n: int) -> Optional[Path]:
    from edgecnn.data import near_copies
    from edgecnn.data.cache import cache_dir
    from edgecnn.script import edgecnn_infer

    folder, identity = cache_dir(), _identity(raw, prep)
    if folder is None or identity is None:
        return None
    h = hashlib.sha256(json.dumps({"prep": prep, "n": n, "top": TOP, "id": identity}, sort_keys=True).encode())
    for module in (near_copies, edgecnn_infer):
        h.update(Path(module.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    return folder / "groups" / f"{h.hexdigest()[:32]}.npy"


def near_groups_of(split) -> np.ndarray:
    """`near_groups` of a split's images, from the memo when this source and preprocessing were grouped before."""
    from edgecnn.data.near_copies import Prints

    path = _memo_path(split.raw, split.prep, len(split)) if len(split.index) == len(split.raw) else None
    if path is not None and path.exists():
        try:
            groups = np.load(path)
            if groups.shape == (len(split),):
                return groups
        except (OSError, ValueError):
            pass
    groups = near_groups(Prints.of(split))
    if path is not None:
        from edgecnn.io import atomic_path

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, groups)
        except OSError:
            pass  # a memo that cannot be written is computed again next time
    return groups


def summary(groups: np.ndarray, by: str) -> dict:
    """{"by", "groups" (of two or more images), "images" (in them), "largest"}."""
    counts = np.bincount(groups) if len(groups) else np.zeros(0, np.int64)
    multi = counts[counts > 1]
    return {"by": by, "groups": int(len(multi)), "images": int(multi.sum()), "largest": int(multi.max(initial=0))}


def group_line(dataset: dict) -> str:
    """"12 groups of 2-3 images kept in one split each (--group-by near)" from a dataset summary, or ""."""
    g = dataset.get("groups")
    if not g:
        return ""
    if not g["groups"]:
        return f"--group-by {g['by']}: no group of two or more images; split as without it"
    return (f"{g['groups']:,} group(s) of 2 to {g['largest']:,} images ({g['images']:,} in all) kept in one split "
            f"each (--group-by {g['by']})")
