"""LUT op configurations: what one executed int8 op is, as the latency LUT keys it.

A configuration is the op type, every input's shape / dtype / constness / per-channel quantization,
the outputs, and the op's builtin options as the converter writes them (schema defaults plus the
fields set). ``tfmobile.bench.graph`` reads configurations out of a converted .tflite,
``Int8Graph`` writes them for a spec that was never converted, ``tfmobile.bench.synth`` builds a
one-op model from one; all three meet here, so a key derived from a spec equals the key read from
its .tflite (tests/test_netadapt_resource.py). Pure Python over the TFLite schema: no TensorFlow.
"""
import json

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from tfmobile.errors import UserError

# op -> builtin options table (ops absent here are written without options, as the converter does)
OPTIONS_TABLES = {
    "CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions", "ADD": "AddOptions", "MUL": "MulOptions",
    "MEAN": "ReducerOptions", "SOFTMAX": "SoftmaxOptions", "CONCATENATION": "ConcatenationOptions",
    "MAX_POOL_2D": "Pool2DOptions", "AVERAGE_POOL_2D": "Pool2DOptions", "STRIDED_SLICE": "StridedSliceOptions",
}
_ENUMS = {"padding": schema.Padding, "fusedActivationFunction": schema.ActivationFunctionType}
_PADDING = {v: k for k, v in vars(schema.Padding).items() if not k.startswith("_")}
_ACT = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}


def tensor(shape, dtype="int8", const=False, per_channel=False):
    """One tensor entry of a configuration (the fields ``bench.graph.layers`` reads)."""
    return {"const": bool(const), "dtype": dtype, "per_channel": bool(per_channel), "shape": [int(s) for s in shape]}


def options_object(op, fields):
    """The schema's builtin-options object of ``op`` with ``fields`` set (None: the op has none)."""
    name = OPTIONS_TABLES.get(op)
    if name is None:
        if fields:
            raise UserError(f"op {op} takes no builtin options, got {', '.join(sorted(fields))}")
        return None
    obj = getattr(schema, name + "T")()
    for k, v in fields.items():
        if k not in vars(obj):
            raise UserError(f"{name} has no field {k!r}")
        if k in _ENUMS and isinstance(v, str):
            v = getattr(_ENUMS[k], v)
        setattr(obj, k, v)
    return obj


def options_dict(opts):
    """A builtin-options object as the LUT key writes it (enums by name, arrays as lists)."""
    if opts is None:
        return {}
    out = {}
    for k, v in sorted(vars(opts).items()):
        if isinstance(v, np.ndarray):
            v = v.tolist()
        if k == "padding":
            v = _PADDING.get(v, v)
        elif k == "fusedActivationFunction":
            v = _ACT.get(v, v)
        elif isinstance(v, (bytes, bytearray)):
            continue
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def options(op, **fields):
    """The options dict of ``op`` as the converter writes it: schema defaults plus ``fields``
    (enums by name: padding="SAME", fusedActivationFunction="RELU6")."""
    obj = options_object(op, fields)
    return options_dict(obj) if obj is not None else {}


def config(op, inputs, outputs, opts):
    """A LUT configuration: op type, input tensors (None for an absent optional input), outputs, options."""
    return {"op": op, "inputs": inputs, "outputs": outputs, "options": opts}


def config_key(config):
    """Canonical string of a layer config (the LUT key without the device part)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def config_macs(config):
    """Multiply-accumulates of one op from its LUT configuration (conv, depthwise, fully connected; else 0)."""
    return op_macs(config["op"], config["inputs"], config["outputs"])


def op_macs(name, ins, outs):
    """MACs of op ``name`` from its input / output tensor entries."""
    try:
        if name == "CONV_2D":
            o, kh, kw, ci = ins[1]["shape"]
            return int(np.prod(outs[0]["shape"][:3])) * o * kh * kw * ci
        if name == "DEPTHWISE_CONV_2D":
            _, kh, kw, c = ins[1]["shape"]
            return int(np.prod(outs[0]["shape"][:3])) * c * kh * kw
        if name == "FULLY_CONNECTED":
            o, ci = ins[1]["shape"]
            return int(np.prod(outs[0]["shape"][:-1])) * o * ci
    except (TypeError, ValueError, IndexError):
        pass
    return 0
