"""Read and write .tflite flatbuffers without running them: operators, tensors, types, quantization.

The one .tflite reader of tfmobile. Uses the schema module that ships with ai-edge-litert: ``parse``
with its lazy accessors (buffers are never copied) for ``tflite_ops`` and the int8 "does any op run
in float?" check, whose answer comes from the tensor types each operator reads and writes, not from
op names; ``load_model`` (the object API, ``ModelT``) for code that edits or cuts models
(``strip_final_softmax``, tfmobile.bench.graph's one-op models), written back by ``serialize``.
"""
from dataclasses import dataclass, field

import numpy as np

from tfmobile.errors import UserError

_TYPE_NAMES = None
_OP_NAMES = None


def _schema():
    from ai_edge_litert import schema_py_generated as schema
    return schema


def type_name(code):
    global _TYPE_NAMES
    if _TYPE_NAMES is None:
        s = _schema()
        _TYPE_NAMES = {v: k.lower() for k, v in vars(s.TensorType).items() if not k.startswith("_")}
    return _TYPE_NAMES.get(code, f"type{code}")


def op_name(code):
    global _OP_NAMES
    if _OP_NAMES is None:
        s = _schema()
        _OP_NAMES = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    return _OP_NAMES.get(code, f"BUILTIN_{code}")


@dataclass
class TensorInfo:
    index: int
    name: str
    dtype: str
    shape: list
    is_constant: bool
    scales: list = field(default_factory=list)
    zero_points: list = field(default_factory=list)
    quantized_dimension: int = 0


@dataclass
class OpInfo:
    index: int
    name: str            # builtin name (e.g. CONV_2D) or CUSTOM:<code>
    custom: bool
    inputs: list         # tensor indices (-1 = optional input absent)
    outputs: list


@dataclass
class ModelInfo:
    tensors: list
    ops: list
    inputs: list         # tensor indices of the (first) subgraph's inputs
    outputs: list
    num_subgraphs: int
    size_bytes: int

    def tensor(self, i):
        return self.tensors[i]


def op_names(data):
    """Builtin op names of the main subgraph, in execution order (CUSTOM ops as ``CUSTOM:name``)."""
    model = load_model(data)
    return [opcode_name(model.operatorCodes[op.opcodeIndex]) for op in model.subgraphs[0].operators or []]


def check_tflite_bytes(data, what="model"):
    """UserError unless ``data`` looks like a TFLite flatbuffer (identifier TFL3)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UserError(f"expected .tflite bytes, got {type(data).__name__}")
    if len(data) < 8:
        raise UserError(f"{what} is not a TFLite model (file too short)")
    if bytes(data[4:8]) != b"TFL3":
        raise UserError(f"{what} is not a TFLite model (no TFL3 flatbuffer identifier)")


def read_tflite(path):
    """Bytes of a .tflite file, with one-line errors for a missing or corrupt file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise UserError(f"no such .tflite file: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a .tflite file") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    check_tflite_bytes(data, path)
    return data


def load_model(data):
    """The flatbuffer as schema object-API ``ModelT`` (UserError when it does not parse)."""
    check_tflite_bytes(data)
    s = _schema()
    try:
        model = s.ModelT.InitFromObj(s.Model.GetRootAs(bytearray(data), 0))
    except Exception as e:  # flatbuffers raises assorted errors on garbage
        raise UserError(f"corrupt TFLite model: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") \
            from None
    if not model.subgraphs:
        raise UserError("corrupt TFLite model: no subgraphs")
    for b in model.buffers or []:
        if b.offset:  # >2 GB models keep buffers outside the flatbuffer
            b.data = np.frombuffer(bytes(data[b.offset:b.offset + b.size]), np.uint8)
            b.offset = 0
            b.size = 0
    return model


def opcode_name(opcode):
    """Name of a ``ModelT`` operator code: builtin name or ``CUSTOM:<code>``."""
    code = max(opcode.builtinCode, opcode.deprecatedBuiltinCode)
    if code == _schema().BuiltinOperator.CUSTOM:
        name = opcode.customCode
        return "CUSTOM:" + (name.decode() if isinstance(name, bytes) else str(name))
    return op_name(code)


def parse(tflite_bytes):
    """A ModelInfo for the main subgraph of a .tflite flatbuffer; UserError if it is not one."""
    check_tflite_bytes(tflite_bytes)
    data = bytes(tflite_bytes)
    s = _schema()
    try:
        model = s.Model.GetRootAs(data, 0)
        if model.SubgraphsLength() < 1:
            raise UserError("TFLite model has no subgraph")
        opcodes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            if code == s.BuiltinOperator.CUSTOM:
                cc = oc.CustomCode()
                opcodes.append(("CUSTOM:" + (cc.decode() if cc else "?"), True))
            else:
                opcodes.append((op_name(code), False))
        sg = model.Subgraphs(0)
        tensors = []
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            buf = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
            const = bool(buf is not None and (buf.DataLength() > 0 or buf.Offset() > 1))
            q = t.Quantization()
            scales, zps, qdim = [], [], 0
            if q is not None:
                scales = [float(q.Scale(j)) for j in range(q.ScaleLength())]
                zps = [int(q.ZeroPoint(j)) for j in range(q.ZeroPointLength())]
                qdim = int(q.QuantizedDimension())
            name = t.Name().decode("utf-8", "replace") if t.Name() else ""
            tensors.append(TensorInfo(i, name, type_name(t.Type()),
                                      [int(t.Shape(j)) for j in range(t.ShapeLength())],
                                      const, scales, zps, qdim))
        ops = []
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            name, custom = opcodes[op.OpcodeIndex()]
            ops.append(OpInfo(i, name, custom,
                              [int(op.Inputs(j)) for j in range(op.InputsLength())],
                              [int(op.Outputs(j)) for j in range(op.OutputsLength())]))
        return ModelInfo(tensors, ops,
                         [int(sg.Inputs(j)) for j in range(sg.InputsLength())],
                         [int(sg.Outputs(j)) for j in range(sg.OutputsLength())],
                         model.SubgraphsLength(), len(data))
    except UserError:
        raise
    except Exception as e:  # corrupt / truncated flatbuffer
        raise UserError(f"cannot parse TFLite flatbuffer: {type(e).__name__}: {e}") from None


FLOAT_TYPES = ("float32", "float16", "float64", "bfloat16")


def float_ops(info):
    """Operators that compute in floating point, as ``"INDEX:OP_NAME"`` strings.

    An operator computes in float when any tensor it reads or writes (weights included) is a float
    type. QUANTIZE with a float input and DEQUANTIZE with a float output are the I/O conversions of
    a model with float input/output (``io="float"``) and are not counted when they touch a model
    input/output; anywhere else they mean a float island inside the graph and are counted.
    """
    model_io = set(info.inputs) | set(info.outputs)
    found = []
    for op in info.ops:
        ins = [info.tensors[i] for i in op.inputs if i >= 0]
        outs = [info.tensors[i] for i in op.outputs if i >= 0]
        if not any(t.dtype in FLOAT_TYPES for t in ins + outs):
            continue
        if op.name == "QUANTIZE" and all(t.index in model_io for t in ins if t.dtype in FLOAT_TYPES):
            continue
        if op.name == "DEQUANTIZE" and all(t.index in model_io for t in outs if t.dtype in FLOAT_TYPES):
            continue
        found.append(f"{op.index}:{op.name}")
    return found


def io_details(info, which):
    """[{name, dtype, shape, scale, zero_point}] for the model inputs or outputs."""
    idx = info.inputs if which == "inputs" else info.outputs
    out = []
    for i in idx:
        t = info.tensors[i]
        out.append({"name": t.name, "dtype": t.dtype, "shape": t.shape,
                    "scale": t.scales[0] if len(t.scales) == 1 else (t.scales or None),
                    "zero_point": t.zero_points[0] if len(t.zero_points) == 1 else (t.zero_points or None)})
    return out


def serialize(model_t, size_hint=1024):
    """.tflite bytes of a schema object-API ``ModelT`` (the one place models are written back)."""
    import flatbuffers

    builder = flatbuffers.Builder(size_hint + 1024)
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def strip_final_softmax(tflite_bytes):
    """The same model with its final SOFTMAX removed (the graph then outputs the logits), or None
    when the graph does not end that way.

    Cheaper than converting the softmax-free Keras model again, and exact: the logits tensor keeps
    the quantization the converter calibrated for it. Handles a SOFTMAX that is a graph output
    (int8 I/O) or feeds only a final DEQUANTIZE (float I/O); anything else (e.g. a uint8 output
    QUANTIZE, whose scale is the softmax's) returns None so the caller converts instead.
    """
    info = parse(tflite_bytes)
    if info.num_subgraphs != 1:
        return None
    producers = {o: op for op in info.ops for o in op.outputs}
    consumers = {}
    for op in info.ops:
        for i in op.inputs:
            if i >= 0:
                consumers.setdefault(i, []).append(op)
    softmax = dequant = None
    for out in info.outputs:
        op = producers.get(out)
        if op is None:
            continue
        if op.name == "DEQUANTIZE" and len(op.inputs) == 1:
            src = producers.get(op.inputs[0])
            if src is not None and src.name == "SOFTMAX" and len(consumers.get(op.inputs[0], [])) == 1:
                softmax, dequant = src, op
        elif op.name == "SOFTMAX" and consumers.get(out, []) == []:
            softmax = op
    if softmax is None or len(info.outputs) != 1:
        return None
    logits, probs = softmax.inputs[0], softmax.outputs[0]

    model = load_model(tflite_bytes)
    sg = model.subgraphs[0]
    sg.operators = [op for k, op in enumerate(sg.operators) if k != softmax.index]
    if dequant is not None:
        for op in sg.operators:
            if list(op.outputs) == [dequant.outputs[0]]:
                op.inputs = [logits]
    else:
        sg.outputs = [logits]
        for sig in model.signatureDefs or []:
            for t in sig.outputs or []:
                if t.tensorIndex == probs:
                    t.tensorIndex = logits
    # drop the softmax's output tensor (TFLM would still allocate a tensor record for it)
    sg.tensors = [t for k, t in enumerate(sg.tensors) if k != probs]

    def shift(i):
        return i - 1 if i > probs else i

    for op in sg.operators:
        op.inputs = [shift(i) if i >= 0 else i for i in op.inputs]
        op.outputs = [shift(i) for i in op.outputs]
        if op.intermediates is not None:
            op.intermediates = [shift(i) for i in op.intermediates]
    sg.inputs = [shift(i) for i in sg.inputs]
    sg.outputs = [shift(i) for i in sg.outputs]
    for sig in model.signatureDefs or []:
        for t in list(sig.inputs or []) + list(sig.outputs or []):
            t.tensorIndex = shift(t.tensorIndex)
    return serialize(model, size_hint=len(tflite_bytes))
