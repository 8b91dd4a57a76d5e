"""Small building blocks shared by every family, written as functions of standard Keras layers.

tfmot wraps layers one at a time and NetAdapt edits them one at a time, so a block is a function
that composes Conv2D / DepthwiseConv2D / BatchNormalization / ReLU / Add / Multiply / ..., never an
opaque Layer subclass. The exceptions are the elementwise activations HardSwish and HardSigmoid
(Keras has no standard layer for them, and the expression x * relu6(x + 3) / 6 inside one layer is
what the TFLite converter fuses into a single HARD_SWISH op) and ShuffleNet V2's weightless
ChannelSlice; all three are listed in CUSTOM_OBJECTS.
"""
import tfmobile  # noqa: F401  (legacy Keras)
import tensorflow as tf
import tf_keras as keras
from tf_keras import layers

BN_EPSILON = 1e-3


def make_divisible(value, divisor=8, min_value=None):
    """Round a channel count to a multiple of ``divisor`` without losing more than 10 %.

    The rule of the MobileNet reference implementations; keeping it identical keeps our
    alpha-scaled widths equal to keras.applications'.
    """
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


@keras.utils.register_keras_serializable(package="tfmobile")
class HardSigmoid(layers.Layer):
    """relu6(x + 3) / 6: int8-friendly sigmoid (ADD, RELU6, MUL in TFLite)."""

    def call(self, inputs):
        return tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.utils.register_keras_serializable(package="tfmobile")
class HardSwish(layers.Layer):
    """x * relu6(x + 3) / 6; the converter fuses it into one HARD_SWISH op."""

    def call(self, inputs):
        return inputs * tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.utils.register_keras_serializable(package="tfmobile")
class ChannelSlice(layers.Layer):
    """``x[..., begin:begin + size]``: ShuffleNet V2's channel split (STRIDED_SLICE in TFLite).

    Keras has no layer that selects channels; this one is weightless and only slices, so its int8
    output keeps its input's quantization parameters.
    """

    def __init__(self, begin, size, **kwargs):
        super().__init__(**kwargs)
        self.begin = int(begin)
        self.size = int(size)

    def call(self, inputs):
        return inputs[..., self.begin:self.begin + self.size]

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape(shape[:-1] + [self.size])

    def get_config(self):
        config = super().get_config()
        config.update(begin=self.begin, size=self.size)
        return config


# Every custom layer of the zoo, for deserialization and compress's QuantizeConfigs.
CUSTOM_OBJECTS = {"HardSigmoid": HardSigmoid, "HardSwish": HardSwish, "ChannelSlice": ChannelSlice}


def activation(x, name, kind):
    """Apply activation ``kind`` (relu, relu6, hard_swish, hard_sigmoid, sigmoid, None/linear)."""
    if kind in (None, "linear", "none"):
        return x
    if kind == "relu":
        return layers.ReLU(name=name)(x)
    if kind == "relu6":
        return layers.ReLU(6.0, name=name)(x)
    if kind == "hard_swish":
        return HardSwish(name=name)(x)
    if kind == "hard_sigmoid":
        return HardSigmoid(name=name)(x)
    if kind in ("sigmoid", "softmax", "tanh"):
        return layers.Activation(kind, name=name)(x)
    raise ValueError(f"unknown activation {kind!r}")


def global_pool(x, pooling, name):
    """keras.applications' ``pooling`` for include_top=False: None (feature map), 'avg' or 'max'."""
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name=f"{name}_maxpool")(x)
    return x


def conv_bn_act(x, filters, kernel, stride, name, act="relu6", groups=1, use_bias=False,
                bn_momentum=0.99, padding="same", bn=True):
    """Conv2D -> BatchNorm -> activation, the unit every family is made of.

    Layers: ``<name>_conv``, ``<name>_bn`` (unless ``bn=False``), ``<name>_<act>`` (unless act is None).
    """
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, groups=groups,
                      use_bias=use_bias, name=f"{name}_conv")(x)
    if bn:
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=bn_momentum, name=f"{name}_bn")(x)
    return activation(x, f"{name}_{act}", act)


def dw_bn_act(x, kernel, stride, name, act="relu6", bn_momentum=0.99, padding="same",
              depth_multiplier=1):
    """DepthwiseConv2D -> BatchNorm -> activation.

    Layers: ``<name>_dw``, ``<name>_dw_bn``, ``<name>_dw_<act>``.
    """
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False,
                               depth_multiplier=depth_multiplier, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=bn_momentum, name=f"{name}_dw_bn")(x)
    return activation(x, f"{name}_dw_{act}", act)


def squeeze_excite(x, squeeze, name, act="relu", gate="hard_sigmoid"):
    """Squeeze-and-excitation as in MobileNetV3: GAP -> 1x1 conv (bias) -> act -> 1x1 conv (bias)
    -> gate -> channel-wise Multiply with the input.

    Layers: ``<name>_pool``, ``<name>_squeeze``, ``<name>_<act>``, ``<name>_excite``,
    ``<name>_<gate>``, ``<name>_mul``. All are standard Keras layers except the HardSigmoid gate.
    """
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    s = layers.Conv2D(squeeze, 1, padding="same", use_bias=True, name=f"{name}_squeeze")(s)
    s = activation(s, f"{name}_{act}", act)
    s = layers.Conv2D(channels, 1, padding="same", use_bias=True, name=f"{name}_excite")(s)
    s = activation(s, f"{name}_{gate}", gate)
    return layers.Multiply(name=f"{name}_mul")([x, s])
