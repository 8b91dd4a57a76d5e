"""SqueezeNet 1.0 and 1.1 as data: fire-module tables decoded into per-block specs.

SqueezeNet 1.0 (Iandola et al., arXiv:1602.07360, Table 1) and 1.1 (the official SqueezeNet repo's
v1.1, as in torchvision): a conv stem, max-pools 3x3/2 (ceil mode), eight fire modules
``fire2..fire9`` (squeeze 1x1 -> ReLU -> expand 1x1 || expand 3x3 -> ReLU -> concat), and a
convolutional classifier: dropout -> 1x1 conv to ``classes`` -> ReLU -> global average pool ->
softmax. Convolutions have biases and no batch norm, as in the paper (1,248,424 parameters for 1.0).

``bypass`` (paper section 6): ``none``; ``simple`` adds the identity around every fire module whose
input and output channel counts are equal (fire3, 5, 7, 9 with the paper's widths); ``complex``
also adds a 1x1 convolution on the bypass of the remaining fire modules. Which fires add their
input is decided once, when the spec is made (the fire's ``use_residual``); an edit that breaks
those widths is refused by the spec check, never built without the bypass.

alpha (not in the paper) scales every fire module's squeeze/expand widths (rounded to multiples of
8); the stem keeps its width.
"""
import tfmobile  # noqa: F401  (legacy Keras)
from tf_keras import layers

from tfmobile.errors import UserError
from tfmobile.models import layers as L
from tfmobile.models.blocks import Fire, SqueezeClassifier, SqueezeMaxPool, SqueezeStem
from tfmobile.models.channels import IN, OUT, passthrough, segment_offsets, top_consumer
from tfmobile.models.kinds import BlockKind
from tfmobile.models.spec import ModelSpec

# (squeeze, expand1x1, expand3x3) for fire2..fire9 -- paper Table 1 / torchvision.
FIRES = [(16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
         (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]
# Where the max-pools go: after the stem, and after these fire modules.
POOL_AFTER = {"squeezenet1_0": ("fire4", "fire8"), "squeezenet1_1": ("fire3", "fire5")}
STEM = {"squeezenet1_0": (96, 7), "squeezenet1_1": (64, 3)}
MIN_SIZE = {"squeezenet1_0": 21, "squeezenet1_1": 17}   # as torchvision's min_size


def _scale(c, alpha):
    if alpha == 1.0:
        return c
    return max(8, int(c * alpha / 8 + 0.5) * 8)


def _spec(name, input_shape, alpha, classes, include_top, dropout, classifier_activation, pooling,
          bypass, bn_momentum):
    if min(input_shape[:2]) < MIN_SIZE[name]:
        raise UserError(f"input {input_shape[0]}x{input_shape[1]} is too small for {name}: "
                        f"the resolution must be at least {MIN_SIZE[name]}")
    stem_filters, stem_kernel = STEM[name]
    blocks = [SqueezeStem(name="conv1", filters=stem_filters, kernel=stem_kernel, stride=2),
              SqueezeMaxPool(name="pool1", pool=3, stride=2)]
    for i, (sq, e1, e3) in enumerate(FIRES):
        fire = f"fire{i + 2}"
        blocks.append(Fire(name=fire, squeeze=_scale(sq, alpha), expand1x1=_scale(e1, alpha),
                           expand3x3=_scale(e3, alpha), bypass=bypass))
        if fire in POOL_AFTER[name]:
            blocks.append(SqueezeMaxPool(name=f"pool_{fire}", pool=3, stride=2))
    blocks.append(SqueezeClassifier(name="classifier"))
    options = dict(bypass=bypass, alpha=alpha)
    if bn_momentum is not None:   # accepted for a uniform interface; SqueezeNet has no batch norm
        options["bn_momentum"] = bn_momentum
    return ModelSpec(family=name, name=f"{name}_{alpha:.2f}_{input_shape[0]}",
                     input_shape=input_shape, blocks=blocks, classes=classes,
                     include_top=include_top, dropout=dropout,
                     classifier_activation=classifier_activation, pooling=pooling, options=options)


def squeezenet1_0_spec(input_shape=None, alpha=1.0, classes=1000, include_top=True, dropout=0.5,
                       classifier_activation="softmax", pooling=None, bypass="none",
                       bn_momentum=None):
    return _spec("squeezenet1_0", input_shape, alpha, classes, include_top, dropout,
                 classifier_activation, pooling, bypass, bn_momentum)


def squeezenet1_1_spec(input_shape=None, alpha=1.0, classes=1000, include_top=True, dropout=0.5,
                       classifier_activation="softmax", pooling=None, bypass="none",
                       bn_momentum=None):
    return _spec("squeezenet1_1", input_shape, alpha, classes, include_top, dropout,
                 classifier_activation, pooling, bypass, bn_momentum)


def stem_block(x, block, spec):
    """Conv (valid padding, bias) -> ReLU, as the paper's conv1."""
    name = block.name
    if min(x.shape[1], x.shape[2]) < block.kernel:
        raise UserError(f"input is too small for {name}'s {block.kernel}x{block.kernel} kernel")
    x = layers.Conv2D(block.filters, block.kernel, strides=block.stride, padding="valid",
                      name=f"{name}_conv")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def maxpool_block(x, block, spec):
    """Max-pool with the reference (Caffe / torchvision ceil_mode) output size ceil((n-k)/s)+1.

    TFLite has no ceil mode; 'valid' gives that size when (n - k) divides by s, 'same' otherwise
    (for k=3, s=2 both are then ceil(n/2)), so the padding is chosen from the actual input size.
    """
    k, s = block.pool, block.stride
    h, w = x.shape[1], x.shape[2]

    def fits_valid(n):
        return n >= k and (n - k) % s == 0

    padding = "valid" if fits_valid(h) and fits_valid(w) else "same"
    return layers.MaxPooling2D(k, strides=s, padding=padding, name=f"{block.name}_maxpool")(x)


def fire_block(x, block, spec):
    """squeeze 1x1 -> ReLU -> [expand 1x1 -> ReLU, expand 3x3 -> ReLU] -> concat (+ bypass)."""
    name = block.name
    inputs = x
    s = layers.Conv2D(block.squeeze, 1, name=f"{name}_squeeze")(x)
    s = layers.ReLU(name=f"{name}_squeeze_relu")(s)
    e1 = layers.Conv2D(block.expand1x1, 1, name=f"{name}_expand1x1")(s)
    e1 = layers.ReLU(name=f"{name}_expand1x1_relu")(e1)
    e3 = layers.Conv2D(block.expand3x3, 3, padding="same", name=f"{name}_expand3x3")(s)
    e3 = layers.ReLU(name=f"{name}_expand3x3_relu")(e3)
    y = layers.Concatenate(name=f"{name}_concat")([e1, e3])
    if block.use_residual:   # the spec checked equal widths
        return layers.Add(name=f"{name}_bypass_add")([inputs, y])
    if block.bypass == "complex":
        b = layers.Conv2D(y.shape[-1], 1, name=f"{name}_bypass_conv")(inputs)
        return layers.Add(name=f"{name}_bypass_add")([b, y])
    return y


def classifier_block(x, block, spec):
    """dropout -> 1x1 conv to classes -> ReLU -> global average pool -> softmax (include_top)."""
    name = block.name
    if spec.include_top:
        if spec.dropout:
            x = layers.Dropout(spec.dropout, name=f"{name}_dropout")(x)
        x = layers.Conv2D(spec.classes, 1, name=f"{name}_conv")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        x = layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
        act = spec.classifier_activation
        return L.activation(x, f"{name}_{act}", act)
    return L.global_pool(x, spec.pooling, name)


# --- channel ties (tfmobile.models.channels): a fire's expand branches and the fires its
# identity bypass adds to shrink together --------------------------------------------------------
def stem_channels(w, b, segs):
    w.tie_input(segs, f"{b.name}_conv", IN)
    return [(w.conv_out(b.name, b.filters, "filters", f"{b.name}_conv"), b.filters)]


def fire_channels(w, b, segs):
    n = b.name
    w.tie_input(segs, f"{n}_squeeze", IN)
    squeeze = w.conv_out(f"{n}/squeeze", b.squeeze, "squeeze", f"{n}_squeeze")
    w.tie(squeeze, f"{n}_expand1x1", IN)
    w.tie(squeeze, f"{n}_expand3x3", IN)
    e1 = w.conv_out(f"{n}/expand1x1", b.expand1x1, "expand1x1", f"{n}_expand1x1")
    e3 = w.conv_out(f"{n}/expand3x3", b.expand3x3, "expand3x3", f"{n}_expand3x3")
    out = [(e1, b.expand1x1), (e3, b.expand3x3)]
    if b.use_residual:
        if [x for _, x in segs] == [b.expand1x1, b.expand3x3] and all(d is not None for d, _ in segs):
            return [(w.merge(d_in, d_out), x) for (d_in, x), (d_out, _) in zip(segs, out)]
        w.freeze(segs + out)      # the Add ties channels across the two branches
        return out
    if b.bypass == "complex":
        w.tie_input(segs, f"{n}_bypass_conv", IN)
        for draft, offset, _ in segment_offsets(out):
            w.tie(draft, f"{n}_bypass_conv", OUT, offset)
    return out


# --- int8 ops (tfmobile.analysis.Int8Graph) ---------------------------------------------------
def stem_int8(g, x, b, spec):
    return g.conv(x, b.filters, b.kernel, b.stride, "VALID", act="relu")


def maxpool_int8(g, x, b, spec):
    """The ceil-mode pool: 'valid' where the size divides, as ``maxpool_block`` picks."""
    fits = all(n >= b.pool and (n - b.pool) % b.stride == 0 for n in g.hw(x))
    return g.pool(x, "MAX_POOL_2D", b.pool, b.stride, "VALID" if fits else "SAME")


def fire_int8(g, x, b, spec):
    s = g.conv(x, b.squeeze, 1, padding="VALID", act="relu")
    e1 = g.conv(s, b.expand1x1, 1, padding="VALID", act="relu")
    e3 = g.conv(s, b.expand3x3, 3, padding="SAME", act="relu")
    y = g.concat([e1, e3])
    if b.use_residual:
        return g.add(x, y)
    if b.bypass == "complex":
        return g.add(g.conv(x, g.channels(y), 1, padding="VALID"), y)
    return y


def classifier_int8(g, x, b, spec):
    if not spec.include_top:
        return g.global_pool(x, spec.pooling) if spec.pooling else x
    x = g.conv(x, spec.classes, 1, padding="VALID", act="relu")
    return g.activation(g.global_pool(x), spec.classifier_activation)


KINDS = (
    BlockKind(SqueezeStem, stem_block, stem_channels, stem_int8),
    BlockKind(SqueezeMaxPool, maxpool_block, passthrough, maxpool_int8),
    BlockKind(Fire, fire_block, fire_channels, fire_int8),
    BlockKind(SqueezeClassifier, classifier_block, top_consumer("conv"), classifier_int8),
)
