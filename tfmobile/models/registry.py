"""Name -> spec function and block type -> block builder registries, and the generic decoder.

Family modules register a spec function (keras-style arguments -> ModelSpec) under each model name
and a builder per block type. ``build`` decodes any ModelSpec with one loop over its blocks, so a
spec edited by hand or by NetAdapt builds exactly like a zoo one.
"""
import math

import tfmobile  # noqa: F401  (legacy Keras)
import tf_keras as keras

from tfmobile.errors import UserError
from tfmobile.models.spec import ModelSpec

_MODELS = {}   # name -> spec function
_BLOCKS = {}   # block type -> builder(x, block: dict, spec: ModelSpec) -> tensor

SPEC_ATTR = "_tfmobile_spec_json"


def register_model(name):
    def deco(fn):
        _MODELS[name] = fn
        return fn
    return deco


def register_block(block_type):
    def deco(fn):
        _BLOCKS[block_type] = fn
        return fn
    return deco


def available():
    """Names accepted by ``build`` / ``get_spec``."""
    _load_families()
    return sorted(_MODELS)


def _load_families():
    # Importing the family modules registers them; done lazily to avoid import cycles.
    from tfmobile.models import families  # noqa: F401


def get_spec(name, **kwargs):
    """The decoded block table of zoo model ``name`` for keras-style arguments."""
    _load_families()
    if name not in _MODELS:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}")
    alpha = kwargs.get("alpha", 1.0)
    if alpha is not None and not (isinstance(alpha, (int, float)) and alpha > 0 and math.isfinite(alpha)):
        raise UserError(f"alpha must be a positive number, got {alpha!r}")
    classes = kwargs.get("classes", 1000)
    if not (isinstance(classes, int) and classes >= 1):
        raise UserError(f"classes must be a positive integer, got {classes!r}")
    shape = kwargs.get("input_shape")
    if shape is not None:
        if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
            raise UserError(f"input_shape must be (height, width, channels) of positive ints, got {shape!r}")
    return _MODELS[name](**kwargs)


def total_stride(spec):
    stride = 1
    for b in spec.blocks:
        s = b.get("stride", 1)
        stride *= s if isinstance(s, int) else max(s)
    return stride


def build(model, weights=None, **kwargs):
    """A functional tf_keras.Model from a zoo name (+ keras-style kwargs) or a ModelSpec.

    weights: None (random init), a path to a weights file (``save_weights`` output, .h5 or TF
    checkpoint), or ``"imagenet"`` (the family's keras.applications weights; needs internet).
    """
    if isinstance(model, ModelSpec):
        if kwargs:
            raise UserError(f"build(spec) takes no model arguments, got {', '.join(sorted(kwargs))}")
        spec = model
    elif isinstance(model, str):
        spec = get_spec(model, **kwargs)
    else:
        raise UserError(f"build() takes a model name or a ModelSpec, not {type(model).__name__}")
    keras_model = decode(spec)
    if weights is not None:
        from tfmobile.models.weights import load_weights
        load_weights(keras_model, spec, weights)
    return keras_model


def decode(spec):
    """Build the Keras graph for ``spec``: one generic loop over its blocks."""
    _load_families()
    h, w, _ = spec.input_shape
    stride = total_stride(spec)
    if h < stride or w < stride:
        raise UserError(
            f"input {h}x{w} is too small for {spec.name}: its total stride is {stride}, "
            f"so the resolution must be at least {stride}")
    inputs = keras.Input(shape=tuple(spec.input_shape), name="input")
    x = inputs
    for block in spec.blocks:
        builder = _BLOCKS.get(block["type"])
        if builder is None:
            raise UserError(f"block {block['name']!r} has unknown type {block['type']!r}; "
                            f"known types: {', '.join(sorted(_BLOCKS))}")
        try:
            x = builder(x, block, spec)
        except (KeyError, TypeError) as e:
            raise UserError(f"block {block['name']!r} ({block['type']}) is malformed: {e}") from None
        except ValueError as e:
            if isinstance(e, UserError):
                raise
            raise UserError(f"block {block['name']!r} ({block['type']}) cannot be built: "
                            f"{str(e).splitlines()[0]}") from None
    model = keras.Model(inputs, x, name=spec.name)
    setattr(model, SPEC_ATTR, spec.to_json(indent=None))
    return model


def spec_of(model):
    """The ModelSpec a model was built from, or None for a model not built by tfmobile."""
    text = getattr(model, SPEC_ATTR, None)
    return ModelSpec.from_json(text) if text else None
