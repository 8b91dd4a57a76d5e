"""The tfmot wrappers: quantization-aware training (QAT), magnitude pruning (optionally 2:4),
strip, pruning-preserving QAT (PQAT), re-applying them for a checkpoint, and the zero weights of
the Keras models they produce.
"""
import json
import os

import tfmobile  # noqa: F401  (legacy Keras before TensorFlow)
import numpy as np
import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot
# tfmot 0.8 does not export its pruning wrapper class; the only private path left in tfmobile.compress
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from tfmobile.compress.schemes import (LAYER_CONFIGS, PrunePreserveQuantizeScheme, QuantizeScheme,
                                       quantize_scope)
from tfmobile.errors import UserError

_qk = tfmot.quantization.keras
_sk = tfmot.sparsity.keras
QuantizeWrapper = _qk.QuantizeWrapper

COMPRESSIONS = (None, "qat", "prune", "pqat")


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
    if _is_wrapped(model, QuantizeWrapper):
        raise UserError("model is already quantization-aware")
    if _is_wrapped(model, PruneLowMagnitude):
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
    if _is_wrapped(model, PruneLowMagnitude):
        raise UserError("pqat() needs a stripped model: call compress.strip(model) first")
    if _is_wrapped(model, QuantizeWrapper):
        raise UserError("model is already quantization-aware")
    annotated = _annotate(model)
    scheme = PrunePreserveQuantizeScheme()
    with quantize_scope():
        q = _apply(annotated, scheme)
    return _keep_spec(model, q)


# --------------------------------------------------------------------------- pruning
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
    if _is_wrapped(model, QuantizeWrapper):
        raise UserError("prune the float model, then strip and use pqat()")
    if _is_wrapped(model, PruneLowMagnitude):
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


# --------------------------------------------------------------------------- zero weights of Keras models
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
            if isinstance(layer, PruneLowMagnitude):
                for weight, mask, _ in layer.pruning_vars:
                    if weight is var:
                        w = w * mask.numpy()
            n, z = int(w.size), int(np.sum(w == 0))
            pruned = isinstance(layer, PruneLowMagnitude) or z > 0
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
