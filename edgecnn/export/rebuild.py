"""Rebuild a Keras 3 model in tf_keras, layer by layer, for quantization-aware training of a model edgecnn has
no architecture for (an imported one).

tfmot takes only tf_keras models, and a Keras 3 config does not load in tf_keras (different serialization).
`describe` (Keras 3 side) flattens the model, nested models included, into a list of layers with their
configs, inputs and weights; `rebuild` (the tf_keras child) makes each layer from its tf_keras twin and wires
them the same way. Augmentation layers (RandomFlip, RandomRotation, ..., as the Keras tutorials put in the model)
return their input at inference and are left out: the rebuilt model is the one that is exported. A layer with no
twin (a custom or Keras-3-only class), a shared layer, or a setting tf_keras does not have is a one-line error
naming the layer.
"""
from __future__ import annotations

import re

import numpy as np

from edgecnn.errors import ExportError

SUGGEST = "export it with --quant ptq"
_MODELS = ("Functional", "Sequential", "Model")
# Keras 3's image augmentation layers: each returns its input unchanged at inference (checked for every one in
# Keras 3.15 with training=False). RandomCrop is kept out: Keras documents it as resizing and cropping at inference
# too (one check here saw it return a 32x32 input unchanged, so neither claim is relied on).
AUGMENTATION = frozenset({
    "AugMix", "CutMix", "MixUp", "RandAugment", "RandomBrightness", "RandomColorDegeneration", "RandomColorJitter",
    "RandomContrast", "RandomElasticTransform", "RandomErasing", "RandomFlip", "RandomGaussianBlur",
    "RandomGrayscale", "RandomHue", "RandomInvert", "RandomPerspective", "RandomPosterization", "RandomRotation",
    "RandomSaturation", "RandomSharpness", "RandomShear", "RandomTranslation", "RandomZoom"})


def _history(args) -> list:
    """Layer names of the Keras tensors in a node's call arguments, in order."""
    if isinstance(args, dict):
        if args.get("class_name") == "__keras_tensor__":
            return [args["config"]["keras_history"][0]]
        return [n for v in args.values() for n in _history(v)]
    if isinstance(args, (list, tuple)):
        return [n for v in args for n in _history(v)]
    return []


def _entries(refs: list) -> list:
    """A functional config's input_layers/output_layers: one [name, node, tensor] is not wrapped in a list."""
    return [refs] if refs and isinstance(refs[0], str) else refs


def _clean(config: dict) -> dict:
    """Keras 3 layer config -> what a tf_keras constructor takes: the dtype policy as its name, initializers as
    "zeros" (the weights are copied over them), regularizers and constraints in the older serialization."""
    c = dict(config)
    for key, value in config.items():
        if key == "dtype" and isinstance(value, dict):
            c[key] = (value.get("config") or {}).get("name", "float32")
        elif key.endswith("_initializer") and value is not None:
            c[key] = "zeros"
        elif isinstance(value, dict) and "class_name" in value:
            c[key] = {"class_name": value["class_name"],
                      "config": {k: v for k, v in (value.get("config") or {}).items() if v is not None}}
    return c


def describe(model) -> tuple[dict, dict]:
    """(graph, weights) of a Keras 3 model: graph = {"input": name, "input_shape": [...], "output": name,
    "nodes": [{"name", "class_name", "module", "config", "inputs"}]}; weights = {node name: [arrays]}.

    Raises:
        ExportError: a shared layer, or a model with more than one input or output.
    """
    nodes, weights, taken, seen = [], {}, set(), set()

    def unique(name: str, scope: str) -> str:
        out = name if name not in taken else f"{scope}_{name}"
        taken.add(out)
        return out

    def add(layer, inputs: list, scope: str) -> str:
        if type(layer).__name__ in AUGMENTATION and type(layer).__module__.split(".")[0] == "keras":
            return inputs[0]  # the identity at inference
        if id(layer) in seen:
            raise ExportError(f"QAT cannot rebuild layer '{layer.name}' ({type(layer).__name__}): it is shared "
                              f"(called more than once); {SUGGEST}")
        seen.add(id(layer))
        cfg = layer.get_config()
        name = unique(layer.name, scope)
        nodes.append({"name": name, "class_name": type(layer).__name__, "module": type(layer).__module__,
                      "config": dict(_clean(cfg), name=name), "inputs": inputs})
        weights[name] = [np.asarray(w) for w in layer.get_weights()]
        return name

    def walk(m, inputs: list) -> list:
        if type(m).__name__ == "Sequential":
            prev = inputs[0]
            for layer in m.layers:
                prev = walk(layer, [prev])[0] if type(layer).__name__ in _MODELS else add(layer, [prev], m.name)
            return [prev]
        cfg = m.get_config()
        names = {entry[0]: inputs[i] for i, entry in enumerate(_entries(cfg["input_layers"]))}
        for entry in cfg["layers"]:
            if entry["class_name"] == "InputLayer":
                continue
            layer = m.get_layer(entry["name"])
            node_inputs = [names[n] for node in entry["inbound_nodes"][:1] for n in _history(node.get("args", []))]
            if type(layer).__name__ in _MODELS:
                names[entry["name"]] = walk(layer, node_inputs)[0]
            else:
                names[entry["name"]] = add(layer, node_inputs, m.name)
        return [names[entry[0]] for entry in _entries(cfg["output_layers"])]

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"QAT rebuilds single-input, single-output models only; {SUGGEST}")
    root = "image"
    taken.add(root)
    out = walk(model, [root])[0]
    graph = {"input": root, "input_shape": [int(d) for d in model.inputs[0].shape[1:]], "output": out,
             "nodes": nodes}
    return graph, weights


def _make(layer_cls, node: dict):
    """The tf_keras layer for a node; settings tf_keras lacks are dropped when they hold their off value."""
    cfg = dict(node["config"])
    while True:
        try:
            return layer_cls.from_config(cfg)
        except TypeError as e:
            found = re.search(r"(?:unexpected keyword argument|Keyword argument not understood:',) '([^']+)'", str(e))
            key = found.group(1) if found else None
            if key is None or key not in cfg:
                raise ExportError(f"QAT cannot rebuild layer '{node['name']}' ({node['class_name']}) in tf_keras "
                                  f"({str(e).splitlines()[0][:160]}); {SUGGEST}") from None
            if cfg[key] not in (None, False, 0, {}, [], "", 1.0):
                raise ExportError(f"QAT cannot rebuild layer '{node['name']}' ({node['class_name']}): tf_keras "
                                  f"has no setting '{key}' (it is {cfg[key]!r} here); {SUGGEST}") from None
            cfg.pop(key)


def rebuild(graph: dict, weights: dict, tf_keras):
    """The tf_keras model of `describe`'s graph, with its weights.

    Raises:
        ExportError: a layer with no tf_keras twin, a setting tf_keras lacks, weights that do not fit.
    """
    tensors = {graph["input"]: tf_keras.Input(shape=tuple(graph["input_shape"]), name=graph["input"])}
    for node in graph["nodes"]:
        builtin = node["module"].split(".")[0] == "keras"  # a class of the user's own is not a Keras layer
        layer_cls = getattr(tf_keras.layers, node["class_name"], None) if builtin else None
        if layer_cls is None:
            raise ExportError(f"QAT cannot rebuild layer '{node['name']}' ({node['class_name']}): tf_keras has no "
                              f"twin of it; {SUGGEST}")
        layer = _make(layer_cls, node)
        args = [tensors[n] for n in node["inputs"]]
        tensors[node["name"]] = layer(args if len(args) > 1 else args[0])
        try:
            layer.set_weights(weights[node["name"]])
        except ValueError as e:
            raise ExportError(f"QAT cannot rebuild layer '{node['name']}' ({node['class_name']}): its weights do "
                              f"not fit the tf_keras layer ({str(e).splitlines()[0][:160]}); {SUGGEST}") from None
    return tf_keras.Model(tensors[graph["input"]], tensors[graph["output"]], name="imported")
