"""The bench row: one artifact on one runtime (local, a board, an emulator). Its keys are defined once, in
the on-device script (`edgecnn_infer.ROW_KEYS`), so a board's JSON and a local row cannot drift apart.

Python::

    from edgecnn.contracts.rows import Row
    row = Row(artifact="tflite_int8", backend="tflm", status="ok", arena_bytes=9376)
    row.to_dict()["arena_bytes"]
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from edgecnn.script.edgecnn_infer import ROW_KEYS

STATUSES = ("ok", "skipped", "failed")
# `integrity`: the artifact against its manifest (sha256 before opening; I/O, classes and input after)
INTEGRITY = ("verified", "unverified", "modified (allowed)", "modified (refused)", "misdescribed")
REFUSED = INTEGRITY[3:]  # rows whose artifact was not run: never part of a green run
DEFAULTS = {"status": "ok"}  # every other key defaults to None (not measured); docs/bench.md says what each holds


def _to_dict(self) -> dict:
    return dataclasses.asdict(self)


@classmethod
def _from_dict(cls, d: dict) -> "Row":
    """A row from JSON (a board's output, an older bench.json); unknown keys are dropped."""
    return cls(**{k: v for k, v in d.items() if k in ROW_KEYS})


def _add_note(self, text: Optional[str]) -> None:
    if text:
        self.note = f"{self.note}; {text}" if self.note else text


def _median_ms(self) -> Optional[float]:
    return (self.latency or {}).get("median_ms")


Row = dataclasses.make_dataclass(
    "Row", [("artifact", str)] + [(k, Any, dataclasses.field(default=DEFAULTS.get(k))) for k in ROW_KEYS[1:]],
    namespace={"to_dict": _to_dict, "from_dict": _from_dict, "add_note": _add_note,
               "median_ms": property(_median_ms),
               "__doc__": "One artifact on one runtime; the keys of a bench.json row (docs/bench.md)."},

)
Row.__module__ = __name__


def worst_class_text(class_drop, worst_class) -> str:
    """A row's class whose recall falls most below the reference's: 'defect -22.22 (2/9)'; blank when none."""
    w = worst_class or {}
    if not class_drop or class_drop <= 0 or not w:
        return ""
    return f"{w.get('name')} -{class_drop:.2f} ({w.get('lost')}/{w.get('images')})"


def is_local(device) -> bool:
    """Whether a row's `device` is this machine (no device, or "local ...") rather than a board."""
    return not device or str(device).startswith("local")


def at_device(device, sep: str = " @") -> str:
    """The suffix that names a board in a row's label ("" on this machine): " @pi@raspberrypi.local"."""
    return "" if is_local(device) else f"{sep}{device}"


def ms(v: Optional[float]) -> str:
    """A latency in milliseconds as people read it, with a unit chosen for its size: 4.4 us, 12.4 ms, 1.08 s
    ("" when not measured). The terminal table, bench.md and the HTML report all show latencies so."""
    if v is None:
        return ""
    if v < 1.0:
        return f"{v * 1e3:.3g} us" if v * 1e3 < 100 else f"{v * 1e3:.0f} us"
    return f"{v:.3g} ms" if v < 1000 else f"{v / 1e3:.3g} s"


def kib(v: Optional[int]) -> str:
    """A size in bytes as KiB (MiB from 1 MiB up); "" when not known."""
    if v is None:
        return ""
    return f"{v / 1024:.1f} KiB" if v < 1024 ** 2 else f"{v / 1024 ** 2:.2f} MiB"


def trial_number(trial_id) -> str:
    """A tuning trial's 1-based number as people count them (KerasTuner's ids are 0-based strings)."""
    return str(int(trial_id) + 1) if str(trial_id).isdigit() else str(trial_id)


def trial_params(params: dict) -> str:
    """A trial's hyperparameters in one line: "filters=32, learning_rate=0.00123" (floats to 3 figures)."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in (params or {}).items())


def trial_figures(t: dict) -> tuple:
    """A tuning trial's (or the defaults') int8 figures as the tune table and the report show them: latency ms,
    size KiB, arena KiB; "" where not measured."""
    lat, size, arena = t.get("int8_latency_ms"), t.get("int8_size_bytes"), t.get("arena_bytes")
    return ("" if lat is None else f"{lat:.3f}", "" if size is None else f"{size / 1024:.1f}",
            "" if arena is None else f"{arena / 1024:.1f}")


def skipped_groups(rows) -> list:
    """The skipped rows (`Row`s or bench.json dicts) grouped by runtime, device and reason, in the order they
    first appear, as (backend, device, [artifacts], reason): a runtime that is not installed or has no hardware
    skips every artifact for the same reason, which a report says once."""
    groups: dict = {}
    for r in rows:
        get = r.get if isinstance(r, dict) else lambda k, r=r: getattr(r, k)
        if get("status") == "skipped":
            groups.setdefault((get("backend"), get("device"), get("reason")), []).append(get("artifact"))
    return [(b, d, arts, why) for (b, d, why), arts in groups.items()]


__all__ = ["INTEGRITY", "REFUSED", "Row", "ROW_KEYS", "STATUSES", "at_device", "is_local", "kib", "ms",
           "skipped_groups"]
