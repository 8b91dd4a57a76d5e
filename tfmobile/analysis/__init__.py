"""Static model analysis: per-layer params, MACs and activation sizes; flash and peak-SRAM estimates.

    from tfmobile import analysis
    p = analysis.profile(model_or_spec)
    p.params, p.macs, p.flash_bytes, p.peak_activation_bytes, p.to_dict(), print(p.table())

Nothing is executed: everything is read off the Keras graph (shapes, weights).

What is counted
- MACs (multiply-accumulates, the papers' "multiply-adds"/"FLOPs"): Conv2D ``kh*kw*cin/groups*cout*
  hout*wout``, DepthwiseConv2D ``kh*kw*cin*multiplier*hout*wout``, SeparableConv2D (both parts),
  Conv2DTranspose ``kh*kw*cin*cout*hin*win``, Dense ``in*out`` (per position for rank > 2). Batch
  norm (folded into the conv), activations, pooling, Add/Multiply/Concatenate, reshapes and
  transposes count 0 MACs. A squeeze-and-excite block therefore counts its two 1x1 convs and
  nothing for its global pool, gate and channel-wise multiply.
- Params: Keras' count per layer (batch norm's moving mean/variance included).
- Peak activation memory: the graph as TFLite runs it. Batch norm following a conv / depthwise /
  dense is folded into it, ReLU / ReLU6 following a conv, depthwise, dense, add, sub or mul (that
  has no other consumer) is fused into it, and Dropout / identity layers disappear, so none of
  those outputs are separate tensors. Ops run in a depth-first order from the outputs (inputs of a
  layer in call order), which is the order the TensorFlow graph -- and the converter -- creates
  them. Every op output is its own buffer (no in-place reuse), a tensor is alive from the op that
  writes it to the last op that reads it (the model input from the start, outputs to the end), and
  the peak is the largest sum of live tensors at any op, inputs and output of that op included --
  so tensors held for skip connections count. Reported for int8 (1 byte/element) and float32.
- Flash estimate for an int8 model: int8 weights, an int32 bias per output channel of every conv /
  depthwise / dense (TFLite gives each one after batch-norm folding), per-channel quantization
  parameters (float32 scale + int64 zero point, for the weights and for the bias), int8 scale/shift
  vectors for an unfolded batch norm, plus the flatbuffer's per-tensor and per-op bookkeeping
  (constants below). docs/analysis.md compares it with real int8 .tflite files.
"""
import math
import sys
from dataclasses import asdict, dataclass, field

import tfmobile  # noqa: F401  (legacy Keras)
import tensorflow as tf
import tf_keras as keras

from tfmobile.errors import UserError

# Flatbuffer bookkeeping of a .tflite file (tensor table entry with name/shape/quantization header,
# operator entry with its input/output index vectors); measured from the converter's output on
# ShuffleNet/SqueezeNet/MobileNet files, see docs/analysis.md.
TENSOR_OVERHEAD_BYTES = 96
OP_OVERHEAD_BYTES = 48
QPARAM_BYTES_PER_CHANNEL = 12     # float32 scale + int64 zero point

_WEIGHT_OPS = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "DepthwiseConv1D",
               "SeparableConv1D", "SeparableConv2D", "Conv2DTranspose", "Conv1DTranspose",
               "Dense")
_BN_HOSTS = _WEIGHT_OPS
_RELU_HOSTS = _WEIGHT_OPS + ("Add", "Subtract", "Multiply")
_IDENTITY = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
             "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization")


@dataclass
class LayerProfile:
    name: str
    type: str
    input_shape: list
    output_shape: list
    params: int
    macs: int
    output_bytes: int          # int8 bytes of this layer's output (batch 1)
    fused_into: str = None     # TFLite folds this layer into that op (no tensor of its own)


@dataclass
class Profile:
    model: str
    input_shape: list
    layers: list
    params: int
    trainable_params: int               # what PyTorch-style tables count (no BN moving stats)
    macs: int
    flash_bytes: int
    peak_activation_bytes: int          # int8
    peak_activation_bytes_float32: int
    peak_at: str                        # the op at which the peak occurs
    tflite_ops: int                     # ops left after folding (what TFLite will run)
    weight_bytes_int8: int = 0
    notes: list = field(default_factory=list)

    def to_dict(self):
        d = asdict(self)
        d["layers"] = [asdict(l) for l in self.layers]
        return d

    def table(self):
        """A readable per-layer table plus totals."""
        rows = [("layer", "type", "output", "params", "MACs", "act int8")]
        for l in self.layers:
            out = "x".join(str(v) for v in l.output_shape) if l.output_shape else "-"
            act = "(fused)" if l.fused_into else _human(l.output_bytes, "B")
            rows.append((l.name, l.type, out, f"{l.params:,}", f"{l.macs:,}", act))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = []
        for j, r in enumerate(rows):
            cells = [r[i].ljust(widths[i]) if i < 3 else r[i].rjust(widths[i]) for i in range(len(r))]
            lines.append("  ".join(cells).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += [
            "",
            f"model:            {self.model}  input {'x'.join(map(str, self.input_shape))}",
            f"params:           {self.params:,} ({self.trainable_params:,} trainable)",
            f"MACs:             {self.macs:,} ({self.macs / 1e6:.1f} M)",
            f"flash (int8 est): {self.flash_bytes:,} B ({_human(self.flash_bytes, 'B')})",
            f"peak activations: {self.peak_activation_bytes:,} B int8 "
            f"({_human(self.peak_activation_bytes, 'B')}), "
            f"{self.peak_activation_bytes_float32:,} B float32, at {self.peak_at}",
            f"TFLite ops:       {self.tflite_ops} (after folding batch norm / ReLU)",
        ]
        return "\n".join(lines)


def _human(n, unit):
    for prefix in ("", "Ki", "Mi", "Gi"):
        if abs(n) < 1024 or prefix == "Gi":
            return f"{n:.0f} {unit}" if prefix == "" else f"{n:.1f} {prefix}{unit}"
        n /= 1024.0


def _shape_list(shape):
    if shape is None:
        return None
    try:
        return [d for d in list(shape)[1:]]
    except TypeError:
        return None


def _numel(shape):
    if shape is None or any(d is None for d in shape):
        return 0
    return int(math.prod(shape))


def _type(layer):
    return type(layer).__name__


def _is_relu(layer):
    t = _type(layer)
    if t == "ReLU":
        cfg = layer.get_config()
        return (not cfg.get("negative_slope")) and (not cfg.get("threshold")) and \
            cfg.get("max_value") in (None, 6.0, 6)
    if t == "Activation":
        return layer.get_config().get("activation") in ("relu", "relu6")
    return False


_FUSABLE_ACTIVATIONS = ("linear", "relu", "relu6", "tanh")


def _same_pads(n, k, s, d=1):
    k = (k - 1) * d + 1
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return (total // 2, total - total // 2)


def _pad_folds_into_consumer(pad_layer, out, consumer_layers, consumers):
    """The converter folds PAD into a following 'valid' conv when it equals 'same' padding."""
    users = consumer_layers.get(id(out), [])
    if consumers.get(id(out), 0) != 1 or len(users) != 1:
        return False
    conv = users[0]
    if _type(conv) not in ("Conv2D", "DepthwiseConv2D") or conv.padding != "valid":
        return False
    h, w = pad_layer.input_shape[1], pad_layer.input_shape[2]
    if h is None or w is None:
        return False
    (top, bottom), (left, right) = pad_layer.padding
    return ((top, bottom) == _same_pads(h, conv.kernel_size[0], conv.strides[0],
                                        conv.dilation_rate[0])
            and (left, right) == _same_pads(w, conv.kernel_size[1], conv.strides[1],
                                            conv.dilation_rate[1]))


def _has_own_activation(layer):
    if _type(layer) not in _WEIGHT_OPS:
        return False
    act = getattr(layer, "activation", None)
    return act is not None and getattr(act, "__name__", "linear") != "linear"


def _kernel(layer):
    k = getattr(layer, "kernel", None)
    return k if k is not None else layer.depthwise_kernel


def _macs(layer, in_shape, out_shape):
    t = _type(layer)
    if t in ("Conv2DTranspose", "Conv1DTranspose"):
        return int(_kernel(layer).shape.num_elements()) * _numel(in_shape[:-1])
    if t in ("SeparableConv1D", "SeparableConv2D"):
        dw = int(layer.depthwise_kernel.shape.num_elements())
        pw = int(layer.pointwise_kernel.shape.num_elements())
        return (dw + pw) * _numel(out_shape[:-1])
    if t in _WEIGHT_OPS:
        # Conv kernel (kh, kw, cin/groups, cout) / depthwise (kh, kw, cin, mult) / dense (in, out):
        # every kernel element is used once per output position.
        return int(_kernel(layer).shape.num_elements()) * _numel(out_shape[:-1])
    return 0


def _out_channels(layer):
    t = _type(layer)
    if t in ("DepthwiseConv2D", "DepthwiseConv1D"):
        k = _kernel(layer).shape
        return int(k[-2]) * int(k[-1])
    if t in ("SeparableConv1D", "SeparableConv2D"):
        return int(layer.pointwise_kernel.shape[-1])
    if t in ("Conv2DTranspose", "Conv1DTranspose"):
        return int(layer.kernel.shape[-2])
    return int(layer.kernel.shape[-1])


def _weight_flash(layer):
    """Bytes of an int8 layer's constant tensors: (bytes, number of constant tensors)."""
    t = _type(layer)
    if t in ("SeparableConv1D", "SeparableConv2D"):
        # TFLite runs it as depthwise + conv: two kernels and two biases.
        dw = layer.depthwise_kernel.shape
        cmid = int(dw[-2]) * int(dw[-1])
        cout = int(layer.pointwise_kernel.shape[-1])
        w = int(dw.num_elements()) + int(layer.pointwise_kernel.shape.num_elements())
        return w + 4 * (cmid + cout) + 2 * 2 * QPARAM_BYTES_PER_CHANNEL * (cmid + cout), 4
    if t in _WEIGHT_OPS:
        cout = _out_channels(layer)
        w = int(_kernel(layer).shape.num_elements())
        return w + 4 * cout + 2 * QPARAM_BYTES_PER_CHANNEL * cout, 2
    if t == "BatchNormalization":   # not folded: a MUL and an ADD with per-channel vectors
        c = int(layer.gamma.shape[-1]) if layer.gamma is not None else int(layer.moving_mean.shape[-1])
        return 2 * c + 2 * QPARAM_BYTES_PER_CHANNEL, 2
    n = layer.count_params()
    return n, (1 if n else 0)


# --- graph walk --------------------------------------------------------------------------------
def _history(t):
    h = getattr(t, "_keras_history", None)
    if h is None:
        return None
    return h.layer, h.node_index, h.tensor_index


def _nodes_in_order(model):
    """Depth-first post-order from the outputs: (layer, node) in the order the graph runs them."""
    order, seen = [], set()

    def visit(layer, node_index):
        key = (id(layer), node_index)
        if key in seen:
            return
        seen.add(key)
        node = layer.inbound_nodes[node_index]
        for t in node.keras_inputs:
            h = _history(t)
            if h is not None:
                visit(h[0], h[1])
        order.append((layer, node))

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10000))
    try:
        for t in model.outputs:
            h = _history(t)
            visit(h[0], h[1])
    finally:
        sys.setrecursionlimit(old)
    return order


def _as_model(model_or_spec):
    from tfmobile.models.spec import ModelSpec
    if isinstance(model_or_spec, ModelSpec):
        from tfmobile.models import build
        return build(model_or_spec)
    if isinstance(model_or_spec, keras.Model):
        if not getattr(model_or_spec, "_is_graph_network", False):
            raise UserError(f"profile() needs a functional tf_keras model; "
                            f"{model_or_spec.name!r} is subclassed")
        return model_or_spec
    raise UserError(f"profile() takes a tf_keras functional model or a ModelSpec, "
                    f"not {type(model_or_spec).__name__}")


def profile(model_or_spec):
    """Per-layer and total params / MACs / activation memory / flash of a model (nothing is run)."""
    model = _as_model(model_or_spec)
    order = _nodes_in_order(model)

    # Each Keras tensor maps to a "buffer": the TFLite tensor holding it after folding.
    buffer_of = {}           # id(KerasTensor) -> buffer id
    buffer_size = {}         # buffer id -> elements
    buffer_owner = {}        # buffer id -> op index that writes it (-1 for model inputs)
    consumers = {}           # id(KerasTensor) -> number of consuming nodes in the model
    consumer_layers = {}     # id(KerasTensor) -> consuming layers
    for layer, node in order:
        for t in node.keras_inputs:
            consumers[id(t)] = consumers.get(id(t), 0) + 1
            consumer_layers.setdefault(id(t), []).append(layer)

    ops = []                 # TFLite-level ops: dict(name, inputs=[buffer ids], output=[buffer ids])
    op_of_buffer = {}        # buffer id -> index into ops of the op that wrote it
    fused_relu = set()       # op indices that already carry a fused activation
    layer_rows = []
    weights_bytes = 0
    flash = 0
    const_tensors = 0
    next_buffer = [0]

    def new_buffer(t, owner):
        b = next_buffer[0]
        next_buffer[0] += 1
        buffer_of[id(t)] = b
        buffer_size[b] = _numel(_shape_list(t.shape))
        buffer_owner[b] = owner
        return b

    for t in model.inputs:
        new_buffer(t, -1)

    for layer, node in order:
        t = _type(layer)
        ins = list(node.keras_inputs)
        outs = list(tf.nest.flatten(node.outputs))
        in_shape = _shape_list(ins[0].shape) if ins else None
        out_shape = _shape_list(outs[0].shape) if outs else None
        if isinstance(layer, keras.layers.InputLayer):
            for o in outs:
                if id(o) not in buffer_of:
                    new_buffer(o, -1)
            continue
        params = layer.count_params() if layer.built else 0
        if isinstance(layer, keras.Model):
            macs = profile(layer).macs if getattr(layer, "_is_graph_network", False) else 0
        else:
            macs = _macs(layer, in_shape, out_shape) if in_shape is not None else 0
        row = LayerProfile(name=layer.name, type=t, input_shape=in_shape, output_shape=out_shape,
                           params=int(params), macs=int(macs),
                           output_bytes=sum(_numel(_shape_list(o.shape)) for o in outs))
        layer_rows.append(row)

        in_bufs = [buffer_of[id(x)] for x in ins if id(x) in buffer_of]
        producer = op_of_buffer.get(in_bufs[0]) if len(in_bufs) == 1 else None
        single_use = len(ins) == 1 and consumers.get(id(ins[0]), 0) == 1
        fold_host = None
        if producer is not None and single_use:
            host_type = ops[producer]["type"]
            if t == "BatchNormalization" and host_type in _BN_HOSTS \
                    and not ops[producer]["has_bn"] and producer not in fused_relu:
                fold_host = producer
                ops[producer]["has_bn"] = True
            elif _is_relu(layer) and host_type in _RELU_HOSTS and producer not in fused_relu \
                    and not ops[producer]["own_act"]:
                fold_host = producer
                fused_relu.add(producer)
        if t == "ZeroPadding2D" and _pad_folds_into_consumer(layer, outs[0], consumer_layers,
                                                             consumers):
            buffer_of[id(outs[0])] = in_bufs[0]
            row.fused_into = consumer_layers[id(outs[0])][0].name
            continue
        if t in _IDENTITY or (t == "Activation" and layer.get_config().get("activation") == "linear"):
            for o in outs:
                buffer_of[id(o)] = in_bufs[0]
            row.fused_into = "(identity)"
            continue
        if fold_host is not None:
            buffer_of[id(outs[0])] = in_bufs[0]
            row.fused_into = ops[fold_host]["name"]
            continue

        idx = len(ops)
        op = dict(name=layer.name, type=t, inputs=in_bufs, outputs=[], has_bn=False,
                  own_act=_has_own_activation(layer))
        for o in outs:
            b = new_buffer(o, idx)
            op["outputs"].append(b)
            op_of_buffer[b] = idx
        ops.append(op)
        act = getattr(getattr(layer, "activation", None), "__name__", "linear")
        if t in _WEIGHT_OPS and op["own_act"] and act not in _FUSABLE_ACTIVATIONS \
                and len(outs) == 1:
            # e.g. Dense(activation="softmax"): TFLite runs FULLY_CONNECTED then SOFTMAX
            pre = op["outputs"][0]
            buffer_owner[pre] = idx
            post = new_buffer(outs[0], idx + 1)
            ops.append(dict(name=f"{layer.name}/{act}", type=act, inputs=[pre], outputs=[post],
                            has_bn=True, own_act=True))
            op_of_buffer[post] = idx + 1
            buffer_of[id(outs[0])] = post
            buffer_size[pre] = buffer_size[post]
        if params or t == "BatchNormalization":
            fb, nconst = _weight_flash(layer)
            flash += fb
            const_tensors += nconst
            if t in ("SeparableConv1D", "SeparableConv2D"):
                weights_bytes += int(layer.depthwise_kernel.shape.num_elements()
                                     + layer.pointwise_kernel.shape.num_elements())
            elif t in _WEIGHT_OPS:
                weights_bytes += int(_kernel(layer).shape.num_elements())

    # Liveness over the op sequence.
    last_use = {}
    for i, op in enumerate(ops):
        for b in op["inputs"]:
            last_use[b] = max(last_use.get(b, -1), i)
    for t in model.outputs:
        last_use[buffer_of[id(t)]] = len(ops)
    peak, peak_at = 0, "-"
    for i, op in enumerate(ops):
        live = sum(size for b, size in buffer_size.items()
                   if buffer_owner[b] <= i and last_use.get(b, buffer_owner[b]) >= i)
        if live > peak:
            peak, peak_at = live, op["name"]
    if not ops:   # an identity model: its input is its output
        peak = sum(buffer_size[buffer_of[id(t)]] for t in model.inputs)

    n_tensors = len(buffer_size) + const_tensors
    flash += n_tensors * TENSOR_OVERHEAD_BYTES + len(ops) * OP_OVERHEAD_BYTES

    return Profile(
        model=model.name, input_shape=_shape_list(model.inputs[0].shape),
        layers=layer_rows, params=int(model.count_params()),
        trainable_params=int(sum(w.shape.num_elements() for w in model.trainable_weights)),
        macs=int(sum(r.macs for r in layer_rows)), flash_bytes=int(flash),
        peak_activation_bytes=int(peak), peak_activation_bytes_float32=int(4 * peak),
        peak_at=peak_at, tflite_ops=len(ops), weight_bytes_int8=int(weights_bytes))


# The int8 op graph derived from a spec, and the TFLM arena / flash predicted from it (no conversion).
from tfmobile.analysis.int8 import (Int8Graph, int8_flash, int8_graph_counts,  # noqa: E402,F401
                                    int8_ops, planned_activation_bytes, tflm_arena)
