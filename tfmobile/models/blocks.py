"""The block schema of a ModelSpec: one dataclass per block type, no Keras.

Field names are the keys of the on-disk JSON (``{"type": ..., "name": ..., <fields>}``); each field
carries its one validation rule and its default, so a misspelled field, a missing one or a bad value
is a UserError when a spec is loaded or edited, not a surprise when it is built.

Blocks that can add their input to their output carry ``use_residual``. It is explicit: a zoo spec
derives it once from the channel flow (``derive_residual``), and after that a width edit that breaks
the skip is refused by ``check_flow`` with the names of the two tied blocks, never built without it.
"""
from dataclasses import MISSING, dataclass, field, fields
from typing import ClassVar

from tfmobile.errors import UserError

ACTIVATIONS = ("relu", "relu6", "hard_swish", "hard_sigmoid", "sigmoid", "tanh", "softmax", "linear",
               None)
SQUEEZENET_BYPASS = ("none", "simple", "complex")
# The largest channel count / kernel a block field may hold: a typo such as a width of 10**7 would
# otherwise be found only when building the layer runs out of memory.
MAX_CHANNELS = 16384


# --------------------------------------------------------------------------------- field rules
@dataclass(frozen=True)
class Rule:
    test: object   # value -> bool
    text: str      # what a valid value is, for the error message


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_finite_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def one_of(*options):
    def test(v):
        return any(v == o and type(v) is type(o) for o in options)
    return Rule(test, "one of " + ", ".join("null" if o is None else str(o) for o in options))


POSITIVE = Rule(lambda v: _is_int(v) and 0 < v <= MAX_CHANNELS, f"a positive integer up to {MAX_CHANNELS}")
UNIT_INTERVAL = Rule(lambda v: is_finite_number(v) and 0 <= v < 1, "in [0, 1)")
OPTIONAL_POSITIVE = Rule(lambda v: v is None or POSITIVE.test(v), f"{POSITIVE.text} or null")
STRIDE = one_of(1, 2)
FLAG = Rule(lambda v: isinstance(v, bool), "true or false")
OPTIONAL_FLAG = Rule(lambda v: v is None or isinstance(v, bool), "true, false or null (derive)")
NUMBER = Rule(is_finite_number, "a finite number")
ACTIVATION = one_of(*ACTIVATIONS)
POOL = one_of("avg", "max")


def spec_field(rule, default=MISSING):
    """A block field with its validation rule (and default, if it has one)."""
    return field(default=default, metadata={"rule": rule})


def check_value(owner, key, value, rule):
    if not rule.test(value):
        raise UserError(f"{owner}: {key} must be {rule.text}, got {value!r}")
    return value


# --------------------------------------------------------------------------------- base class
@dataclass(kw_only=True)
class Block:
    """One row of a spec: ``name`` prefixes the Keras layer names it builds."""

    name: str
    type: ClassVar[str] = ""
    has_residual: ClassVar[bool] = False

    @classmethod
    def field_names(cls):
        """The fields ``with_block`` may change (all but ``name``)."""
        return [f.name for f in fields(cls) if f.name != "name"]

    def check_fields(self):
        if not isinstance(self.name, str) or not self.name:
            raise UserError(f"a {self.type} block needs a non-empty string name, got {self.name!r}")
        for f in fields(self):
            rule = f.metadata.get("rule")
            if rule is not None:
                check_value(f"block {self.name!r}", f.name, getattr(self, f.name), rule)
        return self

    def to_dict(self):
        d = {"type": self.type, "name": self.name}
        d.update((f.name, getattr(self, f.name)) for f in fields(self) if f.name != "name")
        return d

    @property
    def stride_of(self):
        return getattr(self, "stride", 1)

    def out_channels(self, cin):
        """Channels this block outputs given ``cin`` input channels (weightless blocks: ``cin``)."""
        return cin

    def derive_residual(self, cin):
        """The zoo rule for ``use_residual`` (blocks without a skip: never called)."""
        return False

    def check_flow(self, cin, producer):
        """Refuse channel counts this block cannot be built with (``producer`` makes its input)."""

    def _residual_error(self, cin, producer, cout, what):
        return UserError(
            f"block {self.name!r} adds its input to its output (use_residual): its input has "
            f"{cin} channels (from {producer!r}) but its output has {cout} ({what})"
            + ("" if self.stride_of == 1 else f" and its stride is {self.stride_of}")
            + "; change both widths together, or set use_residual to false")


# --------------------------------------------------------------------------------- MobileNet
@dataclass(kw_only=True)
class ConvBN(Block):
    """Conv2D (+BN) (+act): MobileNet stem and 1x1 head. Layers ``<name>_conv``, ``_bn``, ``_<act>``."""

    type: ClassVar[str] = "conv_bn"
    filters: int = spec_field(POSITIVE)
    kernel: int = spec_field(POSITIVE)
    stride: int = spec_field(STRIDE, 1)
    act: object = spec_field(ACTIVATION, "relu6")
    bias: bool = spec_field(FLAG, False)
    bn: bool = spec_field(FLAG, True)

    def out_channels(self, cin):
        return self.filters


@dataclass(kw_only=True)
class DwSeparable(Block):
    """V1: kxk depthwise + BN + act, 1x1 pointwise + BN + act."""

    type: ClassVar[str] = "dw_separable"
    filters: int = spec_field(POSITIVE)
    kernel: int = spec_field(POSITIVE, 3)
    stride: int = spec_field(STRIDE, 1)
    depth_multiplier: int = spec_field(POSITIVE, 1)
    act: object = spec_field(ACTIVATION, "relu6")

    def out_channels(self, cin):
        return self.filters


@dataclass(kw_only=True)
class InvertedResidual(Block):
    """V2/V3: [1x1 expand] -> kxk depthwise -> [SE] -> linear 1x1 project [+ input]."""

    type: ClassVar[str] = "inverted_residual"
    has_residual: ClassVar[bool] = True
    expanded: object = spec_field(OPTIONAL_POSITIVE, None)
    filters: int = spec_field(POSITIVE)
    kernel: int = spec_field(POSITIVE, 3)
    stride: int = spec_field(STRIDE, 1)
    se: object = spec_field(OPTIONAL_POSITIVE, None)
    act: object = spec_field(ACTIVATION, "relu6")
    use_residual: object = spec_field(OPTIONAL_FLAG, None)

    def out_channels(self, cin):
        return self.filters

    def derive_residual(self, cin):
        return self.stride == 1 and cin == self.filters

    def check_flow(self, cin, producer):
        if self.use_residual and (self.stride != 1 or cin != self.filters):
            raise self._residual_error(cin, producer, self.filters, "filters")


@dataclass(kw_only=True)
class Rescale(Block):
    """V3 include_preprocessing: x * scale + offset."""

    type: ClassVar[str] = "rescale"
    scale: float = spec_field(NUMBER)
    offset: float = spec_field(NUMBER)


@dataclass(kw_only=True)
class GlobalPool(Block):
    """include_top=False with pooling="avg"/"max"."""

    type: ClassVar[str] = "global_pool"
    mode: str = spec_field(POOL, "avg")


@dataclass(kw_only=True)
class Classifier(Block):
    """Global pool -> [hidden 1x1 conv + act] -> [dropout] -> logits ("conv" or "dense") -> activation.

    classes, dropout and the final activation are the spec's own fields (one place for every family).
    """

    type: ClassVar[str] = "classifier"
    pool: str = spec_field(POOL, "avg")
    hidden: object = spec_field(OPTIONAL_POSITIVE, None)
    hidden_act: object = spec_field(ACTIVATION, None)
    layer: str = spec_field(one_of("conv", "dense"), "dense")

    def check_flow(self, cin, producer):
        if self.hidden is not None and self.layer != "conv":
            raise UserError(f"block {self.name!r}: a hidden layer needs layer='conv'")


# --------------------------------------------------------------------------------- ShuffleNet
@dataclass(kw_only=True)
class _PlainConv(Block):
    filters: int = spec_field(POSITIVE)
    kernel: int = spec_field(POSITIVE)
    stride: int = spec_field(POSITIVE, 1)

    def out_channels(self, cin):
        return self.filters


@dataclass(kw_only=True)
class _MaxPool(Block):
    pool: int = spec_field(POSITIVE, 3)
    stride: int = spec_field(POSITIVE, 2)


@dataclass(kw_only=True)
class ShuffleConv(_PlainConv):
    """Conv -> BN -> ReLU (conv1, and V2's conv5)."""

    type: ClassVar[str] = "shufflenet_conv"


@dataclass(kw_only=True)
class ShuffleMaxPool(_MaxPool):
    type: ClassVar[str] = "shufflenet_maxpool"


@dataclass(kw_only=True)
class ShuffleV1Unit(Block):
    """Grouped 1x1 (``mid``) -> shuffle -> 3x3 dw -> grouped 1x1; stride 1: + input (use_residual),
    stride 2: concatenated with the 3x3/2 average-pooled input (its branch makes out - in channels)."""

    type: ClassVar[str] = "shufflenet_v1_unit"
    has_residual: ClassVar[bool] = True
    mid: int = spec_field(POSITIVE)
    out: int = spec_field(POSITIVE)
    groups: int = spec_field(POSITIVE)
    first_groups: int = spec_field(POSITIVE)
    stride: int = spec_field(STRIDE, 1)
    use_residual: object = spec_field(OPTIONAL_FLAG, None)

    def out_channels(self, cin):
        return self.out

    def derive_residual(self, cin):
        # ShuffleNet V1's stride-1 unit always adds its input; a width mismatch is then refused.
        return self.stride == 1

    def check_flow(self, cin, producer):
        if self.stride == 1:
            if self.use_residual and cin != self.out:
                raise self._residual_error(cin, producer, self.out, "out")
        else:
            if self.use_residual:
                raise UserError(f"block {self.name!r}: a stride-2 unit concatenates its input, "
                                f"it cannot add it (use_residual must be false)")
            if self.out <= cin:
                raise UserError(f"block {self.name!r}: a stride-2 unit concatenates its {cin} input "
                                f"channels (from {producer!r}), so out must exceed {cin}, got {self.out}")

    def branch_out(self, cin):
        return self.out - cin if self.stride == 2 else self.out


@dataclass(kw_only=True)
class ShuffleV2Unit(Block):
    """Stride 1: split in half, 1x1 -> 3x3 dw -> 1x1 on one half, concat, shuffle. Stride 2: both
    branches see the whole input; the left keeps ``left`` channels (default: the input width)."""

    type: ClassVar[str] = "shufflenet_v2_unit"
    mid: int = spec_field(POSITIVE)
    out: int = spec_field(POSITIVE)
    stride: int = spec_field(STRIDE, 1)
    left: object = spec_field(OPTIONAL_POSITIVE, None)

    def out_channels(self, cin):
        return self.out

    def left_width(self, cin):
        """Channels of the left (pass-through / stride-2 left branch) half."""
        if self.stride == 1:
            return cin // 2
        return self.left if self.left is not None else cin

    def check_flow(self, cin, producer):
        if self.stride == 1:
            if cin % 2:
                raise UserError(f"block {self.name!r}: a stride-1 unit splits its input in half, "
                                f"{cin} channels (from {producer!r}) is odd")
            if self.out <= cin // 2:
                raise UserError(f"block {self.name!r}: out must exceed the {cin // 2} channels "
                                f"passed through, got {self.out}")
        elif self.out <= self.left_width(cin):
            raise UserError(f"block {self.name!r}: out must exceed left ({self.left_width(cin)}), "
                            f"got {self.out}")


@dataclass(kw_only=True)
class ShuffleClassifier(Block):
    type: ClassVar[str] = "shufflenet_classifier"


# --------------------------------------------------------------------------------- SqueezeNet
@dataclass(kw_only=True)
class SqueezeStem(_PlainConv):
    """Conv (valid padding, bias) -> ReLU."""

    type: ClassVar[str] = "squeezenet_stem"
    stride: int = spec_field(POSITIVE, 2)


@dataclass(kw_only=True)
class SqueezeMaxPool(_MaxPool):
    type: ClassVar[str] = "squeezenet_maxpool"


@dataclass(kw_only=True)
class Fire(Block):
    """squeeze 1x1 -> [expand 1x1 || expand 3x3] -> concat; use_residual adds the input (the
    paper's simple bypass); otherwise bypass "complex" adds a 1x1-conv projection of the input."""

    type: ClassVar[str] = "squeezenet_fire"
    has_residual: ClassVar[bool] = True
    squeeze: int = spec_field(POSITIVE)
    expand1x1: int = spec_field(POSITIVE)
    expand3x3: int = spec_field(POSITIVE)
    bypass: str = spec_field(one_of(*SQUEEZENET_BYPASS), "none")
    use_residual: object = spec_field(OPTIONAL_FLAG, None)

    def out_channels(self, cin):
        return self.expand1x1 + self.expand3x3

    def derive_residual(self, cin):
        return self.bypass != "none" and cin == self.out_channels(cin)

    def check_flow(self, cin, producer):
        if self.use_residual and cin != self.out_channels(cin):
            raise self._residual_error(cin, producer, self.out_channels(cin),
                                       "expand1x1 + expand3x3")


@dataclass(kw_only=True)
class SqueezeClassifier(Block):
    type: ClassVar[str] = "squeezenet_classifier"
