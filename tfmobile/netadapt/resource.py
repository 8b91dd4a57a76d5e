"""Resources of a ModelSpec without building or converting it: latency, MACs, params, TFLM SRAM, flash.

NetAdapt asks "what is the largest width of this group that meets the budget?" for every group at
every iteration; converting each candidate to int8 TFLite takes seconds. ``int8_ops(spec)`` instead
writes down, block by block (pure Python over the spec's blocks, shapes from strides and padding),
the ops the int8 converter emits for that spec and their LUT configurations
(``tfmobile.bench.synth``): Conv2D + BatchNorm + ReLU/ReLU6 is one CONV_2D with a fused activation,
h-swish a HARD_SWISH, the SE gate's hard-sigmoid a CONV_2D with fused RELU6 and a MUL by a scalar,
a keepdims global pool over a 1x1 map disappears, a ShuffleNet shuffle is RESHAPE/TRANSPOSE/RESHAPE,
ShuffleNet V2's split two STRIDED_SLICEs, and so on. The keys equal those read from the converted
.tflite for every zoo family (tests/test_netadapt_resource.py), so ``latency`` is the LUT prediction
of ``tfmobile.bench.lut`` (same overhead, context scale and clocks) with no conversion; entries the
LUT lacks are timed on synthesized one-op models and saved to the LUT.

Dense layers are modelled with their bias: the converter drops an all-zero bias (a freshly
initialised Dense), which a trained model does not have.

    from tfmobile.netadapt import resource, largest_width
    resource(spec, "latency", lut="lut.json")        # ms on this host's LUT device
    resource(spec, "peak_sram")                      # bytes of TFLM tensor arena
    largest_width(spec, group, budget_ms, "latency", "lut.json")
"""
import math

from tfmobile.bench import graph, synth
from tfmobile.bench import lut as lut_mod
from tfmobile.errors import UserError
from tfmobile.netadapt.config import KINDS



class _Graph:
    """Builds the converter's op list: activation tensors by id, constants inline."""

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
        oh, ow = _out_size(h, kernel, stride, padding), _out_size(w, kernel, stride, padding)
        wt = synth.tensor([filters, kernel, kernel, cin // groups], "int8", True, True)
        b = synth.tensor([filters], "int32", True, True)
        y = self.op("CONV_2D", [x, wt, b], [1, oh, ow, filters], padding=padding, strideH=stride, strideW=stride)
        return self.activation(y, act)

    def depthwise(self, x, kernel, stride=1, act=None, multiplier=1):
        h, w = self.hw(x)
        c = self.channels(x) * multiplier
        wt = synth.tensor([1, kernel, kernel, c], "int8", True, True)
        b = synth.tensor([c], "int32", True, True)
        y = self.op("DEPTHWISE_CONV_2D", [x, wt, b], [1, _out_size(h, kernel, stride, "SAME"),
                                                      _out_size(w, kernel, stride, "SAME"), c],
                    padding="SAME", strideH=stride, strideW=stride, depthMultiplier=multiplier)
        return self.activation(y, act)

    def dense(self, x, units):
        wt = synth.tensor([units, self.channels(x)], "int8", True, True)
        b = synth.tensor([units], "int32", True, True)
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
        return self.op(kind, [x], [1, _out_size(h, size, stride, padding), _out_size(w, size, stride, padding),
                                   self.channels(x)],
                       padding=padding, strideH=stride, strideW=stride, filterHeight=size, filterWidth=size)

    def global_pool(self, x, mode="avg", keepdims=False):
        h, w = self.hw(x)
        c = self.channels(x)
        if mode != "avg":
            raise UserError("resource prediction models global average pooling only (got max pooling)")
        if keepdims and (h, w) == (1, 1):
            return x                        # the converter removes a mean over a 1x1 map
        return self.op("MEAN", [x, synth.tensor([2], "int32", True)], [1, 1, 1, c] if keepdims else [1, c],
                       keepDims=bool(keepdims))

    def reshape(self, x, shape):
        return self.op("RESHAPE", [x, synth.tensor([len(shape)], "int32", True)], shape)

    def shuffle(self, x, groups):
        if groups <= 1:
            return x
        _, h, w, c = self.shapes[x]
        y = self.reshape(x, [1, h, w, groups, c // groups])
        y = self.op("TRANSPOSE", [y, synth.tensor([5], "int32", True)], [1, h, w, c // groups, groups])
        return self.reshape(y, [1, h, w, c])

    def channel_slice(self, x, begin, size):
        shape = list(self.shapes[x])
        shape[-1] = size
        const = synth.tensor([4], "int32", True)
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
            return self.op("MUL", [x, synth.tensor([], "int8", True)], self.shapes[x])
        if act in ("softmax", "sigmoid", "tanh"):
            return self.op({"softmax": "SOFTMAX", "sigmoid": "LOGISTIC", "tanh": "TANH"}[act], [x], self.shapes[x],
                           **({"beta": 1.0} if act == "softmax" else {}))
        raise UserError(f"resource prediction does not model activation {act!r}")


def _out_size(n, k, s, padding):
    if padding == "SAME":
        return -(-n // s)
    return (n - k) // s + 1


# --- blocks ------------------------------------------------------------------------------------
def _conv_bn(g, x, b, spec):
    return g.conv(x, b.filters, b.kernel, b.stride, act=b.act)


def _dw_separable(g, x, b, spec):
    x = g.depthwise(x, b.kernel, b.stride, b.act, b.depth_multiplier)
    return g.conv(x, b.filters, 1, act=b.act)


def _inverted_residual(g, x, b, spec):
    shortcut = x
    if b.expanded is not None:
        x = g.conv(x, b.expanded, 1, act=b.act)
    x = g.depthwise(x, b.kernel, b.stride, b.act)
    if b.se is not None:
        s = g.global_pool(x, keepdims=True)
        s = g.conv(s, b.se, 1, act="relu")
        s = g.conv(s, g.channels(x), 1, act="hard_sigmoid")
        x = g.mul(x, s)
    x = g.conv(x, b.filters, 1)
    return g.add(shortcut, x) if b.use_residual else x


def _mobilenet_classifier(g, x, b, spec):
    keep = b.layer == "conv"
    x = g.global_pool(x, b.pool, keepdims=keep)
    if b.hidden is not None:
        x = g.conv(x, b.hidden, 1, act=b.hidden_act)
    if keep:
        x = g.reshape(g.conv(x, spec.classes, 1), [1, spec.classes])
    else:
        x = g.dense(x, spec.classes)
    return g.activation(x, spec.classifier_activation)


def _global_pool(g, x, b, spec):
    return g.global_pool(x, b.mode)


def _shufflenet_conv(g, x, b, spec):
    return g.conv(x, b.filters, b.kernel, b.stride, act="relu")


def _maxpool(g, x, b, spec, caffe=False):
    padding = "SAME"
    if caffe:   # SqueezeNet's ceil-mode pool: 'valid' where the size divides, as its builder picks
        padding = "VALID" if all(n >= b.pool and (n - b.pool) % b.stride == 0 for n in g.hw(x)) else "SAME"
    return g.pool(x, "MAX_POOL_2D", b.pool, b.stride, padding)


def _shufflenet_v1_unit(g, x, b, spec):
    shortcut = x
    if b.stride == 2:   # the converter emits the shortcut pool first
        shortcut = g.pool(x, "AVERAGE_POOL_2D", 3, b.stride, "SAME")
    y = g.conv(x, b.mid, 1, padding="VALID", act="relu", groups=b.first_groups)
    y = g.shuffle(y, b.first_groups)
    y = g.depthwise(y, 3, b.stride)
    y = g.conv(y, b.branch_out(g.channels(x)), 1, padding="VALID", groups=b.groups)
    if b.stride == 2:
        y = g.concat([shortcut, y])
    elif b.use_residual:
        y = g.add(shortcut, y)
    return g.activation(y, "relu")


def _shufflenet_v2_unit(g, x, b, spec):
    cin = g.channels(x)
    left_out = b.left_width(cin)
    if b.stride == 1:
        left = g.channel_slice(x, 0, left_out)
        right_in = g.channel_slice(x, left_out, cin - left_out)
    else:
        right_in = x
    y = g.conv(right_in, b.mid, 1, padding="VALID", act="relu")
    y = g.depthwise(y, 3, b.stride)
    y = g.conv(y, b.out - left_out, 1, padding="VALID", act="relu")
    if b.stride != 1:   # the converter emits the left branch after the right one
        left = g.depthwise(x, 3, b.stride)
        left = g.conv(left, left_out, 1, padding="VALID", act="relu")
    return g.shuffle(g.concat([left, y]), 2)


def _shufflenet_classifier(g, x, b, spec):
    if not spec.include_top:
        return g.global_pool(x, spec.pooling) if spec.pooling else x
    x = g.dense(g.global_pool(x), spec.classes)
    return g.activation(x, spec.classifier_activation)


def _squeezenet_stem(g, x, b, spec):
    return g.conv(x, b.filters, b.kernel, b.stride, "VALID", act="relu")


def _fire(g, x, b, spec):
    s = g.conv(x, b.squeeze, 1, padding="VALID", act="relu")
    e1 = g.conv(s, b.expand1x1, 1, padding="VALID", act="relu")
    e3 = g.conv(s, b.expand3x3, 3, padding="SAME", act="relu")
    y = g.concat([e1, e3])
    if b.use_residual:
        return g.add(x, y)
    if b.bypass == "complex":
        return g.add(g.conv(x, g.channels(y), 1, padding="VALID"), y)
    return y


def _squeezenet_classifier(g, x, b, spec):
    if not spec.include_top:
        return g.global_pool(x, spec.pooling) if spec.pooling else x
    x = g.conv(x, spec.classes, 1, padding="VALID", act="relu")
    return g.activation(g.global_pool(x), spec.classifier_activation)


_BLOCKS = {
    "conv_bn": _conv_bn, "dw_separable": _dw_separable, "inverted_residual": _inverted_residual,
    "classifier": _mobilenet_classifier, "global_pool": _global_pool,
    "shufflenet_conv": _shufflenet_conv, "shufflenet_maxpool": _maxpool,
    "shufflenet_v1_unit": _shufflenet_v1_unit, "shufflenet_v2_unit": _shufflenet_v2_unit,
    "shufflenet_classifier": _shufflenet_classifier,
    "squeezenet_stem": _squeezenet_stem, "squeezenet_maxpool": lambda g, x, b, s: _maxpool(g, x, b, s, caffe=True),
    "squeezenet_fire": _fire, "squeezenet_classifier": _squeezenet_classifier,
}


def _check_spec(spec):
    from tfmobile.models.spec import ModelSpec
    if not isinstance(spec, ModelSpec):
        raise UserError(f"resources are computed from a tfmobile ModelSpec, not a {type(spec).__name__}")
    from tfmobile import models
    if spec.family not in models.available():
        raise UserError(f"spec {spec.name!r} is of family {spec.family!r}, which tfmobile does not build; "
                        f"known: {', '.join(models.available())}")
    spec.check()   # field values and channel ties (a shrink that breaks a residual), one UserError line


def int8_ops(spec):
    """The ops of ``spec``'s int8 TFLite model, in execution order, with LUT configs and tensor ids.

    Each item: {"op", "config", "key", "inputs" (activation tensor ids, None for constants),
    "outputs", "const_values"}; plus the model's input and output tensor ids. Nothing is built.
    """
    _check_spec(spec)
    g = _Graph()
    h, w, c = spec.input_shape
    x0 = g.tensor([1, h, w, c])
    x = x0
    for b in spec.blocks:
        fn = _BLOCKS.get(b.type)
        if fn is None:
            raise UserError(f"resource prediction does not model block type {b.type!r} (block {b.name!r})")
        x = fn(g, x, b, spec)
        if any(s <= 0 for s in g.shapes[x]):
            raise UserError(f"input {h}x{w} is too small for {spec.name}: block {b.name!r} "
                            f"would output {g.shapes[x][1:]}")
    ops = []
    templates = {}
    for o in g.ops:
        ins = [synth.tensor(g.shapes[i]) if isinstance(i, int) else i for i in o["inputs"]]
        outs = [synth.tensor(g.shapes[i]) for i in o["outputs"]]
        tkey = (o["op"], tuple(sorted(o["fields"].items())))
        opts = templates.get(tkey)
        if opts is None:
            opts = templates[tkey] = synth.options(o["op"], **o["fields"])
        cfg = synth.config(o["op"], ins, outs, opts)
        ops.append({"op": o["op"], "config": cfg, "key": graph.config_key(cfg),
                    "inputs": [i if isinstance(i, int) else None for i in o["inputs"]], "outputs": o["outputs"],
                    "const_values": o.get("const_values")})
    return {"ops": ops, "input": x0, "output": x, "shapes": g.shapes}


# --- resources -----------------------------------------------------------------------------------
def _lut_layers(derived):
    return [{"index": i, "op": o["op"], "name": f"{o['op'].lower()}_{i}", "key": o["key"], "config": o["config"],
             "macs": graph.config_macs(o["config"])} for i, o in enumerate(derived["ops"])]


def _measure_synthesized(derived, backend, threads, verbose, measured):
    """The LUT's measuring path for keys it lacks, fed with one-op models synthesized from their configs."""
    def measure(table, missing):
        wanted = {ly["key"] for ly in missing}
        models = {}
        for o in derived["ops"]:
            if o["key"] in wanted and o["key"] not in models:
                models[o["key"]] = (o["op"], lambda o=o: synth.one_op_model(o["config"], o["const_values"]))
        lut_mod.build_lut([], table, backend, threads, verbose=verbose, one_op_models=models)
        measured.extend(models)
    return measure


def latency(spec, lut, backend="litert", threads=1, clock=None, measure_missing=True, verbose=False, detail=False):
    """Predicted latency (ms) of ``spec``'s int8 model on the LUT's device, without converting it.

    lut: a path or a LUT dict (a dict avoids reading the file on every call). Entries the LUT lacks for this
    device are measured on synthesized one-op models when ``measure_missing`` (and saved when ``lut`` is a
    path); a LUT that holds only other devices / thread counts is refused.
    """
    derived = int8_ops(spec)
    # measuring a whole other device's table on demand would take minutes: almost surely the wrong LUT
    table = lut_mod.check_device(lut, backend, threads)
    measured = []
    measure = _measure_synthesized(derived, backend, threads, verbose, measured) if measure_missing else None
    out = lut_mod.predict_ops(_lut_layers(derived), table, backend, threads, clock=clock, measure=measure)
    if measured and not isinstance(lut, dict):
        lut_mod.save_lut(table, lut)
    return out if detail else out["predicted_ms"]


def macs(spec):
    """Multiply-accumulates of the int8 graph (convolutions, depthwise, fully connected), as analysis counts them."""
    return sum(graph.config_macs(o["config"]) for o in int8_ops(spec)["ops"])


def resource(spec, kind, lut=None, backend="litert", threads=1, clock=None, measure_missing=True, verbose=False):
    """One resource of ``spec``: latency (ms, needs ``lut``), macs, params, peak_sram (bytes of TFLM tensor
    arena) or flash (bytes of the int8 .tflite)."""
    if kind not in KINDS:
        raise UserError(f"unknown resource kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "latency":
        if lut is None:
            raise UserError("latency needs a LUT (lut= a path or a LUT dict)")
        return latency(spec, lut, backend, threads, clock, measure_missing, verbose)
    if kind == "macs":
        return macs(spec)
    if kind == "params":
        _check_spec(spec)
        from tfmobile import analysis
        return analysis.profile(spec).params
    from tfmobile import analysis
    derived = int8_ops(spec)
    if kind == "peak_sram":
        return analysis.tflm_arena(derived)["arena_bytes"]
    return analysis.int8_flash(derived)["flash_bytes"]


def largest_width(spec, group, budget, kind, lut=None, **resource_kwargs):
    """The largest width of ``group`` (a netadapt Group or its name: its current width, then ``group.widths()``,
    the multiples of its channel step below it, descending) whose ``kind`` resource meets ``budget``; None when
    even one step does not.

    Searched from the top down rather than by bisection: latency from a LUT is not monotone in the width
    (int8 kernels favour some channel counts), and the first width that fits is the one NetAdapt wants.
    """
    from tfmobile.netadapt import groups as groups_of, shrink

    if isinstance(group, str):
        found = [g for g in groups_of(spec) if g.name == group]
        if not found:
            raise UserError(f"spec {spec.name} has no channel group {group!r}")
        group = found[0]
    if not (isinstance(budget, (int, float)) and math.isfinite(budget)):
        raise UserError(f"budget must be a finite number, got {budget!r}")
    path = None
    if kind == "latency" and lut is not None and not isinstance(lut, dict):
        path, lut = lut, lut_mod.load_lut(lut)   # read once, not once per candidate
        before = _entry_count(lut)
    try:
        for w in [group.width] + list(group.widths()):
            candidate = spec if w == group.width else shrink(spec, group, w)
            if resource(candidate, kind, lut, **resource_kwargs) <= budget:
                return w
        return None
    finally:
        if path is not None and _entry_count(lut) != before:
            lut_mod.save_lut(lut, path)


def _entry_count(table):
    return sum(len(d["entries"]) for d in table["devices"].values())
