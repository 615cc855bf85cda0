"""On the device: remote runs over SSH (`remote`) and aarch64 parity under emulation (`emulate`) of the
standalone script `edgecnn/script/edgecnn_infer.py` (which lives on the ground floor: training imports its preprocessing).

Python::

    from edgecnn.device import script_path
    shutil.copy(script_path(), "RUN/export/")  # ship the script next to the artifacts

The script is also `tools/edgecnn_infer.py` in the source tree (a link to the same file).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["script_path"]


def script_path() -> Path:
    """Path of the on-device script `edgecnn_infer.py` installed with the package."""
    return Path(__file__).resolve().parent.parent / "script" / "edgecnn_infer.py"
