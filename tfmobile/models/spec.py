"""Architectures as data: a ModelSpec is the decoded block table of one network.

Family modules turn a paper-style table (MobileNetV2's t/c/n/s rows, MobileNetV3's exp/out/SE/NL/s
rows, SqueezeNet's fire sizes, ...) plus keras-style arguments (alpha, input_shape, classes, ...)
into a ModelSpec whose blocks carry *absolute* channel counts. Because widths are explicit per
block, any single layer can be changed (NetAdapt shrinks them one at a time) and the result
serialized to JSON, stored beside every artifact, and built again.
"""
import copy
import json
from dataclasses import asdict, dataclass, field

from tfmobile.errors import UserError

SPEC_VERSION = 1


@dataclass
class ModelSpec:
    """One network: family, I/O and top options, family options, and the ordered block list.

    ``blocks`` is a list of dicts; each has a ``type`` (a key of the block-builder registry) and a
    unique ``name`` (the prefix of the Keras layer names it creates), plus the block's own fields.
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

    # --- serialization -------------------------------------------------------------------------
    def to_dict(self):
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
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
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"model spec has unknown field(s): {', '.join(unknown)}")
        if not isinstance(d["blocks"], list) or not all(isinstance(b, dict) for b in d["blocks"]):
            raise UserError("model spec 'blocks' must be a list of objects")
        for i, b in enumerate(d["blocks"]):
            if "type" not in b or "name" not in b:
                raise UserError(f"model spec block {i} needs a 'type' and a 'name'")
        shape = d["input_shape"]
        if (not isinstance(shape, (list, tuple)) or len(shape) != 3
                or not all(isinstance(v, int) and v > 0 for v in shape)):
            raise UserError(f"model spec input_shape must be [height, width, channels], got {shape!r}")
        d["input_shape"] = tuple(shape)
        return cls(**d)

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
            if b["name"] == name:
                return i
        raise UserError(f"spec {self.name} has no block named {name!r}")

    def with_block(self, name, **changes):
        """A copy with one block's fields changed, e.g. ``spec.with_block('block_3', expanded=64)``."""
        new = self.copy()
        new.blocks[new.block_index(name)].update(changes)
        return new


def require_positive_ints(block, *keys):
    """Check that a block's fields (channel counts, kernel, stride, ...) are positive ints."""
    for k in keys:
        v = block[k]
        if not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
            raise UserError(f"block {block['name']!r}: {k} must be a positive integer, got {v!r}")
