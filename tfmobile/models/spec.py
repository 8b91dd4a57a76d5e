"""Architectures as data: a ModelSpec is the decoded block table of one network.

Family modules turn a paper-style table (MobileNetV2's t/c/n/s rows, MobileNetV3's exp/out/SE/NL/s
rows, SqueezeNet's fire sizes, ...) plus keras-style arguments (alpha, input_shape, classes, ...)
into a ModelSpec whose blocks carry *absolute* channel counts. Because widths are explicit per
block, any single layer can be changed (NetAdapt shrinks them one at a time) and the result
serialized to JSON, stored beside every artifact, and built again.
"""
import copy
import json
from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple

from tfmobile.errors import UserError
from tfmobile.models import arguments
from tfmobile.models.blocks import Block
from tfmobile.models.kinds import block_from_dict

SPEC_VERSION = 1

# Before classes/dropout/activation lived only on the spec, MobileNet's classifier block repeated
# them; spec files written then still load (the copies must agree with the spec's own fields).
_LEGACY_CLASSIFIER_FIELDS = {"classes": "classes", "dropout": "dropout",
                             "activation": "classifier_activation"}
_TOP_FIELDS = ("classes", "include_top", "dropout", "classifier_activation", "pooling")


class BlockFlow(NamedTuple):
    """The channels one block of a spec sees: computed from the spec alone (no Keras)."""
    name: str
    in_channels: int
    out_channels: int
    producer: str     # the block whose output is this block's input ("input" for the first)


@dataclass
class ModelSpec:
    """One network: family, I/O and top options, family options, and the ordered block list.

    ``blocks`` are typed (tfmobile.models.blocks); JSON objects given here are decoded. A block
    that can add its input (``use_residual``) and does not say so gets the zoo rule once, here.
    """

    family: str
    name: str
    input_shape: tuple
    blocks: list
    classes: int = 1000
    include_top: bool = True
    dropout: float = 0.0
    classifier_activation: object = "softmax"
    pooling: object = None
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        self.blocks = [b if isinstance(b, Block) else block_from_dict(b, i)
                       for i, b in enumerate(self.blocks)]
        names = [b.name for b in self.blocks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UserError(f"model spec {self.name} has duplicate block name(s): {', '.join(dup)}")
        self._derive_residuals()

    def _derive_residuals(self):
        channels = self.input_shape[-1]
        for i, b in enumerate(self.blocks):
            if b.has_residual and b.use_residual is None:
                self.blocks[i] = b = replace(b, use_residual=b.derive_residual(channels))
            channels = b.out_channels(channels)

    # --- checks --------------------------------------------------------------------------------
    def channel_flow(self):
        """Each block's input and output channels, checking every block's fields and ties."""
        self._derive_residuals()
        for key in _TOP_FIELDS:
            arguments.check(key, getattr(self, key))
        arguments.check("input_shape", self.input_shape)
        flow, channels, producer = [], self.input_shape[-1], "input"
        for b in self.blocks:
            b.check_fields()
            b.check_flow(channels, producer)
            out = b.out_channels(channels)
            flow.append(BlockFlow(b.name, channels, out, producer))
            channels, producer = out, b.name
        return flow

    def check(self):
        self.channel_flow()
        return self

    # --- serialization -------------------------------------------------------------------------
    def to_dict(self):
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}
        d["input_shape"] = list(self.input_shape)
        d["blocks"] = [b.to_dict() for b in self.blocks]
        d["spec_version"] = SPEC_VERSION
        return d

    def to_json(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise UserError("model spec must be a JSON object")
        d = dict(d)
        d.pop("spec_version", None)
        missing = [k for k in ("family", "name", "input_shape", "blocks") if k not in d]
        if missing:
            raise UserError(f"model spec is missing field(s): {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"model spec has unknown field(s): {', '.join(unknown)}")
        if not isinstance(d["blocks"], list) or not all(isinstance(b, dict) for b in d["blocks"]):
            raise UserError("model spec 'blocks' must be a list of objects")
        shape = d["input_shape"]
        if not isinstance(shape, (list, tuple)):
            raise UserError(f"model spec input_shape must be [height, width, channels], got {shape!r}")
        d["input_shape"] = arguments.check("input_shape", shape)
        for key in _TOP_FIELDS:
            if key in d:
                d[key] = arguments.check(key, d[key])
        d["blocks"] = [cls._drop_legacy_fields(b, d) for b in d["blocks"]]
        return cls(**d)

    @staticmethod
    def _drop_legacy_fields(block, spec_dict):
        if block.get("type") != "classifier":
            return block
        block = dict(block)
        for old, top in _LEGACY_CLASSIFIER_FIELDS.items():
            if old in block:
                value = block.pop(old)
                if value != spec_dict.get(top, getattr(ModelSpec, top)):
                    raise UserError(f"block {block.get('name')!r}: {old}={value!r} disagrees with "
                                    f"the spec's {top}={spec_dict.get(top)!r}")
        return block

    @classmethod
    def from_json(cls, text):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"malformed spec JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        return cls.from_dict(d)

    @classmethod
    def load(cls, path):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise UserError(f"cannot read spec file {path}: {e.strerror}") from None
        return cls.from_json(text)

    # --- editing -------------------------------------------------------------------------------
    def copy(self):
        return copy.deepcopy(self)

    def block_index(self, name):
        for i, b in enumerate(self.blocks):
            if b.name == name:
                return i
        raise UserError(f"spec {self.name} has no block named {name!r}")

    def block(self, name):
        return self.blocks[self.block_index(name)]

    def with_block(self, name, **changes):
        """A copy with one block's fields changed, e.g. ``spec.with_block('block_3', expanded=64)``.

        A field the block does not have is a UserError naming the block's fields; the new values
        are checked by the fields' rules.
        """
        new = self.copy()
        i = new.block_index(name)
        block = new.blocks[i]
        valid = block.field_names()
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise UserError(f"block {name!r} ({block.type}) has no field(s) {', '.join(unknown)}; "
                            f"its fields are {', '.join(valid)}")
        new.blocks[i] = replace(block, **changes).check_fields()
        return new
