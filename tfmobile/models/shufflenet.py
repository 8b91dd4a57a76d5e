"""ShuffleNet V1 and V2 as data: stage tables from the papers, decoded into per-unit block specs.

ShuffleNet V1 (Zhang et al., CVPR 2018, arXiv:1707.01083, Table 1): conv1 3x3/2 (24 channels),
max-pool 3x3/2, three stages of ShuffleNet units repeated 4 / 8 / 4 times (the first unit of each
stage has stride 2), global pool, FC. Stage output channels depend on the group count g:

    g = 1: 144, 288, 576    g = 2: 200, 400, 800    g = 3: 240, 480, 960
    g = 4: 272, 544, 1088   g = 8: 384, 768, 1536

The bottleneck (first 1x1) has a quarter of the unit's output channels. A unit is grouped 1x1 conv
-> channel shuffle -> 3x3 depthwise -> grouped 1x1 conv; stride-1 units add the identity, stride-2
units concatenate a 3x3/2 average-pooled shortcut (so their branch produces out - in channels). The
first 1x1 of stage 2 is not grouped (its input has only 24 channels). The scale factor ``alpha``
("ShuffleNet s x") multiplies every width (rounded to multiples the groups require).

ShuffleNet V2 (Ma et al., ECCV 2018, arXiv:1807.11164, Table 5): conv1 3x3/2 (24), max-pool 3x3/2,
stages of 4 / 8 / 4 units with output channels 48/96/192 (0.5x), 116/232/464 (1x), 176/352/704
(1.5x), 244/488/976 (2x), conv5 1x1 with 1024 channels (2048 for 2x), global pool, FC. A stride-1
unit splits the channels in half, runs 1x1 -> 3x3 depthwise -> 1x1 on one half, concatenates and
shuffles; a stride-2 unit feeds the whole input to both branches (the left one 3x3/2 depthwise ->
1x1 keeping the input width ``left``, the right one producing ``out - left``, as in the authors'
code, megvii-model/ShuffleNet-Series) and doubles the channels.

Every op is a standard Keras layer that converts to a TFLite builtin int8 op: the channel shuffle
is Reshape -> Permute -> Reshape (RESHAPE, TRANSPOSE, RESHAPE) and V2's channel split is
``ChannelSlice`` (a weightless layer, STRIDED_SLICE in TFLite, listed in layers.CUSTOM_OBJECTS).
"""
import tfmobile  # noqa: F401  (legacy Keras)
from tf_keras import layers

from tfmobile.errors import UserError
from tfmobile.models import layers as L
from tfmobile.models.blocks import (ShuffleClassifier, ShuffleConv, ShuffleMaxPool, ShuffleV1Unit,
                                    ShuffleV2Unit)
from tfmobile.models.channels import (CHAN, GROUPED_IN, IN, OUT, SHUFFLED_CHAN, passthrough,
                                      top_consumer)
from tfmobile.models.kinds import BlockKind
from tfmobile.models.layers import ChannelSlice
from tfmobile.models.spec import ModelSpec

V1_STAGE_CHANNELS = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}   # stage 2; stage 3/4 double each time
V1_REPEATS = (4, 8, 4)
V1_STEM = {0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}
V2_STAGE_CHANNELS = {0.5: (48, 96, 192), 1.0: (116, 232, 464), 1.5: (176, 352, 704),
                     2.0: (244, 488, 976)}
V2_REPEATS = (4, 8, 4)
DEFAULT_BN_MOMENTUM = 0.9   # short fine-tuning runs: eval-mode BN statistics must keep up


def _round_to(value, multiple):
    return max(multiple, int(value / multiple + 0.5) * multiple)


def _top_fields(classes, include_top, dropout, classifier_activation, pooling):
    return dict(classes=classes, include_top=include_top, dropout=dropout,
                classifier_activation=classifier_activation, pooling=pooling)


# --- spec functions (arguments checked by tfmobile.models.arguments) ---------------------------
def shufflenet_v1_spec(input_shape=None, alpha=1.0, classes=1000, include_top=True, dropout=0.0,
                       classifier_activation="softmax", pooling=None,
                       bn_momentum=DEFAULT_BN_MOMENTUM, groups=3):
    g = groups
    # conv1 width of the official code (12/24/24/48 for 0.5/1/1.5/2x), rounded so that the first
    # stride-2 branch (out - in channels, grouped) divides by g.
    stem = _round_to(V1_STEM.get(alpha, 24 * alpha), g)
    blocks = [ShuffleConv(name="conv1", filters=stem, kernel=3, stride=2),
              ShuffleMaxPool(name="pool1", pool=3, stride=2)]
    for s, repeats in enumerate(V1_REPEATS):
        out = _round_to(V1_STAGE_CHANNELS[g] * (2 ** s) * alpha, 4 * g)
        for i in range(repeats):
            blocks.append(ShuffleV1Unit(
                name=f"stage{s + 2}_unit{i + 1}", mid=out // 4, out=out, groups=g,
                first_groups=1 if (s == 0 and i == 0) else g, stride=2 if i == 0 else 1))
    blocks.append(ShuffleClassifier(name="classifier"))
    return ModelSpec(
        family="shufflenet_v1", name=f"shufflenet_v1_g{g}_{alpha:.2f}_{input_shape[0]}",
        input_shape=input_shape, blocks=blocks,
        options=dict(groups=g, alpha=alpha, bn_momentum=bn_momentum),
        **_top_fields(classes, include_top, dropout, classifier_activation, pooling))


def shufflenet_v2_spec(input_shape=None, alpha=1.0, classes=1000, include_top=True, dropout=0.0,
                       classifier_activation="softmax", pooling=None,
                       bn_momentum=DEFAULT_BN_MOMENTUM):
    if alpha in V2_STAGE_CHANNELS:
        stages = V2_STAGE_CHANNELS[alpha]
    else:   # not in the paper: scale the 1x widths, even per half so the split is exact
        stages = tuple(_round_to(c * alpha, 4) for c in V2_STAGE_CHANNELS[1.0])
    conv5 = 2048 if alpha >= 2.0 else 1024
    blocks = [ShuffleConv(name="conv1", filters=24, kernel=3, stride=2),
              ShuffleMaxPool(name="pool1", pool=3, stride=2)]
    cin = 24
    for s, (out, repeats) in enumerate(zip(stages, V2_REPEATS)):
        for i in range(repeats):
            # the official code's stride-2 left branch keeps its input width
            blocks.append(ShuffleV2Unit(name=f"stage{s + 2}_unit{i + 1}", mid=out // 2, out=out,
                                        stride=2 if i == 0 else 1, left=cin if i == 0 else None))
            cin = out
    blocks.append(ShuffleConv(name="conv5", filters=conv5, kernel=1, stride=1))
    blocks.append(ShuffleClassifier(name="classifier"))
    return ModelSpec(
        family="shufflenet_v2", name=f"shufflenet_v2_{alpha:.2f}_{input_shape[0]}",
        input_shape=input_shape, blocks=blocks,
        options=dict(alpha=alpha, bn_momentum=bn_momentum),
        **_top_fields(classes, include_top, dropout, classifier_activation, pooling))


# --- block builders (fields and channel ties checked by the spec) ------------------------------
def _bn(x, name, spec):
    return layers.BatchNormalization(epsilon=L.BN_EPSILON,
                                     momentum=spec.options.get("bn_momentum", DEFAULT_BN_MOMENTUM),
                                     name=name)(x)


def channel_shuffle(x, groups, name):
    """Interleave ``groups`` channel groups: Reshape -> Permute -> Reshape (TFLite RESHAPE/TRANSPOSE)."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    if groups <= 1:
        return x
    if c % groups:
        raise UserError(f"{name}: {c} channels cannot be shuffled in {groups} groups")
    x = layers.Reshape((h, w, groups, c // groups), name=f"{name}_reshape1")(x)
    x = layers.Permute((1, 2, 4, 3), name=f"{name}_transpose")(x)
    return layers.Reshape((h, w, c), name=f"{name}_reshape2")(x)


def conv_block(x, block, spec):
    """Conv -> BN -> ReLU (conv1, and V2's conv5)."""
    name = block.name
    x = layers.Conv2D(block.filters, block.kernel, strides=block.stride, padding="same",
                      use_bias=False, name=f"{name}_conv")(x)
    x = _bn(x, f"{name}_bn", spec)
    return layers.ReLU(name=f"{name}_relu")(x)


def maxpool_block(x, block, spec):
    return layers.MaxPooling2D(block.pool, strides=block.stride, padding="same",
                               name=f"{block.name}_maxpool")(x)


def v1_unit(x, block, spec):
    """Grouped 1x1 -> shuffle -> 3x3 depthwise -> grouped 1x1; add (use_residual) or concat avg-pool (2)."""
    name, stride = block.name, block.stride
    shortcut = x
    y = layers.Conv2D(block.mid, 1, groups=block.first_groups, use_bias=False,
                      name=f"{name}_gconv1")(x)
    y = _bn(y, f"{name}_gconv1_bn", spec)
    y = layers.ReLU(name=f"{name}_gconv1_relu")(y)
    if block.first_groups > 1:
        y = channel_shuffle(y, block.first_groups, f"{name}_shuffle")
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                               name=f"{name}_dw")(y)
    y = _bn(y, f"{name}_dw_bn", spec)
    y = layers.Conv2D(block.branch_out(x.shape[-1]), 1, groups=block.groups, use_bias=False,
                      name=f"{name}_gconv2")(y)
    y = _bn(y, f"{name}_gconv2_bn", spec)
    if stride == 2:
        # ReLU(concat(avgpool(x), y)) = concat(avgpool(x), ReLU(y)): x is a ReLU output, so its average is
        # too. On the branch the ReLU fuses into the 1x1 conv; after the concat it is an int8 RELU that
        # XNNPACK does not take (with the partitions around it 46 % of an int8 V1 at 128 px, docs/netadapt_results.md).
        shortcut = layers.AveragePooling2D(3, strides=stride, padding="same",
                                           name=f"{name}_shortcut_avgpool")(shortcut)
        y = layers.ReLU(name=f"{name}_gconv2_relu")(y)
        return layers.Concatenate(name=f"{name}_concat")([shortcut, y])
    if block.use_residual:
        y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_relu")(y)


def v2_unit(x, block, spec):
    """Channel split (stride 1) or two stride-2 branches, 1x1 -> 3x3 dw -> 1x1, concat, shuffle."""
    name, stride, out, mid = block.name, block.stride, block.out, block.mid
    cin = x.shape[-1]
    left_out = block.left_width(cin)
    if stride == 1:
        left = ChannelSlice(0, left_out, name=f"{name}_split_left")(x)
        right_in = ChannelSlice(left_out, cin - left_out, name=f"{name}_split_right")(x)
    else:
        left = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                      name=f"{name}_left_dw")(x)
        left = _bn(left, f"{name}_left_dw_bn", spec)
        left = layers.Conv2D(left_out, 1, use_bias=False, name=f"{name}_left_conv")(left)
        left = _bn(left, f"{name}_left_conv_bn", spec)
        left = layers.ReLU(name=f"{name}_left_relu")(left)
        right_in = x
    y = layers.Conv2D(mid, 1, use_bias=False, name=f"{name}_conv1")(right_in)
    y = _bn(y, f"{name}_conv1_bn", spec)
    y = layers.ReLU(name=f"{name}_conv1_relu")(y)
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                               name=f"{name}_dw")(y)
    y = _bn(y, f"{name}_dw_bn", spec)
    y = layers.Conv2D(out - left_out, 1, use_bias=False, name=f"{name}_conv2")(y)
    y = _bn(y, f"{name}_conv2_bn", spec)
    y = layers.ReLU(name=f"{name}_conv2_relu")(y)
    y = layers.Concatenate(name=f"{name}_concat")([left, y])
    return channel_shuffle(y, 2, f"{name}_shuffle")


def classifier_block(x, block, spec):
    """Global pool -> dropout -> FC -> activation (include_top), else the keras-style ``pooling``."""
    name = block.name
    if spec.include_top:
        x = layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
        if spec.dropout:
            x = layers.Dropout(spec.dropout, name=f"{name}_dropout")(x)
        x = layers.Dense(spec.classes, name=f"{name}_fc")(x)
        act = spec.classifier_activation
        return L.activation(x, f"{name}_{act}", act)
    return L.global_pool(x, spec.pooling, name)


# --- channel ties (tfmobile.models.channels): a stage's units share their branch width ------
def conv_channels(w, b, segs):
    w.tie_input(segs, f"{b.name}_conv", IN)
    return [(w.conv_out(b.name, b.filters, "filters", f"{b.name}_conv", f"{b.name}_bn"), b.filters)]


def v1_unit_channels(w, b, segs):
    w.freeze(segs)    # grouped input, and added to or concatenated with the output
    n = b.name
    d, part = w.stage_mid(b, w.grouped_step(b.first_groups, b.groups))
    w.tie(d, f"{n}_gconv1", OUT, part=part, score=True)
    w.tie(d, f"{n}_gconv1_bn", CHAN, part=part)
    for layer in (f"{n}_dw", f"{n}_dw_bn"):
        w.tie(d, layer, SHUFFLED_CHAN, part=part)
    w.tie(d, f"{n}_gconv2", GROUPED_IN, part=part)
    d.shuffle.append((b.first_groups, b.groups))
    return [(None, b.out)]


def v2_unit_channels(w, b, segs):
    n = b.name
    if b.stride == 2:
        for layer in (f"{n}_left_dw", f"{n}_left_dw_bn"):
            w.tie_input(segs, layer, CHAN)
        w.tie_input(segs, f"{n}_left_conv", IN)
        w.tie_input(segs, f"{n}_conv1", IN)
        if b.left is None:
            w.freeze(segs)
    else:
        w.freeze(segs)    # split in half: the halves go different ways
    d, part = w.stage_mid(b)
    w.tie(d, f"{n}_conv1", OUT, part=part, score=True)
    for layer in (f"{n}_conv1_bn", f"{n}_dw", f"{n}_dw_bn"):
        w.tie(d, layer, CHAN, part=part)
    w.tie(d, f"{n}_conv2", IN, part=part)
    return [(None, b.out)]


# --- int8 ops (tfmobile.analysis.Int8Graph): a shuffle is RESHAPE/TRANSPOSE/RESHAPE, V2's split
# two STRIDED_SLICEs ------------------------------------------------------------------------------
def conv_int8(g, x, b, spec):
    return g.conv(x, b.filters, b.kernel, b.stride, act="relu")


def maxpool_int8(g, x, b, spec):
    return g.pool(x, "MAX_POOL_2D", b.pool, b.stride, "SAME")


def v1_unit_int8(g, x, b, spec):
    shortcut = x
    if b.stride == 2:   # the converter emits the shortcut pool first
        shortcut = g.pool(x, "AVERAGE_POOL_2D", 3, b.stride, "SAME")
    y = g.conv(x, b.mid, 1, padding="VALID", act="relu", groups=b.first_groups)
    y = g.shuffle(y, b.first_groups)
    y = g.depthwise(y, 3, b.stride)
    if b.stride == 2:   # the ReLU on the branch, fused (v1_unit)
        return g.concat([shortcut, g.conv(y, b.branch_out(g.channels(x)), 1, padding="VALID", act="relu",
                                          groups=b.groups)])
    y = g.conv(y, b.branch_out(g.channels(x)), 1, padding="VALID", groups=b.groups)
    if b.use_residual:
        y = g.add(shortcut, y)
    return g.activation(y, "relu")


def v2_unit_int8(g, x, b, spec):
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


def classifier_int8(g, x, b, spec):
    if not spec.include_top:
        return g.global_pool(x, spec.pooling) if spec.pooling else x
    x = g.dense(g.global_pool(x), spec.classes)
    return g.activation(x, spec.classifier_activation)


KINDS = (
    BlockKind(ShuffleConv, conv_block, conv_channels, conv_int8),
    BlockKind(ShuffleMaxPool, maxpool_block, passthrough, maxpool_int8),
    BlockKind(ShuffleV1Unit, v1_unit, v1_unit_channels, v1_unit_int8),
    BlockKind(ShuffleV2Unit, v2_unit, v2_unit_channels, v2_unit_int8),
    BlockKind(ShuffleClassifier, classifier_block, top_consumer("fc"), classifier_int8),
)
