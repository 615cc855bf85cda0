"""Contracts: the typed records every stage and runtime agree on. The manifest (and its artifact entries and
preprocessing), the bench row, parity, and the gates. They import only the ground floor.

Python::

    from edgecnn.contracts import Gates, Manifest, Row, parity, read_manifest
"""
from edgecnn.contracts.gates import Gates, Violation
from edgecnn.contracts.manifest import (FILENAME, SCHEMA, ArtifactEntry, Manifest, Preprocessing, read_manifest,
                                        tensor_info, write_manifest)
from edgecnn.contracts.parity import Parity, parity
from edgecnn.contracts.rows import ROW_KEYS, Row

__all__ = ["ArtifactEntry", "FILENAME", "Gates", "Manifest", "Parity", "Preprocessing", "ROW_KEYS", "Row", "SCHEMA",
           "Violation", "parity", "read_manifest", "tensor_info", "write_manifest"]
