"""Ground floor: graph analysis of TFLite and ONNX models, on what a runtime or the onnx package reports.

Pure functions over op and tensor details (TFLite: the interpreter's `_get_ops_details()` and
`get_tensor_details()`, which `edgecnn.runtimes.tflite.TfliteSession.graph()` returns; ONNX: an `onnx`
GraphProto), so export, inspect and the runtimes share one implementation and none of them imports another.

Python::

    from edgecnn.graph import float_ops, constants
    ops, delegates, tensors = session.graph()
    float_ops(ops, tensors, constants(ops, [session.inputs[0]["index"]]))
"""
from __future__ import annotations

import re

import numpy as np

FLOAT_DTYPES = {"float32", "float16", "float64", "bfloat16"}
# ops whose constant inputs beyond the first are weights and biases (int32 biases count as parameters)
TFLITE_WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"}


def constants(ops, graph_inputs) -> set:
    produced = {int(t) for o in ops for t in o["outputs"]}
    used = {int(t) for o in ops for t in o["inputs"] if t >= 0}
    return used - produced - set(graph_inputs)


def float_ops(ops, tensors, constants, known=None) -> list[dict]:
    """TFLite ops that read or write a float tensor other than a constant: [{"index", "op", "dtypes", "layer"}]
    (layer: the Keras layer its first output's name comes from, `layer_name` with `known`)."""
    bad = []
    for o in ops:
        live = [int(t) for t in list(o["inputs"]) + list(o["outputs"]) if t >= 0 and int(t) not in constants]
        dtypes = sorted({np.dtype(tensors[t]["dtype"]).name for t in live})
        if FLOAT_DTYPES & set(dtypes):
            out = [int(t) for t in o["outputs"] if t >= 0]
            bad.append({"index": int(o["index"]), "op": o["op_name"], "dtypes": dtypes,
                        "layer": layer_name(tensors[out[0]]["name"], known) if out else ""})
    return bad


def not_delegated(ops, delegates) -> list[dict]:
    """Ops the interpreter's default delegate (XNNPACK) left to the builtin kernels.

    The interpreter replaces each delegated partition with one DELEGATE node whose inputs and outputs are
    the partition's boundary tensors; walking back from its outputs through tensors that are not its inputs
    finds the ops inside it. Whatever no partition holds runs outside XNNPACK.
    """
    producer = {int(t): o["index"] for o in ops for t in o["outputs"]}
    by_index = {o["index"]: o for o in ops}
    inside = set()
    for d in delegates:
        boundary_in = {int(t) for t in d["inputs"]}
        stack = [producer[int(t)] for t in d["outputs"] if int(t) in producer]
        while stack:
            i = stack.pop()
            if i in inside:
                continue
            inside.add(i)
            stack += [producer[int(t)] for t in by_index[i]["inputs"]
                      if t >= 0 and int(t) not in boundary_in and int(t) in producer]
    return [{"index": int(o["index"]), "op": o["op_name"]} for o in ops if o["index"] not in inside]


# TFLite's int8 Softmax, on the reference kernels (and so TFLite Micro's), requires beta * input_scale * 2^26 > 1
# (PreprocessSoftmaxScaling) and aborts the process otherwise; XNNPACK and the builtin optimized kernels run it.
# An input scale that small means logits within ~4e-6 of zero on every calibration image: an untrained network.
SOFTMAX_MIN_INPUT_SCALE = 2.0 ** -26


def tiny_softmax_inputs(ops, tensors) -> list[dict]:
    """Integer SOFTMAX ops whose input scale is below SOFTMAX_MIN_INPUT_SCALE: [{"index", "scale"}]."""
    out = []
    for o in ops:
        if o["op_name"] != "SOFTMAX" or not len(o["inputs"]):
            continue
        t = tensors[int(o["inputs"][0])]
        scale = float((t.get("quantization") or (0.0, 0))[0])
        if np.dtype(t["dtype"]).kind in "iu" and 0 < scale < SOFTMAX_MIN_INPUT_SCALE:
            out.append({"index": int(o["index"]), "scale": scale})
    return out


def tiny_softmax_reason(found: list[dict]) -> str:
    """Why a model with `tiny_softmax_inputs` cannot run on the reference kernels, in one line."""
    return (f"its int8 Softmax input scale is {found[0]['scale']:.2g} (op #{found[0]['index']}), below "
            f"{SOFTMAX_MIN_INPUT_SCALE:.2g}, the least TFLite's reference kernels and TFLite Micro take (they abort "
            f"the process below it): the logits were within {found[0]['scale'] * 128:.1g} of zero on every "
            f"calibration image, as an untrained network's are")


_OP_LINE = re.compile(r"^\s*Op#(\d+)\s+([A-Z0-9_]+)\(")
_GPU_WARN = "GPU COMPATIBILITY WARNING:"


def parse_gpu_compatibility(text: str) -> dict:
    """The TFLite model analyzer's GPU verdict: {"compatible": bool, "incompatible": [{"index","op","reason"}]}.
    Each per-op warning follows the op's own line; a summary warning names the subgraph."""
    last_op, bad = None, []
    for line in text.splitlines():
        m = _OP_LINE.match(line)
        if m:
            last_op = (int(m.group(1)), m.group(2))
        elif line.strip().startswith(_GPU_WARN) and "has GPU delegate compatibility issues" not in line:
            reason = line.strip()[len(_GPU_WARN):].strip()
            bad.append({"index": last_op[0] if last_op else None, "op": last_op[1] if last_op else None,
                        "reason": reason})
    compatible = not bad and _GPU_WARN not in text and "compatib" in text
    return {"compatible": compatible, "incompatible": bad}


def tflite_params(ops, tensors, constants) -> int:
    total = 0
    for c in constants:
        dt = np.dtype(tensors[c]["dtype"]).name
        is_bias = any(o["op_name"] in TFLITE_WEIGHTED_OPS and c in [int(t) for t in o["inputs"][1:]] for o in ops)
        if dt in FLOAT_DTYPES | {"int8", "uint8", "int16", "int4"} or (dt == "int32" and is_bias):
            total += int(np.prod(tensors[c]["shape"])) if len(tensors[c]["shape"]) else 1
    return total


ONNX_SHAPE_OPS = {"Shape", "Gather", "Concat", "Cast", "Slice", "Constant", "Range", "ConstantOfShape"}
ONNX_LAYOUT_OPS = {"Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten"}
ONNX_QDQ = {"QuantizeLinear", "DequantizeLinear"}


def onnx_float_ops(g, onnx) -> tuple[list, bool]:
    """(ops computing in float, whether float data touches the graph's inputs/outputs through layout ops).

    In a QDQ model an op runs in int8 when every float input comes from a DequantizeLinear and every output
    goes to a QuantizeLinear; layout ops that only move the float graph input or output are I/O edges.
    """
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    elem = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input) + list(g.output)}
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    graph_io = {vi.name for vi in list(g.input) + list(g.output)}

    def is_float(name):
        return (inits[name].data_type if name in inits else elem.get(name)) in float_types

    def const(name):
        return onnx.numpy_helper.to_array(inits[name]) if name in inits else None

    def clamps(q, lo, hi) -> bool:  # the QuantizeLinear's range lies within [lo, hi]: an activation before it is moot
        # (Q(clip(x)) == Q(x) for every x)
        scale, zp = const(q.input[1]), const(q.input[2]) if len(q.input) > 2 and q.input[2] else np.uint8(0)
        if scale is None or zp is None or np.size(scale) != 1:
            return False
        info = np.iinfo(zp.dtype)
        low, high = (float(info.min) - float(zp)) * float(scale), (float(info.max) - float(zp)) * float(scale)
        half = 0.5 * abs(float(scale))  # within half a step of the end, the clamp and the rounding agree
        return lo <= low + half and hi >= high - half

    def folded(n) -> bool:
        """A Relu or Clip whose QuantizeLinear consumers clamp to its range anyway: onnxruntime drops it (its
        ReluQuantFusion / ClipQuantFusion) and the op before it runs in int8 (tf2onnx's from_tflite graphs)."""
        qs = consumers.get(n.output[0]) or []
        if n.op_type not in ("Relu", "Clip") or not qs or any(q.op_type != "QuantizeLinear" for q in qs):
            return False
        if n.op_type == "Relu":
            lo, hi = 0.0, np.inf
        else:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            bounds = [const(i) if i else None for i in list(n.input[1:3]) + [""] * (3 - len(n.input))][:2]
            lo = float(bounds[0]) if bounds[0] is not None else float(attrs.get("min", -np.inf))
            hi = float(bounds[1]) if bounds[1] is not None else float(attrs.get("max", np.inf))
        return all(clamps(q, lo, hi) for q in qs)

    def drained(o) -> bool:
        cs = consumers.get(o)
        return bool(cs) and all(c.op_type == "QuantizeLinear" or (folded(c) and drained(c.output[0])) for c in cs)

    bad, io_edge = [], False
    for idx, n in enumerate(g.node):
        if n.op_type in ONNX_QDQ or n.op_type in ONNX_SHAPE_OPS or folded(n):
            continue
        data_in = [i for i in n.input if i and i not in inits and is_float(i)]
        float_consts = [i for i in n.input if i in inits and is_float(i)]
        float_out = [o for o in n.output if is_float(o)]
        if not (data_in or float_consts or float_out):
            continue  # integer-only op
        if n.op_type in ONNX_LAYOUT_OPS and graph_io & (set(n.input) | set(n.output)):
            io_edge = True
            continue
        fed = all(i in producer and producer[i].op_type == "DequantizeLinear" for i in data_in)
        if not (fed and all(drained(o) for o in float_out)) or float_consts:
            bad.append({"index": idx, "op": n.op_type, "name": n.name, "dtypes": ["float32"]})
    return bad, io_edge


def onnx_io_quantization(path) -> dict:
    """Scale and zero point of integer graph inputs (read by a DequantizeLinear) and outputs (written by a
    QuantizeLinear), as {name: {"scale", "zero_point"}}: ONNX tensors do not carry them themselves."""
    import onnx
    from onnx import numpy_helper

    try:
        g = onnx.load(str(path), load_external_data=False).graph
    except Exception:
        return {}
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR}
    inits.update(consts)
    found = {}

    def params(node):
        if len(node.input) < 2 or node.input[1] not in inits:
            return None
        scale = inits[node.input[1]]
        zp = inits.get(node.input[2]) if len(node.input) > 2 else np.zeros(1, np.int8)
        if scale.size != 1 or zp is None:
            return None
        return {"scale": float(scale.reshape(-1)[0]), "zero_point": int(zp.reshape(-1)[0])}

    layout = {"Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten"}  # integer-preserving
    consumers, producer = {}, {}
    for node in g.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
        for t in node.output:
            producer[t] = node

    def forward(name):  # input -> its DequantizeLinear, through layout ops (tf2onnx adds NHWC->NCHW ones)
        for _ in range(8):
            users = consumers.get(name, [])
            if len(users) != 1:
                return None
            if users[0].op_type == "DequantizeLinear":
                return users[0]
            if users[0].op_type not in layout:
                return None
            name = users[0].output[0]
        return None

    def backward(name):  # output <- its QuantizeLinear, through layout ops
        for _ in range(8):
            node = producer.get(name)
            if node is None or node.op_type == "QuantizeLinear":
                return node
            if node.op_type not in layout:
                return None
            name = node.input[0]
        return None

    int_types = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    for vi in g.input:
        if vi.type.tensor_type.elem_type in int_types and (n := forward(vi.name)) is not None and (p := params(n)):
            found[vi.name] = p
    for vi in g.output:
        if vi.type.tensor_type.elem_type in int_types and (n := backward(vi.name)) is not None and (p := params(n)):
            found[vi.name] = p
    return found


MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def tflite_macs(ops, tensors) -> dict:
    """Multiply-accumulates of a .tflite graph's conv and dense ops, and the share whose activations are 8-bit.

    Returns:
        {"total": MACs, "int8": MACs on int8/uint8 activations, "share": int8/total (None without such ops),
         "float_layers": [output tensor names of the conv/dense ops that do not compute on 8-bit activations]}
    """
    import numpy as np

    total = integer = 0
    float_layers = []
    for op in ops:
        if op["op_name"] not in MAC_OPS:
            continue
        out = tensors[op["outputs"][0]]
        act = tensors[op["inputs"][2 if op["op_name"] == "TRANSPOSE_CONV" else 0]]
        w = list(tensors[op["inputs"][1 if op["op_name"] == "TRANSPOSE_CONV" else 1]]["shape"])
        n_out = int(np.prod(out["shape"]))
        if op["op_name"] == "CONV_2D":
            macs = n_out * int(np.prod(w[1:]))
        elif op["op_name"] == "DEPTHWISE_CONV_2D":
            macs = n_out * int(w[1] * w[2])
        elif op["op_name"] == "TRANSPOSE_CONV":
            macs = int(np.prod(act["shape"])) * int(w[0] * w[1] * w[2])
        else:
            macs = n_out * int(w[-1])
        total += macs
        if np.dtype(act["dtype"]) in (np.dtype(np.int8), np.dtype(np.uint8)):  # int16 activations are not int8
            integer += macs
        else:
            float_layers.append(out["name"])
    return {"total": total, "int8": integer, "share": integer / total if total else None,
            "float_layers": float_layers}


def layer_name(tensor: str, known=None) -> str:
    """The Keras layer behind a TFLite tensor name: "model_1/block_13_project_BN_1/batchnorm/add_1;..." ->
    "block_13_project_BN" (TF fuses ops into one name joined by ';' and suffixes traced layers with _1).
    `known`: the model's layer names (nested models' own names left out), for a layer inside a nested model
    ("functional_5/functional_4_1/layer_normalization_1/Neg" -> "layer_normalization")."""
    parts = tensor.split(";")[0].split("/")
    for part in reversed(parts[:-1] if known else []):
        for name in (part[:-2], part) if part.endswith("_1") else (part,):
            if name in known:
                return name
    name = parts[1] if len(parts) > 2 else parts[0]
    return name[:-2] if name.endswith("_1") else name
