"""One object per block type (``BlockKind``) and the one registry of them.

A block type is four things that must agree: its typed schema (a ``Block`` dataclass, the JSON
fields and their rules), its Keras build, its channel rules (which channel sets are tied, so NetAdapt
can shrink them and transfer weights: ``tfmobile.models.channels``) and its int8 op derivation (the
ops the int8 converter emits for it, written against the graph builder ``tfmobile.analysis`` passes
in, so LUT keys, TFLM arena and flash are predicted without converting). A ``BlockKind`` carries all
four; ``register(kind)`` is the one call that makes a type loadable, buildable, shrinkable and
predictable. The zoo's kinds are listed explicitly in ``tfmobile.models.registry`` (docs/blocks.md).
"""
from dataclasses import MISSING, dataclass, fields
from typing import Callable, Optional

from tfmobile.errors import UserError
from tfmobile.models.blocks import Block


@dataclass(frozen=True)
class BlockKind:
    """Everything tfmobile knows about one block type.

    build(x, block, spec) -> Keras tensor: standard Keras layers only (tfmot wraps them one by one),
        named ``<block name>_<role>``.
    channels(walker, block, segments) -> segments: the channel ties of the block (ChannelWalker);
        None: specs with this block have no shrinkable groups through it (``groups`` refuses them).
    int8(graph, x, block, spec) -> tensor id: the int8 ops it converts to (analysis.Int8Graph);
        None: resources of specs with this block cannot be predicted (a UserError says so).
    """

    block: type
    build: Callable
    channels: Optional[Callable] = None
    int8: Optional[Callable] = None

    @property
    def type(self):
        return self.block.type

    def check(self):
        if not (isinstance(self.block, type) and issubclass(self.block, Block) and self.block.type):
            raise UserError(f"{self.block!r} is not a Block subclass with a type")
        for role in ("build", "channels", "int8"):
            fn = getattr(self, role)
            if role == "build" and fn is None or fn is not None and not callable(fn):
                raise UserError(f"block kind {self.block.type!r}: {role} must be a function")
        return self


_KINDS = {}   # type name -> BlockKind (the zoo's, listed in registry.py, + register's)


def register(kind):
    """Make a block type known everywhere: JSON loading, build, channel surgery, int8 resources.

    Registering the same type again replaces it only with an equal schema (a re-imported module);
    another dataclass under a known type name is a UserError.
    """
    if not isinstance(kind, BlockKind):
        raise UserError(f"register() takes a BlockKind, got {type(kind).__name__}")
    kind.check()
    known = _KINDS.get(kind.type)
    if known is not None and known.block is not kind.block \
            and known.block.__qualname__ != kind.block.__qualname__:
        raise UserError(f"block type {kind.type!r} is already {known.block.__name__}")
    _KINDS[kind.type] = kind
    return kind


def kind_of(type_name):
    """The BlockKind of a type name (or of a block); UserError naming the known types."""
    name = type_name.type if isinstance(type_name, Block) else type_name
    kind = _KINDS.get(name)
    if kind is None:
        raise UserError(f"unknown block type {name!r}; known types: {', '.join(known_types())}")
    return kind


def known_types():
    return sorted(_KINDS)


def block_from_dict(d, index=None):
    """A typed block from its JSON object; unknown or missing fields and bad values are UserErrors."""
    where = f"model spec block {index}" if index is not None else "block"
    if not isinstance(d, dict) or "type" not in d or "name" not in d:
        raise UserError(f"{where} needs a 'type' and a 'name'")
    kind = _KINDS.get(d["type"])
    if kind is None:
        raise UserError(f"block {d['name']!r} has unknown type {d['type']!r}; "
                        f"known types: {', '.join(known_types())}")
    cls = kind.block
    values = {k: v for k, v in d.items() if k != "type"}
    valid = cls.field_names()
    unknown = sorted(set(values) - set(valid) - {"name"})
    if unknown:
        raise UserError(f"block {d['name']!r} ({cls.type}) has no field(s) {', '.join(unknown)}; "
                        f"its fields are {', '.join(valid)}")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [k for k in required if k not in values]
    if missing:
        raise UserError(f"block {d['name']!r} ({cls.type}) is missing field(s) {', '.join(missing)}")
    return cls(**values).check_fields()
