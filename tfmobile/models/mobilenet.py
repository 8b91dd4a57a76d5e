"""MobileNet V1 / V2 / V3 as data: the papers' tables, decoded into ModelSpecs, built by generic blocks.

Zoo names: ``mbv1``, ``mbv2``, ``mbv3_small``, ``mbv3_large``. The spec functions take
keras.applications' arguments (input_shape, alpha, include_top, classes, dropout,
classifier_activation, pooling, bn_momentum; V1 depth_multiplier; V3 minimalistic,
include_preprocessing) and compute every width exactly as keras.applications does (same rounding,
same ``make_divisible``), so parameter counts match and a keras.applications weights file loads.

Blocks (every width in a spec is an ABSOLUTE channel count, after alpha and rounding):

- ``conv_bn``        stem / last 1x1 conv: Conv2D (+BN) (+act). Layers ``<name>_conv``, ``_bn``, ``_<act>``.
- ``dw_separable``   V1: 3x3 depthwise + BN + act, 1x1 pointwise + BN + act.
                     Layers ``<name>_dw``, ``_dw_bn``, ``_dw_relu6``, ``_pw_conv``, ``_pw_bn``, ``_pw_relu6``.
- ``inverted_residual`` V2/V3: optional 1x1 expansion (``expanded``: channels or null), kxk depthwise
                     with ``stride``, optional squeeze-excite (``se``: squeeze channels or null, hard-sigmoid
                     gate), linear 1x1 projection to ``filters``, residual Add when ``use_residual``
                     (derived for the zoo: stride 1 and input channels == ``filters``). Layers ``<name>_expand_conv/_bn/_<act>``, ``<name>_dw``,
                     ``_dw_bn``, ``_dw_<act>``, ``<name>_se_pool/_squeeze/_relu/_excite/_hard_sigmoid/_mul``,
                     ``<name>_project_conv``, ``_project_bn``, ``<name>_add``.
- ``rescale``        V3 ``include_preprocessing``: keras' Rescaling(1/127.5, -1) for [0, 255] inputs.
- ``classifier``     global pool -> [hidden 1x1 conv + act (V3)] -> [dropout] -> logits (1x1 conv or
                     Dense, as in the keras model so that its weights load) -> activation
                     (classes, dropout and activation are the spec's own fields).
- ``global_pool``    include_top=False with pooling="avg"/"max".

Stride-2 convolutions use padding="same". keras.applications pads explicitly (ZeroPadding2D then
"valid"); for the even feature maps of these networks at any even input size both give the same
padding, and "same" avoids extra PAD ops in TFLite. (For odd sizes V1 differs: keras pads (0,1)
always, "same" pads (1,1) for an odd input; our V1 then keeps the ceil(n/2) size like V2/V3.)
"""
import tfmobile  # noqa: F401  (legacy Keras)
from tf_keras import layers

from tfmobile.errors import UserError
from tfmobile.models import layers as L
from tfmobile.models.blocks import (Classifier, ConvBN, DwSeparable, GlobalPool, InvertedResidual,
                                    Rescale)
from tfmobile.models.channels import CHAN, IN, OUT, passthrough
from tfmobile.models.kinds import BlockKind
from tfmobile.models.spec import ModelSpec

# ----------------------------------------------------------------------------------------------
# The papers' tables (module-level data).
# ----------------------------------------------------------------------------------------------

# MobileNetV1 (Howard et al. 2017, Table 1): stem conv 3x3/2 with 32 filters, then 13
# depthwise-separable layers as (pointwise filters, depthwise stride).
V1_STEM = 32
V1_ROWS = [
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
]

# MobileNetV2 (Sandler et al. 2018, Table 2): t (expansion), c (output channels), n (repeats),
# s (stride of the first repeat). Stem conv 3x3/2 with 32, head 1x1 conv with 1280.
V2_STEM = 32
V2_ROWS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
V2_HEAD = 1280

# MobileNetV3 (Howard et al. 2019, Tables 1 and 2): k (depthwise kernel), exp (expansion size),
# out, SE, NL (HS = h-swish, RE = ReLU), s. Stem conv 3x3/2 with 16 (h-swish). The redesigned
# last stage: 1x1 conv to 6x the last block's width (960 / 576) with BN and h-swish, global
# pooling, then a 1x1 conv WITHOUT BN (1280 / 1024) with h-swish, then the 1x1 logits conv.
# "minimalistic" (keras.applications / the paper's appendix): every 5x5 -> 3x3, no SE, ReLU
# everywhere instead of h-swish.
V3_STEM = 16
V3_LARGE_ROWS = [
    # k, exp, out, SE,    NL,   s
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
]
V3_LARGE_LAST = 1280
V3_SMALL_ROWS = [
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
]
V3_SMALL_LAST = 1024
V3_SE_RATIO = 0.25
V3_HEAD_EXPANSION = 6

make_divisible = L.make_divisible


def _top_blocks(include_top, pooling, layer, hidden=None, hidden_act=None):
    if include_top:
        return [Classifier(name="top", pool="avg", hidden=hidden, hidden_act=hidden_act, layer=layer)]
    if pooling:
        return [GlobalPool(name="pool", mode=pooling)]
    return []


def _finish(name, tag, input_shape, blocks, include_top, classes, dropout, classifier_activation,
            pooling, options):
    return ModelSpec(family=name, name=f"{name}_{tag}_{input_shape[0]}", input_shape=input_shape,
                     blocks=blocks, classes=classes, include_top=include_top, dropout=dropout,
                     classifier_activation=classifier_activation, pooling=pooling, options=options)


# ----------------------------------------------------------------------------------------------
# Spec functions
# ----------------------------------------------------------------------------------------------

# Spec functions: arguments already checked by tfmobile.models.arguments; the signatures hold the
# family defaults (keras.applications': dropout 1e-3 / 0 / 0.2, BN momentum 0.99 / 0.999).
def mbv1_spec(input_shape=(224, 224, 3), alpha=1.0, include_top=True, classes=1000, dropout=1e-3,
              classifier_activation="softmax", pooling=None, bn_momentum=0.99, depth_multiplier=1):
    """MobileNetV1. Widths as keras.applications: int(c * alpha) (no rounding to 8)."""
    stem = int(V1_STEM * alpha)
    if stem < 1 or int(V1_ROWS[0][0] * alpha) < 1:
        raise UserError(f"alpha {alpha} is too small for mbv1: a layer would have 0 channels")
    blocks = [ConvBN(name="stem", filters=stem, kernel=3, stride=2, act="relu6")]
    for i, (c, s) in enumerate(V1_ROWS, start=1):
        blocks.append(DwSeparable(name=f"block_{i}", filters=int(c * alpha), kernel=3, stride=s,
                                  depth_multiplier=depth_multiplier, act="relu6"))
    blocks += _top_blocks(include_top, pooling, "conv")
    options = {"alpha": alpha, "bn_momentum": bn_momentum, "depth_multiplier": depth_multiplier}
    return _finish("mbv1", f"{alpha:.2f}", input_shape, blocks, include_top, classes, dropout,
                   classifier_activation, pooling, options)


def mbv2_spec(input_shape=(224, 224, 3), alpha=1.0, include_top=True, classes=1000, dropout=0.0,
              classifier_activation="softmax", pooling=None, bn_momentum=0.999):
    """MobileNetV2. Widths as keras.applications: make_divisible(int(c * alpha), 8); the
    expansion conv has t * (input channels); the head is 1280 unless alpha > 1."""
    in_ch = make_divisible(V2_STEM * alpha, 8)
    blocks = [ConvBN(name="stem", filters=in_ch, kernel=3, stride=2, act="relu6")]
    i = 0
    for t, c, n, s in V2_ROWS:
        out = make_divisible(int(c * alpha), 8)
        for r in range(n):
            blocks.append(InvertedResidual(name=f"block_{i}", expanded=None if i == 0 else t * in_ch,
                                           filters=out, kernel=3, stride=s if r == 0 else 1,
                                           se=None, act="relu6"))
            in_ch = out
            i += 1
    head = make_divisible(V2_HEAD * alpha, 8) if alpha > 1.0 else V2_HEAD
    blocks.append(ConvBN(name="head", filters=head, kernel=1, stride=1, act="relu6"))
    blocks += _top_blocks(include_top, pooling, "dense")
    options = {"alpha": alpha, "bn_momentum": bn_momentum}
    return _finish("mbv2", f"{alpha:.2f}", input_shape, blocks, include_top, classes, dropout,
                   classifier_activation, pooling, options)


def _mbv3_spec(name, rows, last, input_shape, alpha, include_top, classes, dropout,
               classifier_activation, pooling, bn_momentum, minimalistic, include_preprocessing):
    hs = "relu" if minimalistic else "hard_swish"
    blocks = []
    if include_preprocessing:
        blocks.append(Rescale(name="rescale", scale=1.0 / 127.5, offset=-1.0))
    blocks.append(ConvBN(name="stem", filters=V3_STEM, kernel=3, stride=2, act=hs))
    in_ch, in_paper = V3_STEM, V3_STEM
    for i, (k, exp, out, se, nl, s) in enumerate(rows):
        filters = make_divisible(out * alpha)
        # keras.applications (and the reference code) scale the expansion as a ratio of the
        # block's actual input: make_divisible(in * exp / in_paper); block 0 has no expansion conv.
        expanded = make_divisible(in_ch * (exp / in_paper)) if i else None
        dw_ch = expanded if expanded else in_ch
        use_se = se and not minimalistic
        blocks.append(InvertedResidual(
            name=f"block_{i}", expanded=expanded, filters=filters, kernel=3 if minimalistic else k,
            stride=s, se=make_divisible(dw_ch * V3_SE_RATIO) if use_se else None,
            act="relu" if nl == "RE" else hs))
        in_ch, in_paper = filters, out
    blocks.append(ConvBN(name="head", filters=make_divisible(in_ch * V3_HEAD_EXPANSION), kernel=1,
                         stride=1, act=hs))
    hidden = make_divisible(last * alpha) if alpha > 1.0 else last
    blocks += _top_blocks(include_top, pooling, "conv", hidden=hidden, hidden_act=hs)
    options = {"alpha": alpha, "bn_momentum": bn_momentum, "minimalistic": minimalistic,
               "include_preprocessing": include_preprocessing}
    tag = f"{alpha:.2f}" + ("_min" if minimalistic else "")
    return _finish(name, tag, input_shape, blocks, include_top, classes, dropout,
                   classifier_activation, pooling, options)


def mbv3_small_spec(input_shape=(224, 224, 3), alpha=1.0, include_top=True, classes=1000,
                    dropout=0.2, classifier_activation="softmax", pooling=None, bn_momentum=0.999,
                    minimalistic=False, include_preprocessing=False):
    """MobileNetV3-Small (keras.applications.MobileNetV3Small's widths and head)."""
    return _mbv3_spec("mbv3_small", V3_SMALL_ROWS, V3_SMALL_LAST, input_shape, alpha, include_top,
                      classes, dropout, classifier_activation, pooling, bn_momentum, minimalistic,
                      include_preprocessing)


def mbv3_large_spec(input_shape=(224, 224, 3), alpha=1.0, include_top=True, classes=1000,
                    dropout=0.2, classifier_activation="softmax", pooling=None, bn_momentum=0.999,
                    minimalistic=False, include_preprocessing=False):
    """MobileNetV3-Large (keras.applications.MobileNetV3Large's widths and head)."""
    return _mbv3_spec("mbv3_large", V3_LARGE_ROWS, V3_LARGE_LAST, input_shape, alpha, include_top,
                      classes, dropout, classifier_activation, pooling, bn_momentum, minimalistic,
                      include_preprocessing)


# ----------------------------------------------------------------------------------------------
# Block builders: builder(x, block, spec) -> tensor. Fields are checked by the spec (blocks.py).
# ----------------------------------------------------------------------------------------------

def _momentum(spec):
    return float(spec.options.get("bn_momentum", 0.99))


def conv_bn_block(x, block, spec):
    return L.conv_bn_act(x, block.filters, block.kernel, block.stride, block.name, act=block.act,
                         use_bias=block.bias, bn_momentum=_momentum(spec), bn=block.bn)


def dw_separable_block(x, block, spec):
    m = _momentum(spec)
    x = L.dw_bn_act(x, block.kernel, block.stride, block.name, act=block.act, bn_momentum=m,
                    depth_multiplier=block.depth_multiplier)
    return L.conv_bn_act(x, block.filters, 1, 1, f"{block.name}_pw", act=block.act, bn_momentum=m)


def inverted_residual_block(x, block, spec):
    name, m, act = block.name, _momentum(spec), block.act
    shortcut = x
    if block.expanded is not None:
        x = L.conv_bn_act(x, block.expanded, 1, 1, f"{name}_expand", act=act, bn_momentum=m)
    x = L.dw_bn_act(x, block.kernel, block.stride, name, act=act, bn_momentum=m)
    if block.se is not None:
        x = L.squeeze_excite(x, block.se, f"{name}_se")
    x = L.conv_bn_act(x, block.filters, 1, 1, f"{name}_project", act=None, bn_momentum=m)
    if block.use_residual:   # the spec checked stride 1 and equal widths
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def rescale_block(x, block, spec):
    return layers.Rescaling(scale=float(block.scale), offset=float(block.offset), name=block.name)(x)


def global_pool_block(x, block, spec):
    if block.mode == "avg":
        return layers.GlobalAveragePooling2D(name=f"{block.name}_avg")(x)
    return layers.GlobalMaxPooling2D(name=f"{block.name}_max")(x)


def classifier_block(x, block, spec):
    """Global pool -> [hidden 1x1 conv (bias, no BN) + act] -> [dropout] -> logits -> activation.

    ``layer`` "conv": 1x1 Conv2D logits on the kept 1x1 map, then a Flatten (V1, V3);
    "dense": Dense logits on the pooled vector (V2). keras.applications uses these same layers,
    which is what lets its weight files load. classes, dropout, activation: the spec's.
    """
    name = block.name
    keep = block.layer == "conv"
    if block.pool == "avg":
        x = layers.GlobalAveragePooling2D(keepdims=keep, name=f"{name}_pool")(x)
    else:
        x = layers.GlobalMaxPooling2D(keepdims=keep, name=f"{name}_pool")(x)
    if block.hidden is not None:
        x = L.conv_bn_act(x, block.hidden, 1, 1, f"{name}_hidden", act=block.hidden_act,
                          use_bias=True, bn=False)
    if spec.dropout > 0:
        x = layers.Dropout(spec.dropout, name=f"{name}_dropout")(x)
    if keep:
        x = layers.Conv2D(spec.classes, 1, padding="same", use_bias=True, name=f"{name}_logits")(x)
        # Flatten (a constant-shape RESHAPE in TFLite); Reshape((classes,)) would add
        # SHAPE/STRIDED_SLICE/PACK ops for the dynamic batch dimension.
        x = layers.Flatten(name=f"{name}_flatten")(x)
    else:
        x = layers.Dense(spec.classes, name=f"{name}_logits")(x)
    return L.activation(x, f"{name}_{spec.classifier_activation}", spec.classifier_activation)


# ----------------------------------------------------------------------------------------------
# Channel ties: channels(walker, block, segments) -> segments (tfmobile.models.channels).
# ----------------------------------------------------------------------------------------------

def conv_bn_channels(w, b, segs):
    w.tie_input(segs, f"{b.name}_conv", IN)
    return [(w.conv_out(b.name, b.filters, "filters", f"{b.name}_conv", b.bn and f"{b.name}_bn"),
             b.filters)]


def dw_separable_channels(w, b, segs):
    if b.depth_multiplier != 1:
        w.freeze(segs)
    for layer in (f"{b.name}_dw", f"{b.name}_dw_bn"):
        w.tie_input(segs, layer, CHAN)
    w.tie_input(segs, f"{b.name}_pw_conv", IN)
    return [(w.conv_out(b.name, b.filters, "filters", f"{b.name}_pw_conv", f"{b.name}_pw_bn"),
             b.filters)]


def inverted_residual_channels(w, b, segs):
    n = b.name
    mid = segs
    if b.expanded is not None:
        w.tie_input(segs, f"{n}_expand_conv", IN)
        mid = [(w.conv_out(f"{n}/expanded", b.expanded, "expanded", f"{n}_expand_conv",
                           f"{n}_expand_bn"), b.expanded)]
    for layer in (f"{n}_dw", f"{n}_dw_bn"):
        w.tie_input(mid, layer, CHAN)
    if b.se is not None:
        w.tie_input(mid, f"{n}_se_squeeze", IN)
        w.tie_input(mid, f"{n}_se_excite", OUT)      # the gate: sliced, not scored
        se = w.conv_out(f"{n}/se", b.se, "se", f"{n}_se_squeeze")
        w.tie(se, f"{n}_se_excite", IN)
    w.tie_input(mid, f"{n}_project_conv", IN)
    out = w.conv_out(n, b.filters, "filters", f"{n}_project_conv", f"{n}_project_bn")
    if not b.use_residual:
        return [(out, b.filters)]
    if len(segs) != 1 or segs[0][0] is None:
        w.freeze(segs + [(out, b.filters)])
        return segs
    return [(w.merge(segs[0][0], out), b.filters)]


def classifier_channels(w, b, segs):
    n = b.name
    if b.hidden is not None:
        w.tie_input(segs, f"{n}_hidden_conv", IN)
        segs = [(w.conv_out(f"{n}/hidden", b.hidden, "hidden", f"{n}_hidden_conv"), b.hidden)]
    w.tie_input(segs, f"{n}_logits", IN)
    return [(None, w.spec.classes)]


# ----------------------------------------------------------------------------------------------
# int8 ops: int8(graph, x, block, spec) -> tensor id (tfmobile.analysis.Int8Graph). Conv + BN +
# ReLU/ReLU6 is one CONV_2D with a fused activation; the SE gate's hard-sigmoid a CONV_2D with
# fused RELU6 and a MUL by a scalar; a keepdims global pool over a 1x1 map disappears.
# ----------------------------------------------------------------------------------------------

def conv_bn_int8(g, x, b, spec):
    return g.conv(x, b.filters, b.kernel, b.stride, act=b.act)


def dw_separable_int8(g, x, b, spec):
    x = g.depthwise(x, b.kernel, b.stride, b.act, b.depth_multiplier)
    return g.conv(x, b.filters, 1, act=b.act)


def inverted_residual_int8(g, x, b, spec):
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


def classifier_int8(g, x, b, spec):
    keep = b.layer == "conv"
    x = g.global_pool(x, b.pool, keepdims=keep)
    if b.hidden is not None:
        x = g.conv(x, b.hidden, 1, act=b.hidden_act)
    if keep:
        x = g.reshape(g.conv(x, spec.classes, 1), [1, spec.classes])
    else:
        x = g.dense(x, spec.classes)
    return g.activation(x, spec.classifier_activation)


def global_pool_int8(g, x, b, spec):
    return g.global_pool(x, b.mode)


KINDS = (
    BlockKind(ConvBN, conv_bn_block, conv_bn_channels, conv_bn_int8),
    BlockKind(DwSeparable, dw_separable_block, dw_separable_channels, dw_separable_int8),
    BlockKind(InvertedResidual, inverted_residual_block, inverted_residual_channels,
              inverted_residual_int8),
    BlockKind(Rescale, rescale_block, passthrough),
    BlockKind(GlobalPool, global_pool_block, passthrough, global_pool_int8),
    BlockKind(Classifier, classifier_block, classifier_channels, classifier_int8),
)
