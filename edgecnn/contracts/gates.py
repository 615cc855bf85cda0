"""Parity gates: thresholds a command (and a CI pipeline) fails on. One set for export and bench: the same
flag names, the same defaults (off), the same messages.

Python::

    from edgecnn.contracts.gates import Gates
    gates = Gates(max_acc_drop=0.5, min_agreement=0.99)
    for v in gates.check("tflite_int8 on tflite (xnnpack)", accuracy_drop=0.8, agreement=0.995):
        print(v)          # tflite_int8 on tflite (xnnpack): accuracy drop 0.80 points > --max-acc-drop 0.5
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from edgecnn.contracts.parity import differing
from edgecnn.errors import ConfigError


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple:
    """The Wilson score interval of a proportion k/n (95% for z = 1.96): how far a top-1 agreement measured on n
    images can be from the one more images would give. (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Violation:
    """One broken gate."""

    subject: str  # what broke it: "tflite_int8 on tflite (xnnpack)"
    metric: str  # accuracy_drop | agreement | max_abs_diff | size_ratio | class_drop
    value: float
    limit: float
    flag: str  # the option that set the limit: --max-acc-drop, ...
    message: str

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Gates:
    """Limits on accuracy drop (points), top-1 agreement (fraction), max abs probability difference, the
    int8/fp32 size ratio and the largest drop of one class's recall (points). None: not checked."""

    max_acc_drop: Optional[float] = None  # points (percent) of accuracy an artifact may lose to the reference
    min_agreement: Optional[float] = None  # top-1 agreement with the reference, fraction 0-1
    max_abs_diff: Optional[float] = None  # max abs probability difference to the reference
    max_size_ratio: Optional[float] = None  # int8 file size / fp32 file size (export only)
    max_class_drop: Optional[float] = None  # points of one class's recall an artifact may lose to the reference

    def __post_init__(self):
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise ConfigError(f"--min-agreement is a fraction between 0 and 1 (got {self.min_agreement}); "
                              "for 99% pass 0.99")
        for name in ("max_abs_diff", "max_size_ratio", "max_class_drop"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0 (got {v})")

    @property
    def active(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """The active gates as their flags: '--max-acc-drop 0.5, --min-agreement 0.99'."""
        return ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in asdict(self).items() if v is not None)

    def thin_evidence(self, n: int, smallest: Optional[dict] = None) -> list:
        """Warnings when the test split is too small for a gate to mean what it says: one error on n images moves
        accuracy by 100/n points, and agreement by 1/n; one image of the smallest class ({"name", "images"}:
        parity.smallest_class) moves its recall by 100/images points."""
        out = []
        if smallest and self.max_class_drop is not None and smallest.get("images") and \
                self.max_class_drop < 100.0 / smallest["images"]:
            out.append(f"one image of {smallest['name']} is {100.0 / smallest['images']:.2f} points of its recall "
                       f"({smallest['images']} test images), more than --max-class-drop {self.max_class_drop:g}: "
                       f"the gate breaks on a single image of it")
        if not n:
            return out
        step = 100.0 / n
        if self.max_acc_drop is not None and 0 <= self.max_acc_drop < step:
            out.append(f"one test error moves accuracy by {step:.2f} points on {n} test images, more than "
                       f"--max-acc-drop {self.max_acc_drop:g}: the gate allows no extra error at all")
        if self.min_agreement is not None and self.min_agreement < 1 and 1 - self.min_agreement < 1.0 / n:
            out.append(f"one disagreement is {1.0 / n:.4f} of {n} test images, more than 1 - --min-agreement "
                       f"{self.min_agreement:g}: the gate allows no disagreement at all")
        return out

    def check(self, subject: str, *, accuracy_drop=None, agreement=None, max_abs_diff=None, size_ratio=None,
              accuracy=None, n: Optional[int] = None, class_drop=None, worst: Optional[dict] = None) -> list:
        """The gates `subject`'s figures break (a figure that is None is not judged). With `n`, the images the
        figures come from, a broken accuracy or agreement gate also says how many images that is and, for
        agreement, its 95% interval: on a few hundred images a gate can break by one image. `worst`: the class
        whose recall drops most ({"name", "lost", "images"}: parity.worst_class_record), named when
        --max-class-drop breaks."""
        out = []
        if self.max_acc_drop is not None and accuracy_drop is not None and accuracy_drop > self.max_acc_drop:
            why = [f"{round(accuracy_drop * n / 100):+d} errors against the reference on {n} images"] if n else []
            why += [f"accuracy {accuracy:.4f}"] if accuracy is not None else []
            out.append(Violation(subject, "accuracy_drop", accuracy_drop, self.max_acc_drop, "--max-acc-drop",
                                 f"{subject}: accuracy drop {accuracy_drop:.2f} points > --max-acc-drop "
                                 f"{self.max_acc_drop:g}" + (f" ({'; '.join(why)})" if why else "")))
        if self.min_agreement is not None and agreement is not None and agreement < self.min_agreement:
            why = ""
            if n:
                differ = differing(agreement, n)
                lo, hi = wilson_interval(n - differ, n)
                why = f" ({differ} of {n} top-1 predictions differ; 95% interval {lo:.4f}-{hi:.4f})"
            out.append(Violation(subject, "agreement", agreement, self.min_agreement, "--min-agreement",
                                 f"{subject}: top-1 agreement {agreement:.4f} < --min-agreement "
                                 f"{self.min_agreement:g}{why}"))
        if self.max_abs_diff is not None and max_abs_diff is not None and max_abs_diff > self.max_abs_diff:
            out.append(Violation(subject, "max_abs_diff", max_abs_diff, self.max_abs_diff, "--max-abs-diff",
                                 f"{subject}: max abs probability difference {max_abs_diff:.3g} > --max-abs-diff "
                                 f"{self.max_abs_diff:g}"))
        if self.max_size_ratio is not None and size_ratio is not None and size_ratio > self.max_size_ratio:
            out.append(Violation(subject, "size_ratio", size_ratio, self.max_size_ratio, "--max-size-ratio",
                                 f"{subject}: size {size_ratio:.3f}x of fp32 > --max-size-ratio "
                                 f"{self.max_size_ratio:g}"))
        if self.max_class_drop is not None and class_drop is not None and class_drop > self.max_class_drop:
            w = worst or {}
            out.append(Violation(subject, "class_drop", class_drop, self.max_class_drop, "--max-class-drop",
                                 f"{subject}: recall of {w.get('name', 'one class')} drops "
                                 f"{class_drop:.2f} points > --max-class-drop {self.max_class_drop:g}"
                                 + (f" ({w['lost']} of its {w['images']} images lost)" if w.get("images") else "")))
        return out
