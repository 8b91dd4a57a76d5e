"""LUT op configurations written from scratch, and one-op int8 models synthesized from them.

``graph.layers`` reads an op's configuration (the LUT key) out of a converted model. NetAdapt needs
the same keys for architectures that were never converted, and needs to time a configuration the LUT
lacks without converting a whole model. This module writes configurations with the converter's
conventions (``tensor``, ``options``, ``config``) and builds a standalone int8 .tflite holding just
that op (``one_op_model``): random int8 weights, per-channel weight scales, int32 biases with scale
input*weight (the kernels require it), one scale for every int8 activation (ops such as
CONCATENATION and RESHAPE want equal input/output scales) and the fixed 1/256 output scale of
SOFTMAX / LOGISTIC. ``graph.layers(one_op_model(cfg))[0]["config"] == cfg`` (tested), so an entry
measured from a synthesized model is stored under exactly the key a converted model would have.
"""
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from tfmobile.analysis.op_config import (OPTIONS_TABLES, config, options,  # noqa: F401  (re-exported)
                                         options_object, tensor)
from tfmobile.errors import UserError

_DTYPES = {"int8": (schema.TensorType.INT8, np.int8), "int32": (schema.TensorType.INT32, np.int32)}
ACTIVATION_SCALE = 0.05
WEIGHT_SCALE = 0.01
# A standalone int8 RELU's time depends on its input zero point: the kernel branches per element on the
# sign of (value - zero point), so random inputs around zero point 0 mispredict every other branch
# (0.204 ms for 16x16x120, vs 0.104 ms with the converter's quantization; ShuffleNet V1's three RELUs
# measured in context: 0.228 ms of 0.615). The converter gives a rectifier's output zero point -128 and
# its input (a concatenation of rectified and BN'd maps) -109 / -123 / -126 in ShuffleNet V1 at 128 px.
RECTIFIERS = ("RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1")
RECTIFIER_INPUT_ZERO_POINT = -120


def _quant(scales, zero_points, dim=0):
    q = schema.QuantizationParametersT()
    q.scale = np.asarray(scales, np.float32)
    q.zeroPoint = np.asarray(zero_points, np.int64)
    q.quantizedDimension = dim
    return q


def _const_values(op, position, info, cfg):
    """Values of a constant int32 operand the configuration does not record (shapes, axes, perms)."""
    out_shape = cfg["outputs"][0]["shape"]
    if op == "RESHAPE" and position == 1:
        return out_shape
    if op == "MEAN" and position == 1:
        return [1, 2]
    if op == "TRANSPOSE" and position == 1:
        in_shape = cfg["inputs"][0]["shape"]
        perm = list(range(len(in_shape)))   # ShuffleNet's shuffle swaps the two last axes
        perm[-2:] = perm[-1], perm[-2]
        if [in_shape[p] for p in perm] != out_shape:
            raise UserError(f"cannot infer the permutation of TRANSPOSE {in_shape} -> {out_shape}")
        return perm
    raise UserError(f"a one-op {op} model needs the value of its constant input {position} ({info['shape']})")


def one_op_model(cfg, const_values=None, seed=0):
    """int8 .tflite bytes holding one op with configuration ``cfg``.

    const_values: {input position: list of ints} for constant int32 operands whose values the
    configuration does not hold (STRIDED_SLICE begin/end/strides); shapes, axes and ShuffleNet's
    transpose permutation are inferred.
    """
    rng = np.random.default_rng(seed)
    op = cfg["op"]
    code = getattr(schema.BuiltinOperator, op, None)
    if code is None:
        raise UserError(f"unknown TFLite builtin op {op!r}")
    model = schema.ModelT()
    model.version = 3
    model.description = "tfmobile synthesized one-op model"
    model.buffers = [schema.BufferT()]
    opcode = schema.OperatorCodeT()
    opcode.builtinCode = code
    opcode.deprecatedBuiltinCode = min(code, 127)
    opcode.version = 1
    model.operatorCodes = [opcode]
    sg = schema.SubGraphT()
    sg.name = "main"
    sg.tensors = []
    weight_scales = None

    def add(info, name, scale=ACTIVATION_SCALE, zero_point=0, position=None):
        nonlocal weight_scales
        t = schema.TensorT()
        t.shape = list(info["shape"])
        t.type, np_type = _DTYPES[info["dtype"]]
        t.name = name.encode()
        t.buffer = 0
        if info["dtype"] == "int8":
            if info["per_channel"]:
                dim = 3 if op == "DEPTHWISE_CONV_2D" else 0
                weight_scales = np.full(info["shape"][dim], WEIGHT_SCALE, np.float32)
                t.quantization = _quant(weight_scales, np.zeros(len(weight_scales)), dim)
            else:
                t.quantization = _quant([WEIGHT_SCALE if info["const"] else scale],
                                        [0 if info["const"] else zero_point])
        elif info["per_channel"]:   # int32 bias: scale = input scale * weight scale, per channel
            scales = (np.float32(ACTIVATION_SCALE) * weight_scales).astype(np.float32)
            t.quantization = _quant(scales, np.zeros(len(scales)))
        if info["const"]:
            if info["dtype"] == "int8":
                data = rng.integers(-127, 128, size=int(np.prod(info["shape"], dtype=np.int64)), dtype=np.int8)
            elif info["per_channel"]:
                data = rng.integers(-1000, 1000, size=int(np.prod(info["shape"])), dtype=np.int32)
            else:
                given = (const_values or {}).get(position)
                data = np.asarray(given if given is not None else _const_values(op, position, info, cfg), np.int32)
                if list(data.shape) != list(info["shape"]):
                    raise UserError(f"constant input {position} of {op} must have shape {info['shape']}")
            b = schema.BufferT()
            b.data = np.frombuffer(data.astype(np_type).tobytes(), np.uint8)
            model.buffers.append(b)
            t.buffer = len(model.buffers) - 1
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    rectifier = op in RECTIFIERS
    inputs = []
    for i, info in enumerate(cfg["inputs"]):
        inputs.append(-1 if info is None else add(info, f"in{i}", position=i,
                                                  zero_point=RECTIFIER_INPUT_ZERO_POINT if rectifier else 0))
    gated = op in ("SOFTMAX", "LOGISTIC")   # int8 kernels want output scale 1/256, zero point -128
    outputs = [add(info, f"out{i}", scale=1 / 256 if gated else ACTIVATION_SCALE,
                   zero_point=-128 if gated or rectifier else 0)
               for i, info in enumerate(cfg["outputs"])]
    o = schema.OperatorT()
    o.opcodeIndex = 0
    o.inputs = inputs
    o.outputs = outputs
    obj = options_object(op, _options_fields(op, cfg["options"]))
    if obj is not None:
        o.builtinOptionsType = getattr(schema.BuiltinOptions, OPTIONS_TABLES[op])
        o.builtinOptions = obj
    sg.operators = [o]
    sg.inputs = [j for j, info in zip(inputs, cfg["inputs"]) if info is not None and not info["const"]]
    sg.outputs = outputs
    model.subgraphs = [sg]
    from tfmobile.convert.flatbuffer import serialize
    return serialize(model)


def _options_fields(op, rendered):
    """Inverse of ``options``: the fields to set (enum names stay names, null stays unset)."""
    return {k: v for k, v in rendered.items() if v is not None}
