"""Bench: every exported artifact on every runtime available here: accuracy, parity with the Keras
reference, size, load time, latency and throughput; reports and parity gates for CI.

Python::

    from edgecnn.bench import BenchConfig, bench
    result = bench("runs/d", config=BenchConfig(threads=1, max_acc_drop=0.5))
    for row in result.rows:
        print(row.artifact, row.backend, row.status, row.accuracy, row.median_ms)
    assert result.ok, result.violations

CLI::

    edgecnn bench runs/d                                   # all artifacts x keras, tflite, litert-*, onnxruntime
    edgecnn bench runs/d --backends tflite --threads 2 --batch 8
    edgecnn bench runs/d --max-acc-drop 0.5 --min-agreement 0.99   # exit 1 when a row breaks a gate
    edgecnn bench --model runs/d/export/model_int8.tflite --data digits

Rows: one per artifact x backend (x onnxruntime provider). A backend or accelerator missing here is a
`skipped` row with its reason, an artifact that fails is a `failed` row with its error; the others go
on. Keys of bench.json are documented in docs/bench.md.
"""
from edgecnn.bench.config import SCHEMA, BenchConfig, BenchResult
from edgecnn.bench.core import bench
from edgecnn.contracts.rows import ROW_KEYS, Row
from edgecnn.runtimes import RUNTIMES as BACKENDS  # bench's backends are the runtimes
from edgecnn.runtimes import Runtime as Backend
from edgecnn.runtimes import Session, Unavailable
from edgecnn.runtimes import get_runtimes as get_backends

__all__ = ["BACKENDS", "Backend", "BenchConfig", "BenchResult", "ROW_KEYS", "Row", "SCHEMA", "Session",
           "Unavailable", "bench", "get_backends"]
