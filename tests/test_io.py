"""Atomic writes: the final file appears whole or not at all, with the usual permissions."""
from __future__ import annotations

import os
import stat

import pytest

from edgecnn.io import _umask, atomic_path, read_json, write_json


def test_atomic_file_gets_umask_mode_not_mkstemp_0600(tmp_path):
    path = write_json(tmp_path / "m.json", {"a": 1})
    assert read_json(path) == {"a": 1}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~_umask()
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o044 == 0o044 & ~_umask()  # others can read what we share


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            assert tmp.suffix == ".tflite" and tmp.parent == tmp_path
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]
