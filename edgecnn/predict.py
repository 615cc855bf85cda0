"""Classify images with any exported model: .keras, .tflite or .onnx, with the preprocessing and class
names recorded beside it (RUN/export/manifest.json, or the run's config.json for model.keras).

Python::

    from edgecnn.predict import predict
    for p in predict("runs/d/export/model_int8.tflite", ["digit.png"], top_k=3):
        print(p.input, p.label, p.confidence)

CLI::

    edgecnn predict runs/d/export/model_int8.tflite digit.png other.png --top-k 3
    edgecnn predict runs/d/model.keras samples.npz --json

Image files are 8-bit (0-255 is black to white). An .npz holds raw pixels on the scale of the training
source (the recorded `pixel_max`, e.g. 0-16 for digits) under the key `x` (or `images`, `x_test`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.errors import ConfigError, DataError, ModelError, ShapeError

NPZ_KEYS = ("x", "images", "x_test")


@dataclass
class Prediction:
    """The top-k labels of one input."""

    input: str  # file name, or file[i] for the i-th image of an .npz
    index: int  # class index of the top label
    label: str
    confidence: float  # probability of the top label
    top: list = field(default_factory=list)  # [{"index", "label", "confidence"}] best first

    def to_dict(self) -> dict:
        return asdict(self)

    def result(self) -> dict:
        """As the on-device script reports an input: {input, label, index, confidence, top_k}."""
        return {"input": self.input, "label": self.label, "index": self.index, "confidence": self.confidence,
                "top_k": [{"label": t["label"], "index": t["index"], "confidence": t["confidence"]} for t in self.top]}


def model_metadata(model: Path, manifest: Optional[str] = None) -> dict:
    """{"preprocessing", "class_names"} from `manifest` or the file recorded beside `model`.

    Raises:
        ConfigError: nothing found, or it lacks the preprocessing.
    """
    from edgecnn.contracts.manifest import FILENAME, Manifest, read_manifest
    from edgecnn.io import read_json

    if manifest:
        candidates = [Path(manifest)]
    elif model.suffix == ".keras":
        candidates = [model.parent / "config.json", model.parent / FILENAME]
    else:
        candidates = [model.parent / FILENAME, model.parent.parent / "config.json"]
    for c in candidates:
        if not c.is_file():
            continue
        try:
            meta = read_json(c)
        except Exception as e:
            raise ConfigError(f"{c}: unreadable ({e})") from None
        if isinstance(meta, dict) and "artifacts" in meta:  # an export manifest: the one reader
            m: Manifest = read_manifest(c)
            return {"preprocessing": m.preprocessing.to_dict(), "class_names": list(m.class_names), "source": str(c),
                    "manifest": m}
        if not isinstance(meta, dict) or "preprocessing" not in meta:
            raise ConfigError(f"{c}: has no preprocessing record (expected an edgecnn manifest or run config)")
        return {"preprocessing": meta["preprocessing"], "class_names": meta.get("class_names") or [],
                "source": str(c)}
    raise ConfigError(f"{model}: no manifest.json or config.json beside it; pass --manifest FILE "
                      f"(it records the preprocessing and class names)")


def load_inputs(paths, prep: dict) -> tuple:
    """Image files, folders of them and .npz files -> (float32 NHWC in [0, 1], one name per image). A folder
    gives the images under it (subfolders too), each named by its path, as the on-device script names them.
    `input_chunks` gives the same a piece at a time.

    Raises:
        DataError: a missing or unreadable file, an .npz without images.
    """
    parts = list(input_chunks(paths, prep))
    return np.concatenate([x for x, _ in parts]), [n for _, names in parts for n in names]


def input_chunks(paths, prep: dict, size: Optional[int] = None):
    """`load_inputs` in pieces of about `size` images (default: the on-device script's IMAGE_CHUNK files; an .npz
    comes whole), so a folder of many photos is never held as float32 at once. Yields (x, names)."""
    from edgecnn.script.edgecnn_infer import IMAGE_CHUNK, UsageError, image_files, preprocess, read_image

    size = size or IMAGE_CHUNK
    given = []  # (path, name)
    for p in map(Path, paths):
        try:
            given += [(Path(f), f) for f in image_files([p])] if p.is_dir() else [(p, p.name)]
        except UsageError as e:
            raise DataError(str(e)) from None
    xs, names = [], []
    for p, name in given:
        if not p.is_file():
            raise DataError(f"{p}: no such file")
        if p.suffix.lower() == ".npz":
            x = _npz_images(p)
            xs.append(preprocess(x, prep))
            names += [f"{p.name}[{i}]" for i in range(len(x))]
        else:
            try:  # read as the device reads it: 8-bit grey or RGB, scaled by 1/255, resized
                xs.append(read_image(str(p), prep)[None])
            except UsageError as e:
                raise DataError(str(e)) from None
            names.append(name)
        if len(names) >= size:
            yield np.concatenate(xs), names
            xs, names = [], []
    if xs:
        yield np.concatenate(xs), names


def _npz_images(p: Path) -> np.ndarray:
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as e:
        raise DataError(f"{p}: not a readable .npz ({e})") from None
    key = next((k for k in NPZ_KEYS if k in z.files), z.files[0] if len(z.files) == 1 else None)
    if key is None:
        raise DataError(f"{p}: no image array (expected one of {', '.join(NPZ_KEYS)}, found {', '.join(z.files)})")
    from edgecnn.script.edgecnn_infer import UsageError, check_pixels

    try:
        x = z[key]
        check_pixels(x, f"{p} '{key}'")  # the device's rule: numbers, finite
    except ValueError as e:  # object arrays need pickle, which is never allowed
        raise DataError(f"{p}: cannot read its arrays ({e}); save numbers, not objects") from None
    except UsageError as e:
        raise DataError(str(e)) from None
    if not np.issubdtype(x.dtype, np.number) or x.ndim not in (2, 3, 4):
        raise DataError(f"{p}: '{key}' must be numeric images (N,H,W[,C]) or one image (H,W), got {x.dtype} {x.shape}")
    return x[None] if x.ndim == 2 else x


def predict(model, inputs, *, top_k: int = 3, manifest: Optional[str] = None, threads: int = 1,
            allow_modified: bool = False) -> list:
    """Top-k labels with confidence for each input image.

    Args:
        model: a .keras, .tflite or .onnx file.
        inputs: image files, folders of them and/or .npz files.
        top_k: labels per input.
        manifest: preprocessing and class names; default: the manifest (or run config) beside `model`.
        threads: CPU threads for the runtime.
        allow_modified: run a model whose sha256 differs from its manifest entry (refused otherwise).
    Returns:
        One `Prediction` per image.
    Raises:
        IntegrityError: the model is not the file its manifest describes.
        ConfigError, DataError, ModelError, ShapeError: bad model, metadata or inputs (one-line messages).
    """
    from edgecnn.errors import EdgecnnError
    from edgecnn.native import native_stderr, one_line
    from edgecnn.runtimes import DEFAULT, RuntimeOptions, Unavailable, format_of, open_session

    model = Path(model)
    if not model.is_file():
        raise ConfigError(f"{model}: no such model file")
    if top_k < 1:
        raise ConfigError("--top-k must be >= 1")
    fmt = format_of(model)
    meta = model_metadata(model, manifest)
    m = meta.get("manifest")
    entry_name = m.entry_for_file(model.name)[0] if m is not None else None
    if m is not None:
        m.check_file(entry_name, model, allow_modified)  # before anything opens it
    chunks = input_chunks(inputs, meta["preprocessing"])
    with native_stderr():
        try:
            sess = open_session(DEFAULT[fmt], model, RuntimeOptions(threads=threads))
        except Unavailable as e:
            raise ConfigError(str(e)) from None
        except ModelError as e:  # "<path>: not a usable ... model (why)"
            raise ModelError(f"{model}: cannot load ({str(e).split(': ', 1)[-1]})") from None
        except EdgecnnError:
            raise
        except Exception as e:
            raise ModelError(f"{model}: cannot load ({one_line(e)})") from None
        try:
            _check_fits(meta, sess, model, entry_name)
            want = tuple(sess.input_shape)
            probs, names = [], []
            for x, part in chunks:
                if len(want) != 3 or any(w is not None and w != h for w, h in zip(want, x.shape[1:])):
                    raise ShapeError(f"{model.name} takes input {list(want)} but the recorded preprocessing gives "
                                     f"{list(x.shape[1:])}: wrong --manifest?")
                probs.append(sess.predict(x))
                names += part
        finally:
            sess.close()
    if not probs:
        return []
    probs = np.concatenate(probs)
    classes = [str(c) for c in meta["class_names"]] or [str(i) for i in range(probs.shape[1])]
    out = []
    for name, p in zip(names, probs):
        order = np.argsort(-p, kind="stable")[:top_k]
        top = [{"index": int(i), "label": classes[i], "confidence": float(p[i])} for i in order]
        out.append(Prediction(input=name, index=top[0]["index"], label=top[0]["label"],
                              confidence=top[0]["confidence"], top=top))
    return out


def folder_scores(model, inputs, preds: list, manifest: Optional[str] = None) -> dict:
    """How `predict`'s results on `inputs` score when the inputs are folders laid out one subfolder per class (the
    on-device script's rule, `folder_labels`): {"accuracy", "labels": "class folders", "true_labels"}; {"note"}
    when such a layout has a folder the model has no class for; {} otherwise."""
    from edgecnn.script.edgecnn_infer import folder_labels

    if not preds or not all(Path(i).is_dir() for i in inputs):
        return {}
    names = model_metadata(Path(model), manifest)["class_names"]
    y, why = folder_labels(inputs, [p.input for p in preds], names)
    if y is None:
        return {"note": why} if why else {}
    return {"accuracy": float(np.mean([p.index == t for p, t in zip(preds, y)])), "labels": "class folders",
            "true_labels": [names[int(t)] for t in y]}


def _check_fits(meta: dict, sess, model: Path, entry_name) -> None:
    """The recorded preprocessing and class names (and a manifest entry's I/O) against the open model: the
    on-device script's check, so predict refuses what the device refuses."""
    from edgecnn.script.edgecnn_infer import UsageError, check_fit

    if meta.get("manifest") is not None:
        meta["manifest"].check_model(entry_name, sess, model.name)
        return
    n_out = sess.outputs[0]["shape"][-1] if sess.outputs else None
    try:
        check_fit(meta["preprocessing"], meta["class_names"] or None, sess.input_shape, n_out,
                  Path(meta["source"]).name, model.name)
    except UsageError as e:
        raise ConfigError(str(e)) from None


__all__ = ["Prediction", "predict", "load_inputs", "input_chunks", "model_metadata"]
