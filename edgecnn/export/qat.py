"""Quantization-aware training (QAT) for the int8 TFLite model, run in a child process.

tfmot only takes tf_keras models, and importing it sets TF_USE_LEGACY_KERAS, which would change what the
rest of this (Keras 3) process gets from `tf.keras`. So the parent writes the trained weights, the data
splits and the calibration images to a job folder and starts `python -m edgecnn.export.qat JOB.json`;
the child rebuilds the same architecture in tf_keras (`edgecnn.models.build(spec, tf_keras)`), copies the
weights, wraps it with `tfmot.quantization.keras.quantize_model`, fine-tunes a few epochs at a lower
learning rate and converts to full-integer int8 TFLite through the same converter settings as PTQ.

Layers tfmot cannot annotate: nested models are refused with a clear error. For layers it has no recipe
for (a BatchNormalization after an activation, as in vgg_cifar; a Lambda; a Rescaling) the child annotates
the supported layers as usual and fake-quantizes only the outputs of the others; if even that fails it
leaves them out. Either way the manifest and a warning name those layers. (Left out entirely, vgg_cifar's
BatchNorms made the int8 model 6 points worse than its fake-quant twin; with output-only fake quantization
the two agree.)

Python::

    from edgecnn.export import ExportConfig, export
    export("runs/d", ExportConfig(quant="qat", qat_epochs=3))

CLI::

    edgecnn export runs/d --quant qat --qat-epochs 3 --qat-lr 1e-4
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgecnn.errors import ExportError

ERROR_EXIT = 3  # the child's exit code for an error it explains in result.json


def _nested_models(model) -> list[str]:
    import keras

    return [layer.name for layer in model.layers if isinstance(layer, keras.Model)]


def run_qat(ctx, out_path: Path) -> dict:
    """Fine-tune `ctx.model` with fake quantization in a child process and write the int8 TFLite to `out_path`.

    Returns:
        Facts for the manifest: epochs, learning rate, accuracy before and after fine-tuning (fake-quant
        model on the test split), skipped layers.
    Raises:
        ExportError: the architecture cannot be quantization-aware trained, or the child failed.
    """
    graph = None
    if ctx.spec.arch == "imported":  # no architecture to rebuild from: rebuilt layer by layer from the model itself
        from edgecnn.export.rebuild import describe

        graph, layer_weights = describe(ctx.model)
    nested = _nested_models(ctx.model) if graph is None else []
    if nested:
        raise ExportError(f"QAT cannot handle nested models (layer(s) {', '.join(nested)}): "
                          f"build the architecture as one flat functional graph, or use --quant ptq")
    cfg = ctx.config
    lr = cfg.qat_lr or float(ctx.spec.resolved()["learning_rate"]) / 10
    job_dir = Path(tempfile.mkdtemp(prefix="qat-", dir=ctx.staging))
    if graph is None:
        np.savez(job_dir / "weights.npz", *ctx.model.get_weights())
    else:
        np.savez(job_dir / "weights.npz", **{f"{i}_{j}": w for i, node in enumerate(graph["nodes"])
                                             for j, w in enumerate(layer_weights[node["name"]])})
    np.save(job_dir / "calib.npy", ctx.calib)  # the child reads the splits itself, streaming when they are large
    train_cfg = ctx.run.config.get("train", {}) or {}
    job = {
        "data": ctx.run.data_config.to_dict(), "stream": train_cfg.get("stream", "auto"), "graph": graph,
        "spec": ctx.spec.to_dict(), "epochs": int(cfg.qat_epochs), "learning_rate": lr,
        "batch_size": int(train_cfg.get("batch_size", 32)), "seed": int(cfg.seed), "io": cfg.io.value,
        "class_weight": train_cfg.get("class_weight", "none"),  # fine-tuned as it was trained
        "tflite_batch": cfg.tflite_batch, "out": str(out_path), "result": str(job_dir / "result.json"),
        "dir": str(job_dir), "progress": bool(cfg.progress),
    }
    (job_dir / "job.json").write_text(json.dumps(job))
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    # a custom --arch module:function must import in the child as it did here
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), *sys.path, env.get("PYTHONPATH", "")] if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    out = subprocess.PIPE
    if cfg.progress:  # the child's epoch lines go straight to our stdout (a redirected one when --quiet)
        try:
            sys.stdout.flush()
            out = sys.stdout.fileno()
        except (AttributeError, OSError, ValueError):
            out = subprocess.PIPE
    proc = subprocess.run([sys.executable, "-m", "edgecnn.export.qat", str(job_dir / "job.json")],
                          env=env, stdout=out, stderr=subprocess.PIPE, text=True)
    result_path = Path(job["result"])
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    if proc.returncode != 0 or "error" in result:
        if "error" in result:
            raise ExportError(f"QAT: {result['error']}")
        tail = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()][-1:] or ["no output"]
        raise ExportError(f"QAT child process failed (exit {proc.returncode}): {tail[0][:300]}")
    if result.get("skipped_layers"):
        ctx.warn(f"QAT: tfmot cannot annotate {', '.join(result['skipped_layers'])}; those layers were "
                 f"fine-tuned in float and quantized by calibration only")
    if result.get("output_only_layers"):
        ctx.warn(f"QAT: tfmot has no recipe for {', '.join(result['output_only_layers'])}; only their outputs "
                 f"were fake-quantized during fine-tuning")
    return {"method": "tfmot quantize_model + fine-tuning (tf_keras, child process)", "qat": result}


# ------------------------------------------------------------------------------------------------
# The child process: everything below runs with tf_keras and tfmot, never in the Keras 3 process.
# ------------------------------------------------------------------------------------------------


class _Weights:
    """Stands in for a source model in `copy_weights`."""

    def __init__(self, arrays):
        self._arrays = arrays

    def get_weights(self):
        return self._arrays


def fold_dense_batchnorm(model, tf_keras) -> tuple:
    """Fold each BatchNormalization that directly follows a linear Dense into that Dense (kernel and bias).

    tfmot has Conv+BN patterns but none for Dense+BN: it fake-quantizes the Dense kernel before BN, and the
    TFLite converter, folding BN into that kernel afterwards, either leaves the layer in float or (with a
    representative dataset) quantizes it wrongly; measured here: 0.99 fake-quant accuracy, 0.63 as int8.
    Folded first, the layer is an ordinary Dense that QAT and the converter both handle. Inference-mode
    outputs are unchanged. Returns (model, ["dense+bn", ...]).
    """
    cfg = model.get_config()
    layers = {layer["name"]: layer for layer in cfg["layers"]}
    users: dict = {}
    for layer in cfg["layers"]:
        for node in layer["inbound_nodes"]:
            for ref in node:
                users.setdefault(ref[0], []).append(layer["name"])
    pairs = []
    for layer in cfg["layers"]:
        u = users.get(layer["name"], [])
        if (layer["class_name"] == "Dense" and layer["config"].get("activation") in (None, "linear")
                and len(u) == 1 and layers[u[0]]["class_name"] == "BatchNormalization"
                and layers[u[0]]["config"].get("axis") in (-1, [-1], 1, [1])):
            pairs.append((layer["name"], u[0]))
    if not pairs:
        return model, []
    weights = {layer.name: layer.get_weights() for layer in model.layers}
    for dense, bn in pairs:
        bcfg = layers[bn]["config"]
        kernel, *bias = weights[dense]
        w = list(weights[bn])
        gamma = w.pop(0) if bcfg.get("scale", True) else np.ones(kernel.shape[-1], np.float32)
        beta = w.pop(0) if bcfg.get("center", True) else np.zeros(kernel.shape[-1], np.float32)
        mean, var = w
        s = gamma / np.sqrt(var + bcfg.get("epsilon", 1e-3))
        weights[dense] = [kernel * s, ((bias[0] if bias else 0.0) - mean) * s + beta]
        layers[dense]["config"]["use_bias"] = True
        cfg["layers"] = [layer for layer in cfg["layers"] if layer["name"] != bn]
        for layer in cfg["layers"]:
            for node in layer["inbound_nodes"]:
                for ref in node:
                    if ref[0] == bn:
                        ref[0] = dense
        for ref in cfg["output_layers"]:
            if ref[0] == bn:
                ref[0] = dense
    folded = tf_keras.Model.from_config(cfg)
    for layer in folded.layers:
        if layer.weights:
            layer.set_weights(weights[layer.name])
    return folded, [f"{d}+{b}" for d, b in pairs]


def _output_quantize_config(qk):
    """A QuantizeConfig that fake-quantizes a layer's output only (tfmot's own is not public API)."""

    class OutputOnlyQuantizeConfig(qk.QuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [qk.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                         narrow_range=False)]

        def get_config(self):
            return {}

    return OutputOnlyQuantizeConfig


def _quantize(model, tf_keras, tfmot) -> tuple:
    """`quantize_model`; when it refuses a layer it has no recipe for (a BatchNormalization after an
    activation, a Lambda, a Rescaling), annotate the layers it supports as usual and the others to have their
    output fake-quantized; failing that, leave the others out. Returns (model, {"output_only": [...],
    "skipped": [...]})."""
    try:
        return tfmot.quantization.keras.quantize_model(model), {"output_only": [], "skipped": []}
    except (RuntimeError, ValueError, TypeError) as e:
        first_error = str(e).splitlines()[0][:200]
    qk = tfmot.quantization.keras
    registry = qk.default_8bit.Default8BitQuantizeRegistry()
    output_config = _output_quantize_config(qk)
    errors = []
    for mode in ("output_only", "skipped"):
        others = []

        def annotate(layer):
            clone = layer.__class__.from_config(layer.get_config())
            if registry.supports(layer):
                return qk.quantize_annotate_layer(clone)
            if isinstance(layer, tf_keras.layers.InputLayer):
                return clone
            others.append(layer.name)
            return qk.quantize_annotate_layer(clone, output_config()) if mode == "output_only" else clone

        try:
            annotated = tf_keras.models.clone_model(model, clone_function=annotate)
            annotated.set_weights(model.get_weights())
            with qk.quantize_scope({output_config.__name__: output_config}):
                q = qk.quantize_apply(annotated)
            return q, {"output_only": others if mode == "output_only" else [],
                       "skipped": others if mode == "skipped" else []}
        except Exception as e:  # tfmot raises many types for layers it cannot wrap
            errors.append(str(e).splitlines()[0][:200])
    raise ExportError(f"tfmot cannot quantize this architecture ({first_error}); annotating the layers it supports "
                      f"failed too ({errors[-1]}); use --quant ptq")


def _init_ranges(q, calib: np.ndarray, batch: int = 64) -> None:
    """Set the fake-quant ranges from calibration images (one forward pass in training mode) without moving
    BatchNorm statistics, so 'accuracy before fine-tuning' measures the quantized model, not zero ranges."""
    stats = [v for v in q.variables if "moving_mean" in v.name or "moving_variance" in v.name]
    saved = [v.numpy() for v in stats]
    for i in range(0, len(calib), batch):
        q(calib[i:i + batch], training=True)
    for v, s in zip(stats, saved):
        v.assign(s)


def _widen_ranges(q, model, calib: np.ndarray, tf_keras, batch: int = 64) -> list:
    """Widen each activation and output range of `q` to what the float `model`'s layer of the same name spans on
    the calibration images, and the input range to the images'.

    tfmot's moving-average quantizers start at [-6, 6] and move with a 0.999 decay: a layer whose outputs span
    0..255 (a Rescaling in front of an imported model) stays clipped for thousands of steps; measured on such a
    model, fake-quant accuracy before fine-tuning was 0.68 (float 0.94). Returns the names of the ranges widened.
    """
    layers = [layer for layer in model.layers if not isinstance(layer, tf_keras.layers.InputLayer)]
    probe = tf_keras.Model(model.inputs, [layer.output for layer in layers])
    lo = {layer.name: 0.0 for layer in layers}
    hi = dict(lo)
    for i in range(0, len(calib), batch):
        outs = probe(calib[i:i + batch], training=False)
        for layer, out in zip(layers, outs if isinstance(outs, (list, tuple)) else [outs]):
            a = np.asarray(out)
            lo[layer.name], hi[layer.name] = min(lo[layer.name], float(a.min())), max(hi[layer.name], float(a.max()))
    ranges = {"input": (min(0.0, float(calib.min())), max(0.0, float(calib.max())))}
    done = []
    for v in q.variables:
        owner, _, var = v.name.partition("/")
        var = var.split(":")[0]
        if owner.startswith("quantize_layer") and var.endswith(("_min", "_max")):
            value = ranges["input"]
        elif owner.startswith("quant_") and var.endswith(("output_min", "output_max", "post_activation_min",
                                                           "post_activation_max")) and owner[6:] in lo:
            value = (lo[owner[6:]], hi[owner[6:]])
        else:
            continue
        current = float(v.numpy())
        # widen only: a range the calibration images already exceed is clipping from the start; one that
        # covers them is left as tfmot set it (measured: narrowing them too cost simple_cnn one test image)
        if var.endswith("_min") and value[0] < current:
            v.assign(value[0])
            done.append(f"{owner}/{var}")
        elif var.endswith("_max") and value[1] > current:
            v.assign(value[1])
            done.append(f"{owner}/{var}")
    return done


def _accuracy(model, split) -> float:
    return float(np.mean(split.predict_with(model).argmax(1) == split.labels))


def _child(job: dict) -> dict:
    import tensorflow as tf
    import tf_keras
    import tensorflow_model_optimization as tfmot

    from edgecnn.export.converter import SIGNATURE, convert_saved_model
    from edgecnn.io import write_bytes
    from edgecnn.models import ModelSpec, build, compile_model, copy_weights

    tf_keras.utils.set_random_seed(job["seed"])
    spec = ModelSpec.from_dict(job["spec"])
    if spec.params.get("weights"):  # the weights come from the trained model below, never from a cache file
        spec = ModelSpec.from_dict(dict(job["spec"], params=dict(spec.params, weights=None)))
    from edgecnn.data import DataConfig, load_dataset
    from edgecnn.train_inputs import fit_inputs

    ds = load_dataset(DataConfig.from_dict(job["data"]))
    calib = np.load(Path(job["dir"]) / "calib.npy")
    w = np.load(Path(job["dir"]) / "weights.npz")
    if job.get("graph"):
        from edgecnn.export.rebuild import rebuild

        graph = job["graph"]
        per_layer = {node["name"]: [w[f"{i}_{j}"] for j in range(sum(k.startswith(f"{i}_") for k in w.files))]
                     for i, node in enumerate(graph["nodes"])}
        model = rebuild(graph, per_layer, tf_keras)
    else:
        model = build(spec, tf_keras)
        copy_weights(_Weights([w[f"arr_{i}"] for i in range(len(w.files))]), model)
    reference = _accuracy(model, ds.test)
    model, folded = fold_dense_batchnorm(model, tf_keras)
    q, annotation = _quantize(model, tf_keras, tfmot)
    compile_model(q, spec, tf_keras, learning_rate=job["learning_rate"])
    _init_ranges(q, calib)
    widened = _widen_ranges(q, model, calib, tf_keras)
    before = _accuracy(q, ds.test)

    class KeepBest(tf_keras.callbacks.Callback):  # the epoch with the best val_loss, not the last
        best, weights = np.inf, None

        def on_epoch_end(self, epoch, logs=None):
            if logs and logs.get("val_loss", np.inf) < self.best:
                self.best, self.weights = logs["val_loss"], self.model.get_weights()

    keep = KeepBest()
    callbacks = [keep]
    if job.get("progress"):
        from edgecnn.checkpoint import epoch_lines

        callbacks.append(epoch_lines(job["epochs"], keras_module=tf_keras, prefix="QAT epoch"))
    hist = q.fit(**fit_inputs(ds, job["batch_size"], job["seed"], job.get("stream", "auto"),
                              class_weight=job.get("class_weight", "none")), epochs=job["epochs"],
                 callbacks=callbacks, verbose=0)
    if keep.weights is not None:
        q.set_weights(keep.weights)
    after = _accuracy(q, ds.test)

    @tf.function(input_signature=[tf.TensorSpec([job["tflite_batch"], *spec.input_shape], tf.float32, name="image")])
    def serve(image):
        return {"probs": q(image, training=False)}

    sm = Path(job["dir"]) / "savedmodel"
    tf.saved_model.save(q, str(sm), signatures={SIGNATURE: serve.get_concrete_function()})
    write_bytes(job["out"], convert_saved_model(sm, int8=True, calib=calib, io=job["io"]))
    return {
        "epochs": job["epochs"], "learning_rate": job["learning_rate"], "batch_size": job["batch_size"],
        "float_accuracy": reference, "accuracy_before": before, "accuracy_after": after,
        "best_val_loss": float(keep.best), "history": {k: [float(v) for v in vs] for k, vs in hist.history.items()},
        "output_only_layers": annotation["output_only"], "skipped_layers": annotation["skipped"],
        "folded_batchnorm": folded, "ranges_widened_from_calibration": len(widened),
    }


def main(argv=None) -> int:
    """Child entry point: `python -m edgecnn.export.qat JOB.json`; writes the job's result.json."""
    from edgecnn.errors import EdgecnnError
    from edgecnn.io import write_json

    job = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    try:
        result = _child(job)
    except EdgecnnError as e:
        write_json(job["result"], {"error": str(e)})
        return ERROR_EXIT
    write_json(job["result"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
