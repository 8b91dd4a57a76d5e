"""The ops TFLite actually runs in a .tflite, their layer configurations, and one-op models (the
flatbuffer itself is read by tfmobile.convert.flatbuffer).

The latency LUT keys on what the interpreter executes, not on Keras layers: after conversion a
Conv2D + BatchNorm + ReLU6 is one CONV_2D with a fused activation, h-swish is its own HARD_SWISH, a
squeeze-excite is MEAN / CONV_2D / HARD_SWISH|LOGISTIC / MUL, a channel shuffle is RESHAPE /
TRANSPOSE / RESHAPE. Reading the converted flatbuffer gets that fusion right by construction, for every
family, without re-implementing the converter's rules.

``op_model(tflite_bytes, i)`` cuts operator ``i`` out of a model into a standalone one-op model with
the same tensors, quantization parameters and weights, so a LUT entry is measured on exactly the op
(int8 kernel, fused activation, per-channel scales) the whole model runs. No TensorFlow is needed.
"""

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from tfmobile.analysis.op_config import config_key, config_macs, op_macs, options_dict  # noqa: F401  (re-exported)
from tfmobile.convert.flatbuffer import load_model, op_names, opcode_name, serialize, type_name  # noqa: F401


def _tensor_info(sg, model, idx):
    t = sg.tensors[idx]
    shape = [int(s) for s in (t.shape if t.shape is not None else [])]
    const = bool(t.buffer and model.buffers[t.buffer].data is not None and len(model.buffers[t.buffer].data))
    q = t.quantization
    per_channel = bool(q is not None and q.scale is not None and len(q.scale) > 1)
    return {"shape": shape, "dtype": type_name(t.type), "const": const,
            "per_channel": per_channel}


def layers(data):
    """One dict per executed op: index, op, name, config (the LUT key fields), macs.

    The config holds the op type, every input's shape/dtype/constness, output shapes/dtypes and the
    op's builtin options (strides, padding, fused activation, dilation, axes, ...); kernel size and
    in/out channels are the weight tensor's shape. Two ops with equal configs cost the same.
    """
    model = load_model(data)
    sg = model.subgraphs[0]
    out = []
    for i, op in enumerate(sg.operators or []):
        name = opcode_name(model.operatorCodes[op.opcodeIndex])
        ins = [(_tensor_info(sg, model, j) if j >= 0 else None) for j in op.inputs]
        outs = [_tensor_info(sg, model, j) for j in op.outputs]
        cfg = {"op": name, "inputs": ins, "outputs": outs,
               "options": options_dict(op.builtinOptions)}
        tname = sg.tensors[op.outputs[0]].name if len(op.outputs) else b""
        out.append({"index": i, "op": name, "name": tname.decode(errors="replace") if isinstance(tname, bytes)
                    else str(tname), "config": cfg, "macs": op_macs(name, ins, outs)})
    return out


def _np_type(tensor_type):
    return {schema.TensorType.INT64: np.int64}.get(tensor_type, np.int32)


def op_model(data_or_model, index):
    """A standalone .tflite (bytes) holding only operator ``index`` of the main subgraph.

    The op's non-constant inputs become the model inputs, its outputs the model outputs; constant
    inputs (weights, biases, shape operands) keep their data and quantization parameters.
    """
    model = data_or_model if isinstance(data_or_model, schema.ModelT) else load_model(data_or_model)
    sg = model.subgraphs[0]
    op = sg.operators[index]
    new = schema.ModelT()
    new.version = model.version or 3
    new.description = "tfmobile one-op model"
    new.buffers = [schema.BufferT()]
    opcode = model.operatorCodes[op.opcodeIndex]
    new.operatorCodes = [opcode]
    nsg = schema.SubGraphT()
    nsg.name = "main"
    nsg.tensors = []
    remap = {}

    def add(j):
        if j < 0:
            return j
        if j in remap:
            return remap[j]
        t = sg.tensors[j]
        nt = schema.TensorT()
        nt.shape = list(t.shape) if t.shape is not None else []
        nt.shapeSignature = None
        nt.type = t.type
        nt.name = t.name
        nt.quantization = t.quantization
        nt.isVariable = t.isVariable
        nt.buffer = 0
        if t.buffer and model.buffers[t.buffer].data is not None and len(model.buffers[t.buffer].data):
            b = schema.BufferT()
            b.data = np.asarray(model.buffers[t.buffer].data, dtype=np.uint8)
            new.buffers.append(b)
            nt.buffer = len(new.buffers) - 1
        nsg.tensors.append(nt)
        remap[j] = len(nsg.tensors) - 1
        return remap[j]

    nop = schema.OperatorT()
    nop.opcodeIndex = 0
    nop.inputs = [add(j) for j in op.inputs]
    nop.outputs = [add(j) for j in op.outputs]
    nop.builtinOptionsType = op.builtinOptionsType
    nop.builtinOptions = op.builtinOptions
    nop.builtinOptions2Type = getattr(op, "builtinOptions2Type", 0)
    nop.builtinOptions2 = getattr(op, "builtinOptions2", None)
    nop.customOptions = op.customOptions
    nop.customOptionsFormat = op.customOptionsFormat
    nsg.operators = [nop]
    if opcode_name(opcode) == "RESHAPE" and len(op.inputs) > 1 and op.inputs[1] >= 0:
        # A shape operand computed at run time (SHAPE/PACK chain) would become a model input filled
        # with random values; give it the value it has in the whole model: the output's shape.
        st = nsg.tensors[nop.inputs[1]]
        if st.buffer == 0:
            out_shape = np.asarray(nsg.tensors[nop.outputs[0]].shape, np.int32)
            b = schema.BufferT()
            b.data = np.frombuffer(out_shape.astype(_np_type(st.type)).tobytes(), np.uint8)
            new.buffers.append(b)
            st.buffer = len(new.buffers) - 1
    nsg.inputs = [remap[j] for j in op.inputs if j >= 0 and nsg.tensors[remap[j]].buffer == 0]
    nsg.outputs = [remap[j] for j in op.outputs]
    new.subgraphs = [nsg]
    return serialize(new)
