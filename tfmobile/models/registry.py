"""The zoo (model name -> spec function), the zoo's block kinds, and the generic decoder.

Both lists name the families explicitly; the zoo's kinds are registered here, before any spec can be
read (``tfmobile.models`` imports this module). ``build`` decodes any ModelSpec with one loop over its
blocks, so a spec edited by hand or by NetAdapt builds exactly like a zoo one. The spec a model was
built from rides on it through ``attach_spec`` / ``spec_of`` only.
"""
import tfmobile  # noqa: F401  (legacy Keras)
import tf_keras as keras

from tfmobile.errors import UserError
from tfmobile.models import arguments, kinds, mobilenet, shufflenet, squeezenet
from tfmobile.models.kinds import BlockKind
from tfmobile.models.spec import ModelSpec

ZOO = {   # name -> spec function
    "mbv1": mobilenet.mbv1_spec,
    "mbv2": mobilenet.mbv2_spec,
    "mbv3_small": mobilenet.mbv3_small_spec,
    "mbv3_large": mobilenet.mbv3_large_spec,
    "shufflenet_v1": shufflenet.shufflenet_v1_spec,
    "shufflenet_v2": shufflenet.shufflenet_v2_spec,
    "squeezenet1_0": squeezenet.squeezenet1_0_spec,
    "squeezenet1_1": squeezenet.squeezenet1_1_spec,
}
_MODELS = dict(ZOO)   # + register_model's
ZOO_KINDS = (*mobilenet.KINDS, *shufflenet.KINDS, *squeezenet.KINDS)
for _kind in ZOO_KINDS:
    kinds.register(_kind)

_SPEC_ATTR = "_tfmobile_spec_json"


def register_model(name):
    """Add a spec function outside the zoo (tests' stand-in families): an explicit call."""
    def deco(fn):
        _MODELS[name] = fn
        return fn
    return deco


def register_block(block_cls):
    """Decorator registering a build-only block kind (no channel rules, no int8 ops): the short
    form of ``kinds.register(BlockKind(block_cls, fn))`` for models that are only trained."""
    def deco(fn):
        kinds.register(BlockKind(block_cls, fn))
        return fn
    return deco


def available():
    """Names accepted by ``build`` / ``get_spec``."""
    return sorted(_MODELS)


def get_spec(name, **kwargs):
    """The decoded block table of zoo model ``name`` for keras-style arguments."""
    if name not in _MODELS:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}")
    return arguments.call(name, _MODELS[name], kwargs)


def total_stride(spec):
    stride = 1
    for b in spec.blocks:
        stride *= b.stride_of
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
    """Build the Keras graph for ``spec``: check its channel flow, then one loop over its blocks."""
    spec.check()
    h, w, _ = spec.input_shape
    stride = total_stride(spec)
    if h < stride or w < stride:
        raise UserError(
            f"input {h}x{w} is too small for {spec.name}: its total stride is {stride}, "
            f"so the resolution must be at least {stride}")
    inputs = keras.Input(shape=tuple(spec.input_shape), name="input")
    x = inputs
    for block in spec.blocks:
        try:
            x = kinds.kind_of(block.type).build(x, block, spec)
        except ValueError as e:
            if isinstance(e, UserError):
                raise
            raise UserError(f"block {block.name!r} ({block.type}) cannot be built: "
                            f"{str(e).splitlines()[0]}") from None
    model = keras.Model(inputs, x, name=spec.name)
    attach_spec(model, spec)
    return model


def attach_spec(model, spec):
    """Let ``spec_of(model)`` return ``spec`` (wrapped, stripped or cut models keep their float spec)."""
    if not isinstance(spec, ModelSpec):
        raise UserError(f"attach_spec needs a ModelSpec, got {type(spec).__name__}")
    setattr(model, _SPEC_ATTR, spec.to_json(indent=None))
    return model


def spec_of(model):
    """The ModelSpec a model was built from (or attached to it), or None."""
    text = getattr(model, _SPEC_ATTR, None)
    return ModelSpec.from_json(text) if text else None
