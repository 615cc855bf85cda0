"""manifest.json: what a device needs to run an exported model correctly, and the proof that it does.

Schema `edgecnn.manifest/1`: source run, class names, preprocessing, the Keras reference accuracy, tool
versions, and per artifact its file, sha256, size, I/O names, shapes, dtypes and quantization, and the
parity figures measured when it was exported (with the SHA-256 of the test split's top-1 predictions; for an
int8 TFLite on each CPU kernel set: the one export verified with (`--kernels`, XNNPACK by default) in `parity`,
the other two ("xnnpack", "builtin", "reference") in `parity_kernels`). One reader (`read_manifest`), one
validator (the on-device script's `validate_manifest`, so a device refuses exactly what edgecnn refuses) and one
writer (`write_manifest`); every part of edgecnn that reads a manifest goes through them.

Python::

    from edgecnn.contracts.manifest import read_manifest
    m = read_manifest("runs/d/export")                      # a folder means its manifest.json
    m.preprocessing.image_size, m.class_names
    m.artifacts["tflite_int8"].inputs[0]["quantization"]     # {"scale": ..., "zero_point": ...}
    m.path_of("tflite_int8")                                 # the file, checked to stay in the folder
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.errors import ConfigError, IntegrityError
from edgecnn.script.edgecnn_infer import UsageError, check_fit, check_integrity, check_io, validate_manifest

SCHEMA = "edgecnn.manifest/1"
FILENAME = "manifest.json"


@dataclass(frozen=True)
class Preprocessing:
    """Raw pixels -> model input, as training did it (applied by `edgecnn_infer.preprocess`)."""

    image_size: tuple  # (h, w) of the model input
    channels: int  # 1 or 3
    pixel_max: Optional[float]  # value of a white pixel in the source data (255 for images, 16 for digits)
    resize: str = "bilinear"  # half-pixel bilinear, no antialiasing
    orientation: str = "stored"  # image files: "exif" upright by their EXIF tag, "stored" as stored (older runs)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(image_size=tuple(int(v) for v in d["image_size"]), channels=int(d["channels"]),
                   pixel_max=d.get("pixel_max"), resize=d.get("resize", "bilinear"),
                   orientation=d.get("orientation", "stored"))

    def to_dict(self) -> dict:
        return {"image_size": list(self.image_size), "channels": self.channels, "pixel_max": self.pixel_max,
                "resize": self.resize, "orientation": self.orientation}

    @property
    def input_shape(self) -> tuple:
        """(h, w, c) of the model input."""
        return (*self.image_size, self.channels)


@dataclass(frozen=True)
class ArtifactEntry:
    """One exported file: what it is, its hash, its I/O, and the parity measured at export."""

    file: str  # a plain file name in the manifest's folder
    format: str  # tflite | onnx
    precision: Optional[str] = None  # fp32 | int8
    quant: Optional[str] = None  # ptq | qat for int8 artifacts
    sha256: Optional[str] = None
    size_bytes: Optional[int] = None
    inputs: tuple = ()  # tensor_info() records
    outputs: tuple = ()
    parity: dict = field(default_factory=dict)  # contracts.parity.Parity.to_manifest()
    parity_kernels: dict = field(default_factory=dict)  # int8 .tflite: the same on the other CPU kernel sets
    runtime: Optional[str] = None  # the runtime (and kernels) that verified it
    details: dict = field(default_factory=dict)  # exporter details (method, calibration, size ratio, ...)

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "ArtifactEntry":
        names = {f.name for f in dataclasses.fields(cls)}
        fmt = d.get("format") or {".tflite": "tflite", ".onnx": "onnx"}.get(Path(d.get("file", name)).suffix, "?")
        kw = {k: v for k, v in d.items() if k in names}
        kw.update(file=d.get("file", name), format=fmt, inputs=tuple(d.get("inputs") or ()),
                  outputs=tuple(d.get("outputs") or ()), parity=dict(d.get("parity") or {}),
                  parity_kernels=dict(d.get("parity_kernels") or {}),
                  details=dict(d.get("details") or {}))
        return cls(**kw)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["inputs"], d["outputs"] = list(self.inputs), list(self.outputs)
        return d


@dataclass(frozen=True)
class Manifest:
    """The whole manifest; `to_dict()` is its JSON form."""

    class_names: tuple
    preprocessing: Preprocessing
    artifacts: dict  # name -> ArtifactEntry, in export order
    schema: str = SCHEMA
    created: str = ""
    edgecnn_version: str = ""
    source_run: dict = field(default_factory=dict)  # {"path", "model_sha256", "arch"}
    reference: dict = field(default_factory=dict)  # {"accuracy", "n"} of the Keras model on the test split
    versions: dict = field(default_factory=dict)  # tool versions that made and checked the artifacts
    warnings: tuple = ()  # what export warned about (QAT below PTQ, a reference stuck on one class, ...)
    folder: Optional[Path] = None  # where it was read from (not serialised)

    @classmethod
    def from_dict(cls, m: dict, where: str = "manifest", folder: Optional[Path] = None) -> "Manifest":
        """Validate a manifest's JSON form and type it.

        Raises:
            ConfigError: not an edgecnn manifest of this schema, or an invalid part of one.
        """
        if not isinstance(m, dict):
            raise ConfigError(f"{where}: not an edgecnn manifest (a JSON object)")
        if m.get("schema") != SCHEMA:
            raise ConfigError(f"{where}: not an {SCHEMA} manifest (schema {m.get('schema')!r})")
        missing = [k for k in ("class_names", "preprocessing", "artifacts") if k not in m]
        if missing:
            raise ConfigError(f"{where}: incomplete manifest, missing {', '.join(missing)}")
        try:
            validate_manifest(m, where)
        except UsageError as e:
            raise ConfigError(str(e)) from None
        return cls(class_names=tuple(str(c) for c in m["class_names"]),
                   preprocessing=Preprocessing.from_dict(m["preprocessing"]),
                   artifacts={k: ArtifactEntry.from_dict(k, e) for k, e in m["artifacts"].items()},
                   schema=m["schema"], created=m.get("created", ""), edgecnn_version=m.get("edgecnn_version", ""),
                   source_run=dict(m.get("source_run") or {}), reference=dict(m.get("reference") or {}),
                   versions=dict(m.get("versions") or {}),
                   warnings=tuple(map(str, m["warnings"])) if isinstance(m.get("warnings"), list) else (),
                   folder=folder)

    def to_dict(self) -> dict:
        return {
            "schema": self.schema, "created": self.created, "edgecnn_version": self.edgecnn_version,
            "source_run": dict(self.source_run), "class_names": list(self.class_names),
            "preprocessing": self.preprocessing.to_dict(), "reference": dict(self.reference),
            "versions": dict(self.versions), "artifacts": {k: e.to_dict() for k, e in self.artifacts.items()},
            "warnings": list(self.warnings),
        }

    def entry_for_file(self, file_name: str) -> tuple:
        """(name, ArtifactEntry) of the artifact stored in `file_name`, or (None, None)."""
        return next(((k, e) for k, e in self.artifacts.items() if e.file == file_name), (None, None))

    def check_file(self, name: Optional[str], path, allow_modified: bool = False) -> str:
        """Whether `path` is artifact `name`'s file (sha256), before anything opens it: the on-device script's
        check. Returns "verified", "modified (allowed)" or "unverified" (`name` None: not in this manifest).

        Raises:
            IntegrityError: the sha256 differs and `allow_modified` is False.
        """
        entry = self.artifacts[name].to_dict() if name in self.artifacts else None
        try:
            return check_integrity(str(path), entry, FILENAME, allow_modified)
        except UsageError as e:
            raise IntegrityError(str(e)) from None

    def check_model(self, name: Optional[str], session, file_name: str) -> None:
        """The manifest's preprocessing, class names and (for a listed artifact) I/O dtypes and quantization
        against an open session: the on-device script's checks.

        Raises:
            ConfigError: they do not fit (a manifest of another model).
        """
        n_out = session.outputs[0]["shape"][-1] if session.outputs else None
        try:
            check_fit(self.preprocessing.to_dict(), list(self.class_names), session.input_shape, n_out, FILENAME,
                      file_name)
            if name in self.artifacts and session.inputs and session.outputs:
                check_io(self.artifacts[name].to_dict(), session.inputs, session.outputs, FILENAME, file_name)
        except UsageError as e:
            raise ConfigError(str(e)) from None

    def path_of(self, name: str) -> Path:
        """The artifact's file in the manifest's folder; a symlink that leaves the folder is refused.

        Raises:
            IntegrityError: the resolved file is outside the folder.
        """
        folder = Path(self.folder or ".")
        path = folder / self.artifacts[name].file
        if path.is_symlink() or path.exists():
            real, root = path.resolve(), folder.resolve()
            if root not in real.parents:
                raise IntegrityError(f"{folder / FILENAME}: artifact {name!r} ({self.artifacts[name].file}) resolves to "
                                  f"{real}, outside the export folder")
        return path


def read_manifest(path) -> Manifest:
    """Read and validate a manifest (a folder means its manifest.json).

    Raises:
        ConfigError: missing, unreadable, or not a valid edgecnn manifest.
    """
    from edgecnn.io import read_json

    p = Path(path)
    if p.is_dir():
        p = p / FILENAME
    if not p.is_file():
        raise ConfigError(f"{p}: no manifest (run `edgecnn export RUN` first)")
    try:
        m = read_json(p)
    except Exception as e:
        raise ConfigError(f"{p}: unreadable manifest ({type(e).__name__}: {e})") from None
    return Manifest.from_dict(m, str(p), folder=p.parent)


def write_manifest(path, manifest: Manifest) -> Path:
    """Validate and atomically write `manifest` (a folder means its manifest.json)."""
    from edgecnn.io import write_json

    p = Path(path)
    if p.is_dir():
        p = p / FILENAME
    d = manifest.to_dict()
    Manifest.from_dict(d, str(p))  # never write what the readers would refuse
    return write_json(p, d)


def tensor_info(name: str, shape, dtype, scale=None, zero_point=None, **extra) -> dict:
    """One input/output as the manifest records it (a dynamic dimension is null)."""
    quant = None if not scale else {"scale": float(scale), "zero_point": int(zero_point)}
    shape = [None if (d is None or isinstance(d, str) or int(d) < 0) else int(d) for d in shape]
    return {"name": name, "shape": shape, "dtype": np.dtype(dtype).name, "quantization": quant, **extra}
