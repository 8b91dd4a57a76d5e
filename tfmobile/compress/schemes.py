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
from tensorflow_model_optimization.python.core.quantization.keras import (
    quantize_aware_activation as _qaa, utils as _qutils)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_layout_transform as _layout, default_8bit_transforms as _t8)
from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (
    model_transformer as _model_transformer, transforms as _transforms)

_qk = tfmot.quantization.keras


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
# squeeze conv of MobileNetV3). The transforms below do for Conv->ReLU what tfmot already does
# for Conv->BN->ReLU: the kernel keeps the registry's (per-channel) weight quantizer, the conv's
# own output quantizer is dropped (NoOpActivation), the ReLU quantizes the fused output.
class _KernelLayerReLUQuantize(_transforms.Transform):
    """Conv2D | DepthwiseConv2D | Dense (linear) -> ReLU: fake-quant the kernel, not the
    pre-ReLU output."""

    def pattern(self):
        return _transforms.LayerPattern(
            "ReLU", inputs=[_transforms.LayerPattern("Conv2D|DepthwiseConv2D|Dense",
                                                     config={"activation": "linear"})])

    def replacement(self, match_layer):
        kernel_node = match_layer.input_layers[0]
        if any(_t8._get_quantize_config(n) is not None for n in (match_layer, kernel_node)):
            return match_layer          # a user's own QuantizeConfig wins
        kernel_node.layer["config"]["activation"] = _qutils.serialize_activation(
            _qaa.NoOpActivation(), use_legacy_format=True)
        return match_layer

    def custom_objects(self):
        return {"NoOpActivation": _qaa.NoOpActivation}


class _KernelLayerReluActivationQuantize(_KernelLayerReLUQuantize):
    def pattern(self):
        return _transforms.LayerPattern(
            "Activation", config={"activation": "relu"},
            inputs=[_transforms.LayerPattern("Conv2D|DepthwiseConv2D|Dense",
                                             config={"activation": "linear"})])


class _AddReLUQuantize(_t8.LayerReLUQuantize):
    """tfmot's transform, kept for the case it was written for: Add -> ReLU."""

    def pattern(self):
        return _transforms.LayerPattern("ReLU", inputs=[_transforms.LayerPattern("Add")])


class _AddReluActivationQuantize(_t8.LayerReLUQuantize):
    def pattern(self):
        return _transforms.LayerPattern("Activation", config={"activation": "relu"},
                                        inputs=[_transforms.LayerPattern("Add")])


class _LayoutTransform(_layout.Default8BitQuantizeLayoutTransform):
    """tfmot 0.8's default 8-bit transform list, its LayerReLU pair split as above."""

    def apply(self, model, layer_quantize_map):
        transforms = [
            _t8.InputLayerQuantize(),
            _t8.SeparableConv1DQuantize(),
            _t8.SeparableConvQuantize(),
            _t8.Conv2DReshapeBatchNormReLUQuantize(),
            _t8.Conv2DReshapeBatchNormActivationQuantize(),
            _t8.Conv2DBatchNormReLUQuantize(),
            _t8.Conv2DBatchNormActivationQuantize(),
            _t8.Conv2DReshapeBatchNormQuantize(),
            _t8.Conv2DBatchNormQuantize(),
            _t8.ConcatTransform6Inputs(),
            _t8.ConcatTransform5Inputs(),
            _t8.ConcatTransform4Inputs(),
            _t8.ConcatTransform3Inputs(),
            _t8.ConcatTransform(),
            _t8.DenseBatchNormQuantize(),
            _t8.DenseBatchNormReLUQuantize(),
            _t8.DenseBatchNormActivationQuantize(),
            _KernelLayerReLUQuantize(),
            _KernelLayerReluActivationQuantize(),
            _AddReLUQuantize(),
            _AddReluActivationQuantize(),
        ]
        return _model_transformer.ModelTransformer(
            model, transforms, set(layer_quantize_map.keys()), layer_quantize_map).transform()


class QuantizeScheme(_qk.default_8bit.Default8BitQuantizeScheme):
    """tfmot's default 8-bit scheme with the Conv->ReLU kernel quantization fixed."""

    def get_layout_transformer(self):
        return _LayoutTransform()


class PrunePreserveQuantizeScheme(tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme):
    """tfmot's pruning-preserving scheme (collaborative optimisation), same layout fix."""

    def get_layout_transformer(self):
        return _LayoutTransform()
