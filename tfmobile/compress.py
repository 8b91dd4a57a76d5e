"""Compression with tfmot: quantization-aware training (QAT), magnitude pruning, 2:4 structured
sparsity and pruning-preserving QAT (PQAT), plus the size / sparsity measurements around them.

    from tfmobile import compress
    q = compress.qat(model)                               # fake-quant model, train a few epochs
    p = compress.prune(model, 0.5, begin_step=0, end_step=steps)
    p.fit(..., callbacks=compress.pruning_callbacks())
    s = compress.strip(p)                                 # plain Keras model with zeros in it
    pq = compress.pqat(s)                                 # QAT that keeps those zeros
    compress.sparsity_report(s); compress.tflite_sparsity(tflite_bytes); compress.gzip_size(path)

What tfmot 0.8's default 8-bit registry already covers, and what this module adds, is listed in
docs/compression.md. In short: tfmot quantizes Conv2D / DepthwiseConv2D / Dense (folding a following
BatchNorm), ReLU, Add, Concatenate, pooling, and passes Reshape / Permute / Flatten / Dropout /
ZeroPadding through. It has no entry for Multiply (the SE gate), Rescaling, tfmobile's HardSwish
and HardSigmoid, or any other custom layer; those get the QuantizeConfigs below, made only of
tfmot quantizers (no hand-written fake-quant ops).
"""
import contextlib
import gzip
import os

import tfmobile  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras import (
    quantize_aware_activation as _qaa, utils as _qutils)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_layout_transform as _layout, default_8bit_transforms as _t8)
from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (
    model_transformer as _model_transformer, transforms as _transforms)

from tfmobile.errors import UserError

_qk = tfmot.quantization.keras
_sk = tfmot.sparsity.keras

COMPRESSIONS = (None, "qat", "prune", "pqat")


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


# --------------------------------------------------------------------------- helpers
def _keep_spec(src, dst):
    from tfmobile import models
    spec = models.spec_of(src)
    if spec is not None:
        models.attach_spec(dst, spec)
    return dst


def _check_model(model, what):
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise UserError(f"{what} needs a functional tf_keras.Model (tfmobile.models.build), "
                        f"got {type(model).__name__}")


def _is_wrapped(model, wrapper_cls):
    return any(isinstance(layer, wrapper_cls) for layer in model.layers)


def _quantize_wrapper_cls():
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import (
        QuantizeWrapper)
    return QuantizeWrapper


_BN_TYPES = (keras.layers.BatchNormalization,)


def _copy_weights_by_name(src_model, dst_model):
    """Copy each layer's weights into the same-named layer (looking inside wrappers)."""
    by_name = {layer.name: layer for layer in src_model.layers}
    for dst in dst_model.layers:
        inner = dst.layer if isinstance(getattr(dst, "layer", None), keras.layers.Layer) else dst
        src = by_name.get(inner.name)
        if src is not None and src.weights:
            inner.set_weights(src.get_weights())


def _annotate(model):
    """Clone ``model`` with every layer annotated: tfmot's registry where it covers the layer,
    a tfmobile QuantizeConfig where it does not; unknown layers are refused by name."""
    registry = _qk.default_8bit.Default8BitQuantizeRegistry()
    unsupported = []

    def annotate(layer):
        layer = layer.__class__.from_config(layer.get_config())   # a copy: leave the caller's model alone
        cfg = LAYER_CONFIGS.get(type(layer).__name__)
        if cfg is not None and not registry.supports(layer):
            return _qk.quantize_annotate_layer(layer, quantize_config=cfg())
        if not registry.supports(layer) and not isinstance(layer, _BN_TYPES):
            unsupported.append(f"{layer.name} ({type(layer).__name__})")
        # No config: tfmot's registry / layout transforms decide (BatchNorm after a conv or a
        # Dense is folded by the transforms, so it must not carry a custom config).
        return _qk.quantize_annotate_layer(layer)

    with quantize_scope():
        annotated = keras.models.clone_model(model, clone_function=annotate)
    if unsupported:
        raise UserError("cannot quantize layers with no tfmot or tfmobile QuantizeConfig: "
                        + ", ".join(unsupported))
    _copy_weights_by_name(model, annotated)
    return annotated


# --------------------------------------------------------------------------- QAT / PQAT
def qat(model):
    """A QAT copy of ``model`` (float weights copied) ready to fine-tune, then convert to int8.

    tfmot's quantize_apply with the default 8-bit scheme, after annotating layers the default
    registry does not know with tfmobile's QuantizeConfigs.
    """
    _check_model(model, "qat()")
    if _is_wrapped(model, _quantize_wrapper_cls()):
        raise UserError("model is already quantization-aware")
    if _is_wrapped(model, _prune_wrapper_cls()):
        raise UserError("strip pruning wrappers (compress.strip) before QAT; use pqat() for "
                        "sparsity-preserving QAT")
    annotated = _annotate(model)
    with quantize_scope():
        q = _apply(annotated, QuantizeScheme())
    return _keep_spec(model, q)


def _apply(annotated, scheme):
    try:
        return _qk.quantize_apply(annotated, scheme)
    except RuntimeError as e:
        # tfmot: "Layer NAME:<class> is not supported..." (e.g. a BatchNorm not after a conv)
        raise UserError(f"cannot quantize: {str(e).splitlines()[0]}") from None


def pqat(pruned_stripped_model):
    """Pruning-preserving QAT (tfmot collaborative optimisation): the zeros of a pruned, stripped
    model stay exactly zero in the fake-quantized (and hence the int8) weights."""
    model = pruned_stripped_model
    _check_model(model, "pqat()")
    if _is_wrapped(model, _prune_wrapper_cls()):
        raise UserError("pqat() needs a stripped model: call compress.strip(model) first")
    if _is_wrapped(model, _quantize_wrapper_cls()):
        raise UserError("model is already quantization-aware")
    annotated = _annotate(model)
    scheme = PrunePreserveQuantizeScheme()
    with quantize_scope():
        q = _apply(annotated, scheme)
    return _keep_spec(model, q)


# --------------------------------------------------------------------------- pruning
def _prune_wrapper_cls():
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (
        PruneLowMagnitude)
    return PruneLowMagnitude


def prunable_layers(model, structured_2_4=False):
    """Names of the layers ``prune`` wraps.

    Conv2D and Dense kernels are pruned. Skipped: DepthwiseConv2D (tfmot's prune registry lists no
    prunable weight for it, and its 3x3xC kernels are a few % of the parameters yet sensitive), and
    the stem conv whose kernel sees <= 4 input channels (the image: tiny, accuracy-critical).
    2:4 sparsity works on the input-channel axis (TFLite's innermost), so the same set applies.
    """
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            continue
        if isinstance(layer, keras.layers.Conv2D):
            if int(layer.kernel.shape[-2]) <= 4:
                continue
            names.append(layer.name)
        elif isinstance(layer, keras.layers.Dense):
            names.append(layer.name)
    return names


def _frequency(span):
    # A pruning step must land exactly on end_step so the schedule reaches its final sparsity.
    f = max(1, min(100, span // 4 or 1))
    while span % f:
        f -= 1
    return f


def prune(model, target_sparsity, begin_step, end_step, structured_2_4=False,
          initial_sparsity=0.0):
    """Wrap the prunable layers (see ``prunable_layers``) in tfmot's prune_low_magnitude.

    Unstructured: PolynomialDecay (power 3) from ``initial_sparsity`` at ``begin_step`` to
    ``target_sparsity`` at ``end_step`` (training steps, i.e. batches). structured_2_4: tfmot's
    sparsity_m_by_n=(2, 4), two zeros in every four consecutive input-channel weights; the layer
    sparsity is then exactly 50 % whatever ``target_sparsity`` says. Train with
    ``pruning_callbacks()``, then ``strip``.
    """
    _check_model(model, "prune()")
    try:
        target_sparsity = float(target_sparsity)
    except (TypeError, ValueError):
        raise UserError(f"target sparsity must be a number in [0, 1), got {target_sparsity!r}") from None
    if not 0.0 <= target_sparsity < 1.0:
        raise UserError(f"target sparsity must be in [0, 1), got {target_sparsity}")
    if not 0.0 <= initial_sparsity <= target_sparsity:
        raise UserError(f"initial sparsity must be in [0, target], got {initial_sparsity}")
    if not (isinstance(begin_step, (int, np.integer)) and isinstance(end_step, (int, np.integer))):
        raise UserError("begin_step and end_step must be integers")
    if begin_step < 0 or end_step <= begin_step:
        raise UserError(f"need 0 <= begin_step < end_step, got {begin_step}, {end_step}")
    if _is_wrapped(model, _quantize_wrapper_cls()):
        raise UserError("prune the float model, then strip and use pqat()")
    if _is_wrapped(model, _prune_wrapper_cls()):
        raise UserError("model is already wrapped for pruning")
    span = int(end_step - begin_step)
    schedule = _sk.PolynomialDecay(initial_sparsity=float(initial_sparsity),
                                   final_sparsity=target_sparsity, begin_step=int(begin_step),
                                   end_step=int(end_step), power=3, frequency=_frequency(span))
    targets = set(prunable_layers(model, structured_2_4))
    if not targets:
        raise UserError("model has no prunable Conv2D/Dense layers")
    kwargs = {"pruning_schedule": schedule}
    if structured_2_4:
        kwargs["sparsity_m_by_n"] = (2, 4)

    def wrap(layer):
        copy = layer.__class__.from_config(layer.get_config())   # never wrap (and so prune) the
        if layer.name in targets:                                 # caller's own layer objects
            return _sk.prune_low_magnitude(copy, **kwargs)
        return copy

    with quantize_scope():
        pruned = keras.models.clone_model(model, clone_function=wrap)
    # Copy weights layer by layer (the wrappers add mask / threshold / step variables).
    _copy_weights_by_name(model, pruned)
    return _keep_spec(model, pruned)


class SparsityLog(keras.callbacks.Callback):
    """Appends ``sparsity_report`` (per layer, with the live masks) to ``log_dir/sparsity.jsonl``
    after every epoch: the pruning log that works without TensorBoard installed."""

    def __init__(self, log_dir):
        super().__init__()
        self.path = os.path.join(os.fspath(log_dir), "sparsity.jsonl")

    def on_epoch_end(self, epoch, logs=None):
        import json
        rep = sparsity_report(self.model)
        rep["epoch"] = int(epoch) + 1
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a") as f:   # one line per epoch, appended (a log, not an artifact)
            f.write(json.dumps(rep) + "\n")


def _tensorboard_installed():
    try:
        import tensorboard  # noqa: F401
        return True
    except ImportError:
        return False


def pruning_callbacks(log_dir=None):
    """Callbacks a pruning fit needs: UpdatePruningStep, and with ``log_dir`` a per-epoch
    ``sparsity.jsonl`` (SparsityLog) plus tfmot's PruningSummaries when TensorBoard is installed
    (tf.summary needs it; it is not a dependency of tfmobile)."""
    cbs = [_sk.UpdatePruningStep()]
    if log_dir:
        cbs.append(SparsityLog(log_dir))
        if _tensorboard_installed():
            cbs.append(_sk.PruningSummaries(log_dir=os.fspath(log_dir)))
    return cbs


def strip(model):
    """Remove pruning wrappers: a plain Keras model whose kernels hold the zeros."""
    _check_model(model, "strip()")
    with quantize_scope():
        stripped = _sk.strip_pruning(model)
    return _keep_spec(model, stripped)


def apply(model, compression):
    """Re-create the compression wrappers on a freshly built float model so that a checkpoint's
    ``weights.h5`` loads (``tfmobile.train.load_checkpoint``).

    ``None`` and ``"prune"`` return the model unchanged: a pruning checkpoint is saved after
    ``strip`` (its zeros are plain weights). ``"qat"`` / ``"pqat"`` return ``qat`` / ``pqat`` of it;
    the PQAT model's ``load_weights`` also refreshes its sparsity masks (``refresh_pqat_masks``).
    """
    if compression in (None, "", "none", "float"):
        return model
    if compression == "prune":
        return model
    if compression == "qat":
        return qat(model)
    if compression == "pqat":
        return _reloadable_pqat(pqat(model))
    raise UserError(f"unknown compression {compression!r}; known: qat, prune, pqat")


def refresh_pqat_masks(model):
    """Recompute PQAT's sparsity masks from the kernels the model holds now; returns how many.

    tfmot's PrunePreserve weight quantizer computes its mask (kernel != 0) once, when the wrapper
    is built. A PQAT model rebuilt for a checkpoint is built on fresh dense weights, so after
    ``load_weights`` its masks are all ones: inference is right (the loaded zeros are there) but
    further training would let the zeros grow back. ``apply(model, "pqat")`` calls this after
    every ``load_weights`` so a resumed PQAT run keeps its sparsity.
    """
    n = 0
    for layer in model.layers:
        for weight, _, qvars in getattr(layer, "_weight_vars", []):
            if isinstance(qvars, dict) and "sparsity_mask" in qvars:
                w = tf.convert_to_tensor(weight)
                qvars["sparsity_mask"] = tf.math.divide_no_nan(w, w)
                n += 1
    if n:
        # tf.functions traced before captured the old masks
        model.train_function = model.test_function = model.predict_function = None
    return n


def _reloadable_pqat(model):
    original = model.load_weights

    def load_weights(*args, **kwargs):
        status = original(*args, **kwargs)
        refresh_pqat_masks(model)
        return status

    model.load_weights = load_weights
    return model


# --------------------------------------------------------------------------- measurements
def _kernels(layer):
    """(inner layer, [(attr, variable)]) for the kernel that pruning / int8 matter for, looking
    through pruning / quantization wrappers (whose inner ``kernel`` attribute may be replaced by a
    fake-quantized tensor, so the variable is taken from the wrapper's weights)."""
    inner = layer
    while hasattr(inner, "layer") and isinstance(inner.layer, keras.layers.Layer):
        inner = inner.layer
    if isinstance(inner, keras.layers.DepthwiseConv2D):
        attr = "depthwise_kernel"
    elif isinstance(inner, (keras.layers.Conv2D, keras.layers.Dense)):
        attr = "kernel"
    else:
        return inner, []
    for w in layer.weights:
        if w.name.split("/")[-1].split(":")[0] == attr:
            return inner, [(attr, w)]
    return inner, []


def sparsity_report(model):
    """Per-layer and total fraction of exactly-zero weights in Conv2D / DepthwiseConv2D / Dense
    kernels (wrappers are looked through; a live pruning wrapper's mask is applied)."""
    layers_out = {}
    total = zeros = 0
    pruned_total = pruned_zeros = 0
    for layer in model.layers:
        inner, kernels = _kernels(layer)
        for attr, var in kernels:
            w = np.asarray(var.numpy())
            if isinstance(layer, _prune_wrapper_cls()):
                for weight, mask, _ in layer.pruning_vars:
                    if weight is var:
                        w = w * mask.numpy()
            n, z = int(w.size), int(np.sum(w == 0))
            pruned = isinstance(layer, _prune_wrapper_cls()) or z > 0
            layers_out[inner.name] = {"type": type(inner).__name__, "weight": attr, "params": n,
                                      "zeros": z, "sparsity": round(z / n, 4) if n else 0.0}
            total += n
            zeros += z
            if pruned:
                pruned_total += n
                pruned_zeros += z
    return {"layers": layers_out, "params": total, "zeros": zeros,
            "sparsity": round(zeros / total, 4) if total else 0.0,
            "sparse_layers_params": pruned_total,
            "sparse_layers_sparsity": round(pruned_zeros / pruned_total, 4) if pruned_total else 0.0}


def check_2_4(model):
    """Layers of ``model`` whose kernel does NOT hold 2 zeros in every 4 consecutive input-channel
    weights (TFLite layout: Conv2D [out, h, w, in], Dense [out, in]); [] when the pattern holds.
    A trailing group shorter than 4 (input channels not a multiple of 4) is checked for <= 2
    non-zeros."""
    bad = []
    for layer in model.layers:
        inner, kernels = _kernels(layer)
        if isinstance(inner, keras.layers.DepthwiseConv2D) or not kernels:
            continue
        w = np.asarray(kernels[0][1].numpy())
        if isinstance(inner, keras.layers.Conv2D):
            if int(w.shape[-2]) <= 4:
                continue
            rows = np.transpose(w, (3, 0, 1, 2)).reshape(-1, w.shape[2])
        else:
            rows = w.T
        if not _rows_are_2_4(rows):
            bad.append(inner.name)
    return bad


def _rows_are_2_4(rows):
    cin = rows.shape[1]
    pad = (-cin) % 4
    padded = np.pad(rows, ((0, 0), (0, pad)))
    groups = padded.reshape(rows.shape[0], -1, 4)
    return bool(np.all(np.sum(groups != 0, axis=-1) <= 2))


def gzip_size(path_or_bytes):
    """Bytes after gzip -9 of a file or a bytes object: how well its weights would compress."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
    else:
        path = os.fspath(path_or_bytes)
        if not os.path.isfile(path):
            raise UserError(f"no such file: {path}")
        with open(path, "rb") as f:
            data = f.read()
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def _interpreter(tflite):
    from ai_edge_litert.interpreter import Interpreter
    if isinstance(tflite, (bytes, bytearray)):
        it = Interpreter(model_content=bytes(tflite))
    else:
        path = os.fspath(tflite)
        if not os.path.isfile(path):
            raise UserError(f"no such file: {path}")
        it = Interpreter(model_path=path)
    it.allocate_tensors()
    return it


_WEIGHT_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1}


def tflite_sparsity(tflite):
    """Sparsity of the weight tensors inside a .tflite (bytes or path), read back through the
    LiteRT interpreter: per weight tensor and totals, with their dtype (int8 after QAT)."""
    it = _interpreter(tflite)
    details = {t["index"]: t for t in it.get_tensor_details()}
    tensors = {}
    for op in it._get_ops_details():
        pos = _WEIGHT_OPS.get(op["op_name"])
        if pos is None or len(op["inputs"]) <= pos:
            continue
        idx = int(op["inputs"][pos])
        if idx < 0 or idx in tensors:
            continue
        try:
            w = it.get_tensor(idx)
        except ValueError:
            continue
        d = details[idx]
        zp = d["quantization_parameters"]["zero_points"]
        zero = int(zp[0]) if len(zp) == 1 else 0      # per-channel weights are symmetric (zp 0)
        n, z = int(w.size), int(np.sum(w == zero))
        tensors[d["name"]] = {"op": op["op_name"], "dtype": np.dtype(w.dtype).name,
                              "shape": list(w.shape), "params": n, "zeros": z,
                              "sparsity": round(z / n, 4) if n else 0.0}
    total = sum(t["params"] for t in tensors.values())
    zeros = sum(t["zeros"] for t in tensors.values())
    conv_fc = [t for t in tensors.values() if t["op"] != "DEPTHWISE_CONV_2D"]
    ct = sum(t["params"] for t in conv_fc)
    cz = sum(t["zeros"] for t in conv_fc)
    return {"tensors": tensors, "params": total, "zeros": zeros,
            "sparsity": round(zeros / total, 4) if total else 0.0,
            "conv_fc_params": ct, "conv_fc_sparsity": round(cz / ct, 4) if ct else 0.0}


def float_ops(tflite, allow_io=True):
    """Ops of a .tflite that compute in float: any input/output tensor float32/float16 (bias int32
    is fine). With ``allow_io`` a QUANTIZE on a graph input / DEQUANTIZE on a graph output (float
    model I/O around an int8 body) is not counted. Returns ["OP(tensor)", ...], [] = all-int8."""
    it = _interpreter(tflite)
    details = {t["index"]: t for t in it.get_tensor_details()}
    graph_in = {d["index"] for d in it.get_input_details()}
    graph_out = {d["index"] for d in it.get_output_details()}
    bad = []
    for op in it._get_ops_details():
        ins = [int(i) for i in op["inputs"] if int(i) >= 0]
        outs = [int(i) for i in op["outputs"]]
        if allow_io and op["op_name"] == "QUANTIZE" and set(ins) <= graph_in:
            continue
        if allow_io and op["op_name"] == "DEQUANTIZE" and set(outs) <= graph_out:
            continue
        for i in ins + outs:
            if np.dtype(details[i]["dtype"]) in (np.float32, np.float16):
                bad.append(f"{op['op_name']}({details[i]['name']})")
                break
    return bad
