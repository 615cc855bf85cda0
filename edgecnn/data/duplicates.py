"""Byte-identical image files in a folder: the same photo copied into two class folders (labels that contradict
each other), or into the test split and a training split (a test image the model has seen). Copies that are not
byte-identical (resized, re-saved, burst shots) are `near_copies`'.

Found without reading every file whole: files are grouped by size, then by their first 64 KiB, and only files
still alike are read whole (SHA-256). A folder of photos of different sizes costs one stat per file.
"""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

HEAD = 64 << 10  # bytes compared before a whole file is read
SHOWN = 3  # example pairs named in a warning


def _digest(path, limit=None) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if limit is not None:
            h.update(f.read(limit))
        else:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.digest()


def identical_groups(paths) -> list:
    """Positions of byte-identical files, one sorted array per group of two or more (groups in file order)."""
    by_size = defaultdict(list)
    for i, p in enumerate(paths):
        by_size[os.stat(p).st_size].append(i)
    groups = []
    for size, same_size in by_size.items():
        if len(same_size) < 2:
            continue
        by_head = defaultdict(list)
        for i in same_size:
            by_head[_digest(paths[i], HEAD)].append(i)
        for alike in by_head.values():
            if len(alike) < 2:
                continue
            if size <= HEAD:  # the head is the whole file
                groups.append(alike)
                continue
            by_whole = defaultdict(list)
            for i in alike:
                by_whole[_digest(paths[i])].append(i)
            groups += [g for g in by_whole.values() if len(g) > 1]
    return sorted((np.asarray(sorted(g), np.int64) for g in groups), key=lambda g: int(g[0]))


def copies_between(paths, others) -> list:
    """(i, j) for each file `paths[i]` byte-identical to a file `others[j]` (the first such j), in i order."""
    groups = identical_groups(list(paths) + list(others))
    n, out = len(paths), []
    for g in groups:
        theirs = g[g >= n]
        if len(theirs):
            out += [(int(i), int(theirs[0]) - n) for i in g[g < n]]
    return sorted(out)


def field_warning(paths, run_source, root=None) -> str:
    """A field set (`bench --model M --data FOLDER`) whose images are copies of the run's own data: one line
    naming how many and the first pairs, or ""."""
    from edgecnn.script.edgecnn_infer import walk_images

    if not run_source or not os.path.isdir(run_source) or not len(paths):
        return ""
    if root and os.path.abspath(root) == os.path.abspath(run_source):
        return ""
    theirs = walk_images(run_source)[0]
    pairs = copies_between(paths, theirs)
    if not pairs:
        return ""
    shown = "; ".join(f"{_name(paths, i, root)} = {theirs[j]}" for i, j in pairs[:SHOWN])
    return (f"{len(pairs)} of {len(paths)} images are byte-identical to images of the run's own data {run_source} "
            f"({shown}): they are not new to the model (if they were in its training split, the figures count "
            f"images it learned from)")


def _name(paths, i: int, root) -> str:
    p = Path(paths[i])
    try:
        return str(p.relative_to(root)) if root else str(p)
    except ValueError:
        return str(p)


def find(paths, splits, root=None) -> dict:
    """What byte-identical copies mean for a split folder, or {} when it has none.

    Args:
        paths: every file of the source, by position.
        splits: {"train": Split, "val": Split, "test": Split} over those positions (index and labels).
        root: the folder the examples are named relative to.
    Returns:
        {"groups", "copies" (files beyond the first of each group), "across_classes" (groups filed under more than
        one class), "test_seen" (test images identical to a training or validation image), "examples": {kind:
        ["a.jpg = b.jpg", ...]}}.
    """
    groups = identical_groups(paths)
    if not groups:
        return {}
    split_of = np.full(len(paths), -1, np.int64)
    label_of = np.full(len(paths), -1, np.int64)
    for k, name in enumerate(("train", "val", "test")):
        s = splits[name]
        split_of[s.index], label_of[s.index] = k, s.labels
    across, seen, examples = 0, 0, {"across_classes": [], "test_seen": []}
    for g in groups:
        g = g[split_of[g] >= 0]  # images a --limit left out of every split are no one's copies
        if len(g) < 2:
            continue
        other = g[label_of[g] != label_of[g[0]]]
        if len(other):
            across += 1
            examples["across_classes"].append(f"{_name(paths, g[0], root)} = {_name(paths, other[0], root)}")
        test, held = g[split_of[g] == 2], g[split_of[g] < 2]
        if len(test) and len(held):
            seen += len(test)
            examples["test_seen"].append(f"{_name(paths, test[0], root)} = {_name(paths, held[0], root)}")
    return {"groups": len(groups), "copies": int(sum(len(g) - 1 for g in groups)), "across_classes": across,
            "test_seen": seen, "examples": {k: v[:SHOWN] for k, v in examples.items() if v}}


def duplicate_warnings(found: dict, n_test: int) -> list:
    """One line for each kind of copy that changes what a run's figures mean."""
    if not found:
        return []
    out, ex = [], found.get("examples", {})
    if found.get("across_classes"):
        out.append(f"{found['across_classes']} image(s) have a byte-identical copy in another class "
                   f"({'; '.join(ex.get('across_classes', []))}): their labels contradict each other; keep each in "
                   f"its right class only")
    if found.get("test_seen"):
        out.append(f"{found['test_seen']} of {n_test} test images are byte-identical to training or validation "
                   f"images ({'; '.join(ex.get('test_seen', []))}): the test figures count them as unseen; remove "
                   f"the copies and train again")
    from edgecnn.data.near_copies import near_warning

    near = near_warning(found.get("near") or {}, found.get("test_seen", 0))
    return out + ([near] if near else [])
