"""tfmobile's QuantizeConfigs for the layers tfmot 0.8 does not cover, and tfmot's 8-bit schemes with
the Conv->ReLU layout fix. ``quantize_scope`` holds the custom objects a QAT model needs.

What tfmot 0.8's default 8-bit registry already covers, and what this module adds, is listed in
docs/compression.md. In short: tfmot quantizes Conv2D / DepthwiseConv2D / Dense (folding a following
BatchNorm), ReLU, Add, Concatenate, pooling, and passes Reshape / Permute / Flatten / Dropout /
ZeroPadding through. It has no entry for Multiply (the SE gate), Rescaling, tfmobile's HardSwish
and HardSigmoid, or any other custom layer; those get the QuantizeConfigs below, made only of
tfmot quantizers (no hand-written fake-quant ops).
"""
import contextlib

import tfmobile  # noqa: F401  (legacy Keras before TensorFlow)
import tf_keras as keras
import tensorflow_model_optimization as tfmot

_qk = tfmot.quantization.keras       # tfmot's public API only: an upgrade changes it visibly, not silently
_t8 = _qk.default_8bit.default_8bit_transforms
_patterns = _qk.graph_transformations.transforms
# The objects tfmot's own transforms use (public through their custom_objects()).
_TFMOT_OBJECTS = _t8.Conv2DBatchNormQuantize().custom_objects()
NoOpActivation = _TFMOT_OBJECTS["NoOpActivation"]
NoOpQuantizeConfig = _TFMOT_OBJECTS["NoOpQuantizeConfig"]


# --------------------------------------------------------------------------- QuantizeConfigs
@keras.utils.register_keras_serializable(package="tfmobile")
class OutputQuantizeConfig(_qk.QuantizeConfig):
    """A weightless elementwise layer whose output needs its own int8 range.

    Used for HardSwish (one HARD_SWISH op in TFLite), HardSigmoid, Multiply (the SE gate, MUL)
    and Rescaling. The quantizer is tfmot's
    MovingAverageQuantizer with the settings tfmot uses for activations (8 bit, per tensor,
    asymmetric), i.e. the same as its Default8BitOutputQuantizeConfig.
    """

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_qk.quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self):
        return {}


@keras.utils.register_keras_serializable(package="tfmobile")
class PassThroughQuantizeConfig(OutputQuantizeConfig):
    """A layer that only moves or selects values (channel split, shuffle): no new range.

    Its int8 output reuses the input's scale and zero point, as tfmot does for Reshape/Permute.
    """

    def get_output_quantizers(self, layer):
        return []


# Layer class name -> QuantizeConfig class for layers tfmot's default registry does not cover.
# A class is looked up by name so that zoo layers added later (tfmobile.models.layers) only need
# an entry here. Anything not in tfmot's registry and not in this table is refused with its name.
LAYER_CONFIGS = {
    "HardSwish": OutputQuantizeConfig,
    "HardSigmoid": OutputQuantizeConfig,
    "Multiply": OutputQuantizeConfig,
    "Rescaling": OutputQuantizeConfig,
    "ChannelSlice": PassThroughQuantizeConfig,     # ShuffleNet V2 channel split (STRIDED_SLICE)
    "ChannelSplit": PassThroughQuantizeConfig,
    "ChannelShuffle": PassThroughQuantizeConfig,
    "Split": PassThroughQuantizeConfig,
}


def _custom_objects():
    from tfmobile.models import layers as zoo_layers
    objs = dict(zoo_layers.CUSTOM_OBJECTS)
    objs.update(OutputQuantizeConfig=OutputQuantizeConfig,
                PassThroughQuantizeConfig=PassThroughQuantizeConfig)
    return objs


@contextlib.contextmanager
def quantize_scope():
    """Custom objects needed to clone / deserialize a QAT or PQAT model (zoo layers + configs)."""
    with _qk.quantize_scope(_custom_objects()):
        yield


# --------------------------------------------------------------------------- layout transform
# tfmot 0.8's LayerReLUQuantize gives a Conv2D / DepthwiseConv2D / Dense that feeds a ReLU with no
# BatchNorm in between a NoOpQuantizeConfig: the ReLU output gets its fake-quant, but the kernel
# gets none, so QAT never sees the int8 rounding of those weights (SqueezeNet's convs, the SE
# squeeze conv of MobileNetV3). tfmot's whole default transform list runs unchanged; then one
# pass undoes that entry's effect on kernel layers only and does for Conv->ReLU what tfmot already
# does for Conv->BN->ReLU: the kernel keeps the registry's (per-channel) weight quantizer, the conv's
# own output quantizer is dropped (NoOpActivation), the ReLU quantizes the fused output. Add -> ReLU
# keeps tfmot's handling.
_KERNEL_LAYERS = "Conv2D|DepthwiseConv2D|Dense"


def _quantize_config(node):
    return node.metadata.get("quantize_config")


class _KernelLayerReLUQuantize(_patterns.Transform):
    """Conv2D | DepthwiseConv2D | Dense -> ReLU after tfmot's LayerReLUQuantize: the kernel layer
    gets back the config it had before (the registry's unless the user gave one), and when neither
    layer has a config of its own and the kernel layer is linear, its output is not fake-quantized."""

    def __init__(self, configs_before):
        self.configs_before = configs_before    # layer name -> quantize_config before tfmot's transforms

    def pattern(self):
        return _patterns.LayerPattern("ReLU", inputs=[_patterns.LayerPattern(_KERNEL_LAYERS)])

    def replacement(self, match_layer):
        kernel_node = match_layer.input_layers[0]
        if not isinstance(_quantize_config(kernel_node), NoOpQuantizeConfig):
            return match_layer          # not what LayerReLUQuantize left (or already done)
        before = self.configs_before.get(kernel_node.layer["config"]["name"])
        kernel_node.metadata["quantize_config"] = before
        if before is None and _quantize_config(match_layer) is None \
                and kernel_node.layer["config"].get("activation") == "linear":
            kernel_node.layer["config"]["activation"] = keras.activations.serialize(
                NoOpActivation(), use_legacy_format=True)
        return match_layer

    def custom_objects(self):
        return dict(_TFMOT_OBJECTS)


class _KernelLayerReluActivationQuantize(_KernelLayerReLUQuantize):
    def pattern(self):
        return _patterns.LayerPattern("Activation", config={"activation": "relu"},
                                      inputs=[_patterns.LayerPattern(_KERNEL_LAYERS)])


class _LayoutTransform(_qk.default_8bit.Default8BitQuantizeLayoutTransform):
    """tfmot's default 8-bit layout transform, then the Conv->ReLU kernel fix above."""

    def apply(self, model, layer_quantize_map):
        configs_before = {name: entry.get("quantize_config") for name, entry in layer_quantize_map.items()}
        model, layer_quantize_map = super().apply(model, layer_quantize_map)
        fixes = [_KernelLayerReLUQuantize(configs_before), _KernelLayerReluActivationQuantize(configs_before)]
        return _qk.graph_transformations.model_transformer.ModelTransformer(
            model, fixes, set(configs_before), layer_quantize_map).transform()


class QuantizeScheme(_qk.default_8bit.Default8BitQuantizeScheme):
    """tfmot's default 8-bit scheme with the Conv->ReLU kernel quantization fixed."""

    def get_layout_transformer(self):
        return _LayoutTransform()


class PrunePreserveQuantizeScheme(tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme):
    """tfmot's pruning-preserving scheme (collaborative optimisation), same layout fix."""

    def get_layout_transformer(self):
        return _LayoutTransform()
