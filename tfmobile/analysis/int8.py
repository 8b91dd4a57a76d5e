"""The int8 op graph of a ModelSpec, derived without building or converting it, and the TFLite-Micro
arena and .tflite flash predicted from that graph.

``int8_ops(spec)`` writes down, block by block, the ops the int8 converter emits for the spec and
their LUT configurations (``op_config``): each block kind's ``int8`` derivation
(``tfmobile.models.kinds``) is called with an ``Int8Graph``, which knows the converter's fusions:
Conv2D + BatchNorm + ReLU/ReLU6 is one CONV_2D with a fused activation, h-swish a HARD_SWISH, the SE
gate's hard-sigmoid a CONV_2D with fused RELU6 and a MUL by a scalar, a keepdims global pool over a
1x1 map disappears, a ShuffleNet shuffle is RESHAPE/TRANSPOSE/RESHAPE, and so on. The keys equal
those read from the converted .tflite for every zoo family (tests/test_netadapt_resource.py).

Dense layers are modelled with their bias: the converter drops an all-zero bias (a freshly
initialised Dense), which a trained model does not have.
"""
import math

from tfmobile import models
from tfmobile.analysis.op_config import config, config_key, options, tensor
from tfmobile.errors import UserError
from tfmobile.models import kinds
from tfmobile.models.spec import ModelSpec


class Int8Graph:
    """The int8 converter's op list, written op by op: activation tensors by id, constants inline.

    A block kind's ``int8`` derivation calls these (``conv``, ``depthwise``, ``activation``, ...); each
    emits the ops and fusions the converter emits for the equivalent Keras layers."""

    def __init__(self):
        self.shapes = []      # tensor id -> full shape (batch 1)
        self.ops = []         # dicts: op, inputs (ids or const tensor dicts), outputs (ids), fields

    def tensor(self, shape):
        self.shapes.append([int(s) for s in shape])
        return len(self.shapes) - 1

    def op(self, op, inputs, out_shape, **fields):
        y = self.tensor(out_shape)
        self.ops.append({"op": op, "inputs": list(inputs), "outputs": [y], "fields": fields})
        return y

    def hw(self, x):
        return self.shapes[x][1], self.shapes[x][2]

    def channels(self, x):
        return self.shapes[x][-1]

    # --- ops ---------------------------------------------------------------------------------
    def conv(self, x, filters, kernel, stride=1, padding="SAME", act=None, groups=1):
        h, w = self.hw(x)
        cin = self.channels(x)
        oh, ow = out_size(h, kernel, stride, padding), out_size(w, kernel, stride, padding)
        wt = tensor([filters, kernel, kernel, cin // groups], "int8", True, True)
        b = tensor([filters], "int32", True, True)
        y = self.op("CONV_2D", [x, wt, b], [1, oh, ow, filters], padding=padding, strideH=stride, strideW=stride)
        return self.activation(y, act)

    def depthwise(self, x, kernel, stride=1, act=None, multiplier=1):
        h, w = self.hw(x)
        c = self.channels(x) * multiplier
        wt = tensor([1, kernel, kernel, c], "int8", True, True)
        b = tensor([c], "int32", True, True)
        y = self.op("DEPTHWISE_CONV_2D", [x, wt, b], [1, out_size(h, kernel, stride, "SAME"),
                                                      out_size(w, kernel, stride, "SAME"), c],
                    padding="SAME", strideH=stride, strideW=stride, depthMultiplier=multiplier)
        return self.activation(y, act)

    def dense(self, x, units):
        wt = tensor([units, self.channels(x)], "int8", True, True)
        b = tensor([units], "int32", True, True)
        return self.op("FULLY_CONNECTED", [x, wt, b], [1, units])

    def add(self, a, b):
        return self.op("ADD", [a, b], self.shapes[a])

    def mul(self, a, b):
        return self.op("MUL", [a, b], self.shapes[a])

    def concat(self, parts):
        shape = list(self.shapes[parts[0]])
        shape[-1] = sum(self.channels(p) for p in parts)
        return self.op("CONCATENATION", parts, shape, axis=len(shape) - 1)

    def pool(self, x, kind, size, stride, padding):
        h, w = self.hw(x)
        return self.op(kind, [x], [1, out_size(h, size, stride, padding), out_size(w, size, stride, padding),
                                   self.channels(x)],
                       padding=padding, strideH=stride, strideW=stride, filterHeight=size, filterWidth=size)

    def global_pool(self, x, mode="avg", keepdims=False):
        h, w = self.hw(x)
        c = self.channels(x)
        if mode != "avg":
            raise UserError("resource prediction models global average pooling only (got max pooling)")
        if keepdims and (h, w) == (1, 1):
            return x                        # the converter removes a mean over a 1x1 map
        return self.op("MEAN", [x, tensor([2], "int32", True)], [1, 1, 1, c] if keepdims else [1, c],
                       keepDims=bool(keepdims))

    def reshape(self, x, shape):
        return self.op("RESHAPE", [x, tensor([len(shape)], "int32", True)], shape)

    def shuffle(self, x, groups):
        if groups <= 1:
            return x
        _, h, w, c = self.shapes[x]
        y = self.reshape(x, [1, h, w, groups, c // groups])
        y = self.op("TRANSPOSE", [y, tensor([5], "int32", True)], [1, h, w, c // groups, groups])
        return self.reshape(y, [1, h, w, c])

    def channel_slice(self, x, begin, size):
        shape = list(self.shapes[x])
        shape[-1] = size
        const = tensor([4], "int32", True)
        y = self.op("STRIDED_SLICE", [x, const, const, const], shape, beginMask=7, endMask=7)
        self.ops[-1]["const_values"] = {1: [0, 0, 0, begin], 2: [0, 0, 0, begin + size], 3: [1, 1, 1, 1]}
        return y

    def activation(self, x, act):
        """Apply ``act`` to tensor ``x``: fused into its producer where the converter fuses it."""
        if act in (None, "linear", "none"):
            return x
        producer = self.ops[-1] if self.ops and self.ops[-1]["outputs"] == [x] else None
        fusable = producer is not None and producer["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
                                                              "ADD", "MUL") \
            and producer["fields"].get("fusedActivationFunction", "NONE") == "NONE"
        if act in ("relu", "relu6"):
            if fusable:
                producer["fields"]["fusedActivationFunction"] = act.upper()
                return x
            return self.op(act.upper(), [x], self.shapes[x])
        if act == "hard_swish":
            return self.op("HARD_SWISH", [x], self.shapes[x])
        if act == "hard_sigmoid":
            # relu6(x + 3) / 6: the +3 folds into the producer's bias, the /6 is a MUL by a scalar
            if not (fusable and producer["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D")):
                raise UserError("resource prediction models hard-sigmoid only right after a convolution")
            producer["fields"]["fusedActivationFunction"] = "RELU6"
            return self.op("MUL", [x, tensor([], "int8", True)], self.shapes[x])
        if act in ("softmax", "sigmoid", "tanh"):
            return self.op({"softmax": "SOFTMAX", "sigmoid": "LOGISTIC", "tanh": "TANH"}[act], [x], self.shapes[x],
                           **({"beta": 1.0} if act == "softmax" else {}))
        raise UserError(f"resource prediction does not model activation {act!r}")

    def keyed_ops(self):
        """The ops with their LUT configurations and keys (options written once per distinct set)."""
        ops, templates = [], {}
        for o in self.ops:
            ins = [tensor(self.shapes[i]) if isinstance(i, int) else i for i in o["inputs"]]
            outs = [tensor(self.shapes[i]) for i in o["outputs"]]
            tkey = (o["op"], tuple(sorted(o["fields"].items())))
            if tkey not in templates:
                templates[tkey] = options(o["op"], **o["fields"])
            cfg = config(o["op"], ins, outs, templates[tkey])
            ops.append({"op": o["op"], "config": cfg, "key": config_key(cfg),
                        "inputs": [i if isinstance(i, int) else None for i in o["inputs"]],
                        "outputs": o["outputs"], "const_values": o.get("const_values")})
        return ops


def out_size(n, k, s, padding):
    """Output length of a window of ``k`` at stride ``s`` with TFLite padding."""
    if padding == "SAME":
        return -(-n // s)
    return (n - k) // s + 1


def check_spec(spec):
    """Refuse what has no int8 graph: not a ModelSpec, a family tfmobile does not build, a bad spec."""
    if not isinstance(spec, ModelSpec):
        raise UserError(f"resources are computed from a tfmobile ModelSpec, not a {type(spec).__name__}")
    if spec.family not in models.available():
        raise UserError(f"spec {spec.name!r} is of family {spec.family!r}, which tfmobile does not build; "
                        f"known: {', '.join(models.available())}")
    spec.check()   # field values and channel ties (a shrink that breaks a residual), one UserError line


def int8_ops(spec):
    """The ops of ``spec``'s int8 TFLite model, in execution order, with LUT configs and tensor ids.

    Each item: {"op", "config", "key", "inputs" (activation tensor ids, None for constants),
    "outputs", "const_values"}; plus the model's input and output tensor ids. Nothing is built.
    """
    check_spec(spec)
    g = Int8Graph()
    h, w, c = spec.input_shape
    x0 = g.tensor([1, h, w, c])
    x = x0
    for b in spec.blocks:
        derive = kinds.kind_of(b.type).int8
        if derive is None:
            raise UserError(f"resource prediction does not model block type {b.type!r} (block {b.name!r})")
        x = derive(g, x, b, spec)
        if any(s <= 0 for s in g.shapes[x]):
            raise UserError(f"input {h}x{w} is too small for {spec.name}: block {b.name!r} "
                            f"would output {g.shapes[x][1:]}")
    return {"ops": g.keyed_ops(), "input": x0, "output": x, "shapes": g.shapes}


# --- TFLite-Micro arena and int8 flash of an int8 op graph ----------------------------------------
# Inputs are int8 op graphs as ``int8_ops`` writes them: ops in execution order, each with a LUT-style
# ``config`` (tensor shapes, dtypes, constness) and activation tensor ids.
ARENA_ALIGNMENT = 16


def planned_activation_bytes(derived):
    """Bytes of TFLM's greedy memory plan of the activation tensors (arena head).

    As tflite-micro's GreedyMemoryPlanner: every non-constant tensor lives from the op that writes it
    (the model input from the first op) to the last op that reads it (the output to the last op); buffers are
    placed largest first, each at the lowest 16-byte aligned offset that does not overlap a placed buffer
    alive at the same time. The plan's end is the head size.
    """
    ops = derived["ops"]
    first, last = {derived["input"]: 0}, {}
    for i, op in enumerate(ops):
        for t in op["outputs"]:
            first.setdefault(t, i)
            last.setdefault(t, i)
        for t in op["inputs"]:
            if t is not None:
                last[t] = max(last.get(t, i), i)
    last[derived["output"]] = max(len(ops) - 1, 0)
    sizes = {t: -(-math.prod(derived["shapes"][t]) // ARENA_ALIGNMENT) * ARENA_ALIGNMENT for t in first}
    placed = []   # (offset, size, first, last)
    end = 0
    for t in sorted(first, key=lambda t: (-sizes[t], first[t])):
        lo, hi = first[t], last.get(t, first[t])
        offset = 0
        for o, s, f, l in sorted(p for p in placed if not (p[3] < lo or p[2] > hi)):
            if offset + sizes[t] <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, sizes[t], lo, hi))
        end = max(end, offset + sizes[t])
    return end


_PER_CHANNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
# TFLM arena beyond the activation plan (x86-64 host build of tflite-micro's Python interpreter): each
# conv / depthwise / fully-connected op keeps an int32 output multiplier and shift per output channel
# (8 bytes); per op (node, registration, op data) and per tensor (eval tensor) bookkeeping and a fixed
# part were fitted by least squares to arenas measured by ``tfmobile.convert.measure_arena`` on 32x32 zoo
# models (every family); tests/test_netadapt_resource.py checks 32x32 and 64x64 against measurements.
ARENA_BYTES_PER_CHANNEL = 8
ARENA_BYTES_PER_OP = 167
ARENA_BYTES_PER_TENSOR = 27
ARENA_FIXED_BYTES = 1054
# .tflite bytes beyond the constant buffers: a float32 scale and an int64 zero point per quantization
# channel (every tensor has at least one), and per tensor and fixed flatbuffer bookkeeping (tensor
# names, shapes, offsets, operator index vectors, metadata), fitted like the arena constants against the
# converter's files (of models with trained-like, non-zero biases: the converter stores an all-zero bias
# buffer once for all ops that have it, which only freshly initialised models do).
FLASH_BYTES_PER_QCHANNEL = 12
FLASH_BYTES_PER_TENSOR = 187
FLASH_FIXED_BYTES = 4631


def int8_graph_counts(derived):
    """Counts the arena and flash models use: tensors (activations + constants; equal small int32
    constants such as reshape shapes and reduction axes are shared, as the converter shares them),
    ops, per-channel quantized output channels, constant bytes and quantization channels."""
    acts, shared = {derived["input"]}, set()
    own_consts = const_bytes = qchannels = channels = 0
    for op in derived["ops"]:
        acts.update(op["outputs"])
        cfg = op["config"]
        if cfg["op"] in _PER_CHANNEL_OPS:
            channels += cfg["outputs"][0]["shape"][-1]
        for j, t in enumerate(cfg["inputs"]):
            if t is None or not t["const"]:
                continue
            n = math.prod(t["shape"])
            const_bytes += n * (1 if t["dtype"] == "int8" else 4)
            if t["per_channel"]:
                qchannels += t["shape"][3 if cfg["op"] == "DEPTHWISE_CONV_2D" and t["dtype"] == "int8" else 0]
                own_consts += 1
            elif t["dtype"] == "int32":
                values = (op.get("const_values") or {}).get(j)
                shared.add((cfg["op"], j, tuple(t["shape"]), tuple(values) if values else
                            tuple(cfg["outputs"][0]["shape"])))
            else:
                own_consts += 1
                qchannels += 1
    qchannels += len(acts)
    return {"tensors": len(acts) + len(shared) + own_consts, "ops": len(derived["ops"]),
            "per_channel_outputs": channels, "const_bytes": const_bytes, "quant_channels": qchannels}


def _without_final_softmax(derived):
    ops = derived["ops"]
    if ops and ops[-1]["op"] == "SOFTMAX" and ops[-1]["outputs"] == [derived["output"]]:
        return dict(derived, ops=ops[:-1], output=ops[-1]["inputs"][0])
    return derived


def tflm_arena(derived):
    """Predicted TFLM tensor arena (bytes) of the firmware model of an int8 op graph.

    The firmware model is the int8 model without its final SOFTMAX (``convert.flatbuffer.strip_final_softmax``,
    as ``tfmobile.convert`` exports it for TFLM). Arena = the greedy plan of the activations
    (``planned_activation_bytes``) + per-channel requantization data + per-op and per-tensor bookkeeping.
    """
    fw = _without_final_softmax(derived)
    counts = int8_graph_counts(fw)
    head = planned_activation_bytes(fw)
    persistent = (ARENA_BYTES_PER_CHANNEL * counts["per_channel_outputs"] + ARENA_BYTES_PER_OP * counts["ops"]
                  + ARENA_BYTES_PER_TENSOR * counts["tensors"] + ARENA_FIXED_BYTES)
    return {"arena_bytes": int(head + persistent), "activation_plan_bytes": int(head),
            "persistent_bytes": int(persistent), **counts}


def int8_flash(derived):
    """Predicted size (bytes) of the int8 .tflite of an int8 op graph (with its softmax, as converted)."""
    counts = int8_graph_counts(derived)
    flash = (counts["const_bytes"] + FLASH_BYTES_PER_QCHANNEL * counts["quant_channels"]
             + FLASH_BYTES_PER_TENSOR * counts["tensors"] + FLASH_FIXED_BYTES)
    return {"flash_bytes": int(flash), **counts}
