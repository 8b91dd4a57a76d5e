"""The keras-style model arguments: one rule per argument, for every family.

A zoo spec function declares its arguments and their family defaults in its signature; ``call``
rejects arguments it does not take, applies the rule of each one here (check and normalize), and
calls it. ``ModelSpec`` checks its own top fields (classes, dropout, ...) with the same rules.
"""
import inspect

from tfmobile.errors import UserError
from tfmobile.models.blocks import (ACTIVATIONS, MAX_CHANNELS, POSITIVE, SQUEEZENET_BYPASS,
                                    UNIT_INTERVAL, Rule, is_finite_number, one_of)

DEFAULT_INPUT_SHAPE = (224, 224, 3)
# A typo such as 100000x100000 would otherwise be found only when building it runs out of memory.
MAX_RESOLUTION = 1024
SHUFFLENET_V1_GROUPS = (1, 2, 3, 4, 8)


def _input_shape(v):
    if v is None:
        return DEFAULT_INPUT_SHAPE
    try:
        shape = tuple(v)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3 or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise UserError(f"input_shape must be (height, width, channels) of positive ints, got {v!r}")
    height, width, channels = shape
    if max(height, width) > MAX_RESOLUTION:
        raise UserError(f"input_shape {height}x{width} is above the largest resolution, "
                        f"{MAX_RESOLUTION}x{MAX_RESOLUTION}")
    if channels > MAX_CHANNELS:
        raise UserError(f"input_shape has {channels} channels, more than the largest width {MAX_CHANNELS}")
    return shape


def _check(key, v, rule):
    if not rule.test(v):
        raise UserError(f"{key} must be {rule.text}, got {v!r}")
    return v


POSITIVE_NUMBER = Rule(lambda v: is_finite_number(v) and v > 0, "a positive number")
OPTIONAL_UNIT_INTERVAL = Rule(lambda v: v is None or UNIT_INTERVAL.test(v), "in [0, 1) (or null)")
ANY = Rule(lambda v: True, "anything")

# argument -> (rule, normalization of a valid value)
RULES = {
    "alpha": (POSITIVE_NUMBER, float),
    "include_top": (ANY, bool),
    "classes": (Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
                     "a positive integer"), int),
    "dropout": (UNIT_INTERVAL, float),
    "classifier_activation": (one_of(*ACTIVATIONS), lambda v: v),
    "pooling": (one_of(None, "avg", "max"), lambda v: v),
    # 0 is valid (moving statistics = the last batch); None: the family has no batch norm
    "bn_momentum": (OPTIONAL_UNIT_INTERVAL, lambda v: None if v is None else float(v)),
    "depth_multiplier": (POSITIVE, int),
    "minimalistic": (ANY, bool),
    "include_preprocessing": (ANY, bool),
    "groups": (one_of(*SHUFFLENET_V1_GROUPS), int),
    "bypass": (one_of(*SQUEEZENET_BYPASS), lambda v: v),
}


# keras.applications' convention: an explicit None asks for the family default
NONE_MEANS_DEFAULT = ("dropout", "bn_momentum")


def check(key, value):
    """The one rule of argument ``key`` applied to ``value``; returns the normalized value."""
    if key == "input_shape":
        return _input_shape(value)
    rule, convert = RULES[key]
    return convert(_check(key, value, rule))


def call(name, spec_fn, kwargs):
    """``spec_fn(**kwargs)`` after refusing unknown arguments and checking each one.

    Arguments without a rule here (a test's stand-in family) pass unchanged.
    """
    params = inspect.signature(spec_fn).parameters
    named = {k: p for k, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    takes_any = len(named) < len(params)
    unknown = sorted(set(kwargs) - set(named))
    if unknown and not takes_any:
        raise UserError(f"{name} does not take option(s): {', '.join(unknown)}; its arguments are "
                        f"{', '.join(sorted(named))}")
    values = dict(kwargs)
    for key, p in named.items():
        value = kwargs.get(key, p.default)
        if value is None and key in NONE_MEANS_DEFAULT:
            value = p.default
        values[key] = check(key, value) if key == "input_shape" or key in RULES else value
    return spec_fn(**values)
