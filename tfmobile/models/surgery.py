"""Channel surgery on a ModelSpec: its shrinkable channel groups, shrinking one, and moving trained
weights into the narrower model (NetAdapt's proposals; Yang et al. 2018, MobileNetV3 section 3.2).

A group is every channel set that must keep one width: a block's expansion, a residual stage's
bottleneck (all blocks tied by their Adds shrink together, the Adds stay), a fire's expand
branches together with the fires its bypass adds to, ... Each group lists the Keras layers it
touches (``Tie``): the producers whose output channels it is, the per-channel layers it passes
through (BatchNorm, depthwise), and the consumers whose input channels it is, at an offset into a
concatenation. ``transfer`` keeps, per group, the channels whose producing kernels have the
largest L2 norm (summed over tied producers) and slices every tied tensor with the same indices,
so a model whose dropped channels contribute nothing is reproduced exactly.

The ties are stated per block type by its kind's ``channels`` rule (``tfmobile.models.kinds``,
written on ``tfmobile.models.channels.ChannelWalker``); this module walks a spec with them and does
the shrinking and the weight transfer, which are the same for every type.

ShuffleNet's stage channels pass through channel shuffles, splits and concatenations that mix
every stage; its shrinkable widths are the branch (``mid``) widths of each stage, where V1's
grouped 1x1 convolutions and shuffle are followed channel by channel.

The input resolution is a proposal too (``RESOLUTION_GROUP``): the arena grows with its square, and
no weight depends on it (convolutions slide over any size, every zoo head pools globally), so
``with_resolution`` changes only the spec's input and ``transfer`` copies every weight unchanged.
"""
from dataclasses import dataclass, replace

import numpy as np

from tfmobile.errors import UserError
from tfmobile.models import kinds
from tfmobile.models.channels import (CHAN, GROUPED_IN, IN, OUT, SHUFFLED_CHAN, ChannelWalker,
                                      Tie)  # noqa: F401  (Tie: part of a Group)
from tfmobile.models.registry import total_stride
from tfmobile.models.spec import ModelSpec

DEFAULT_CHANNEL_STEP = 8
RESOLUTION_GROUP = "resolution"   # NetAdapt's input-resolution proposal (width: the new resolution)


@dataclass(frozen=True)
class Group:
    """One shrinkable channel set: ``fields`` are the (block, field) pairs that hold its width."""

    name: str
    width: int
    channel_step: int
    fields: tuple
    ties: tuple
    shuffle: tuple = ()    # ShuffleNet V1: per part (first_groups, groups) around the shuffle

    @property
    def producers(self):
        return tuple(t.layer for t in self.ties if t.role == OUT)

    @property
    def consumers(self):
        return tuple(t.layer for t in self.ties if t.role in (IN, GROUPED_IN))

    def widths(self):
        """The widths it may shrink to, largest first (multiples of the step, at least one step)."""
        top = (self.width - 1) // self.channel_step * self.channel_step
        return list(range(top, self.channel_step - 1, -self.channel_step))


def _all_groups(spec, channel_step=DEFAULT_CHANNEL_STEP):
    """Every channel group of ``spec`` that shrinking may touch (frozen ones left out)."""
    if not isinstance(spec, ModelSpec):
        raise UserError(f"channel groups need a ModelSpec, got {type(spec).__name__}")
    if not (isinstance(channel_step, int) and not isinstance(channel_step, bool) and channel_step > 0):
        raise UserError(f"channel_step must be a positive integer, got {channel_step!r}")
    spec.check()
    w = ChannelWalker(spec, channel_step)
    segs = [(None, spec.input_shape[-1])]
    for b in spec.blocks:
        rule = kinds.kind_of(b.type).channels
        if rule is None:
            raise UserError(f"block {b.name!r} ({b.type}) has no channel surgery")
        segs = rule(w, b, segs)
    w.freeze(segs)    # the network's output (logits or features) keeps its width
    out = []
    for d in w.drafts:
        if d.alias is None and not d.frozen and d.fields:
            out.append(Group(d.name, d.width, d.step, tuple(d.fields), tuple(d.ties),
                             tuple(d.shuffle)))
    return out


def groups(spec, channel_step=DEFAULT_CHANNEL_STEP, at_minimum=False):
    """The independently shrinkable channel sets of ``spec`` that have a narrower width to go to
    (``at_minimum=True``: also those already at their narrowest, so a caller can say why they cannot shrink)."""
    return [g for g in _all_groups(spec, channel_step) if at_minimum or g.widths()]


def _find(spec, group, channel_step):
    name = group.name if isinstance(group, Group) else group
    for g in _all_groups(spec, channel_step):
        if g.name == name:
            return g
    raise UserError(f"spec {spec.name} has no channel group {name!r} (see netadapt.groups(spec))")


def shrink(spec, group, width, channel_step=None):
    """A copy of ``spec`` with ``group`` (a Group or its name) at ``width`` channels.

    channel_step: the multiple ``width`` must be; None: a Group's own (the step it was listed with),
    for a name ``DEFAULT_CHANNEL_STEP``.
    """
    if channel_step is None:
        channel_step = group.channel_step if isinstance(group, Group) else DEFAULT_CHANNEL_STEP
    g = _find(spec, group, channel_step)
    step = g.channel_step
    if not (isinstance(width, int) and not isinstance(width, bool)):
        raise UserError(f"width must be an integer, got {width!r}")
    if width > g.width:
        raise UserError(f"group {g.name!r} has {g.width} channels; it cannot grow to {width}")
    if width < step or width % step:
        raise UserError(f"group {g.name!r}: width must be a multiple of {step} and at least {step}, "
                        f"got {width}")
    new = spec.copy()
    for block, field in g.fields:
        i = new.block_index(block)
        new.blocks[i] = replace(new.blocks[i], **{field: width})
    return new.check()


# ------------------------------------------------------------------------------ input resolution
def lowest_resolution(spec):
    """The smallest square input ``spec`` may take: its total stride (the product of its blocks'
    strides), so every stride still halves a real map and the last one is at least 1x1 (the size
    ``models.build`` refuses to go below)."""
    if not isinstance(spec, ModelSpec):
        raise UserError(f"lowest_resolution needs a ModelSpec, got {type(spec).__name__}")
    return total_stride(spec.check())


def with_resolution(spec, resolution):
    """A copy of ``spec`` taking a square ``resolution`` x ``resolution`` input (same channels and
    blocks); a name ending in the old resolution like the zoo's (``mbv2_0.35_32``) gets the new one."""
    if not isinstance(spec, ModelSpec):
        raise UserError(f"with_resolution needs a ModelSpec, got {type(spec).__name__}")
    if not (isinstance(resolution, int) and not isinstance(resolution, bool) and resolution > 0):
        raise UserError(f"resolution must be a positive integer, got {resolution!r}")
    lowest = lowest_resolution(spec)
    if resolution < lowest:
        raise UserError(f"resolution {resolution} is below {lowest}, the total stride of {spec.name} "
                        f"(its last feature map would vanish)")
    new = spec.copy()
    height, width, channels = spec.input_shape
    new.input_shape = (resolution, resolution, channels)
    stem, sep, suffix = spec.name.rpartition("_")
    if sep and height == width and suffix == str(height):
        new.name = f"{stem}_{resolution}"
    elif (height, width) != (resolution, resolution):
        new.name = f"{spec.name}_{resolution}"
    return new.check()


_SIZE_BOUND_LAYERS = ("Flatten", "Reshape")


def _input_size_bound_layer(model):
    """The first layer that folds a feature map's positions into channels (a Flatten or Reshape of
    a map larger than 1x1, e.g. after a fixed-window pooling), or None. The width of what follows
    such a layer is fixed by the input size, so the model cannot move to another resolution; every
    zoo head pools globally first (its Flatten sees 1x1 at any size) and a channel shuffle's
    Reshapes keep the map."""
    for layer in model.layers:
        if type(layer).__name__ not in _SIZE_BOUND_LAYERS or isinstance(layer.input, (list, tuple)):
            continue
        before, after = tuple(layer.input.shape), tuple(layer.output.shape)
        if len(before) == 4 and before[1:3] != (1, 1) and after[1:3] != before[1:3]:
            return layer.name
    return None


# ------------------------------------------------------------------------------ weight transfer
def _wrapped_layers(model):
    return [l.name for l in model.layers
            if type(l).__name__.startswith(("Quantize", "PruneLowMagnitude"))]


def _out_norms(kernel):
    """L2 norm of each output channel of a conv / dense kernel (output channels last)."""
    k = np.asarray(kernel)
    return np.sqrt((k.reshape(-1, k.shape[-1]) ** 2).sum(axis=0))


def _v1_layout(first_groups, groups, width):
    """Where each gconv1 output channel lands: (its gconv1 group, its index after the shuffle, its
    gconv2 group), for a branch of ``width`` channels."""
    per_first = width // first_groups
    out = []
    for c in range(width):
        a, p = divmod(c, per_first)
        s = p * first_groups + a if first_groups > 1 else c
        out.append((a, s, s // (width // groups)))
    return out


def _keep_plain(scores, width):
    """The ``width`` largest-score channels, in their original order."""
    return sorted(np.argsort(-scores, kind="stable")[:width].tolist())


def _keep_v1(scores, old, new, first_groups, groups):
    """Largest-score channels such that each stays in its gconv1 group and, after the new
    model's shuffle, in the same gconv2 group (so the grouped convs see the same inputs)."""
    old_layout = _v1_layout(first_groups, groups, old)
    new_layout = _v1_layout(first_groups, groups, new)
    keep = []
    for a in range(first_groups):
        # how many channels of gconv1 group a each gconv2 group receives in the new layout
        need = {}
        for ga, _, k in new_layout:
            if ga == a:
                need[k] = need.get(k, 0) + 1
        for k, count in need.items():
            pool = [c for c, (ga, _, gk) in enumerate(old_layout) if ga == a and gk == k]
            if len(pool) < count:
                raise UserError(f"ShuffleNet V1 branch of {old} channels cannot keep {new} "
                                f"with groups {first_groups}/{groups}")
            best = sorted(pool, key=lambda c: (-scores[c], c))[:count]
            keep += best
    return sorted(keep)


def kept_channels(model, group, width):
    """Per part of ``group``, the indices of the channels ``transfer`` keeps at ``width``."""
    parts = sorted({t.part for t in group.ties})
    keep = {}
    for part in parts:
        scores = np.zeros(group.width)
        for t in group.ties:
            if t.part == part and t.score:
                scores += _out_norms(model.get_layer(t.layer).get_weights()[0])[
                    t.offset:t.offset + group.width]
        if group.shuffle:
            first_groups, groups_ = group.shuffle[part]
            keep[part] = _keep_v1(scores, group.width, width, first_groups, groups_)
        else:
            keep[part] = _keep_plain(scores, width)
    return keep


def _axis_maps(group, keep, new_width):
    """(layer, role) -> [(offset, old width, old indices in new order)] for one shrunk group."""
    maps = {}
    for t in group.ties:
        k = keep[t.part]
        if t.role == SHUFFLED_CHAN:
            first_groups, _ = group.shuffle[t.part]
            old_pos = {c: s for c, (_, s, _) in enumerate(_v1_layout(first_groups, 1, group.width))}
            new_pos = [s for _, s, _ in _v1_layout(first_groups, 1, new_width)]
            order = [None] * new_width
            for j, c in enumerate(k):
                order[new_pos[j]] = old_pos[c]
            k = order
        elif t.role == GROUPED_IN:
            first_groups, groups_ = group.shuffle[t.part]
            old_layout = _v1_layout(first_groups, groups_, group.width)
            new_layout = _v1_layout(first_groups, groups_, new_width)
            per_old, per_new = group.width // groups_, new_width // groups_
            order = [None] * new_width
            for j, c in enumerate(k):
                order[new_layout[j][1]] = old_layout[c][1]
            # a grouped kernel's input axis is local to its group: (group, local index) per row
            k = [(s // per_old, s % per_old) for s in order]
            maps.setdefault((t.layer, IN), []).append(("grouped", groups_, per_new, k))
            continue
        maps.setdefault((t.layer, CHAN if t.role == SHUFFLED_CHAN else t.role), []).append(
            (t.offset, group.width, list(k)))
    return maps


_AXES = {   # layer class -> role -> axis of each weight (None: the weight has no such axis)
    "Conv2D": {IN: (2, None), OUT: (3, 0)},
    "Dense": {IN: (0, None), OUT: (1, 0)},
    "DepthwiseConv2D": {CHAN: (2, 0)},
    "BatchNormalization": {CHAN: (0, 0, 0, 0)},
}


def _index(length, segments):
    idx, pos = [], 0
    for offset, width, kept in sorted(segments, key=lambda s: s[0]):
        idx += range(pos, offset)
        idx += [offset + i for i in kept]
        pos = offset + width
    return idx + list(range(pos, length))


def _slice(weights, axis, segments):
    grouped = [s for s in segments if s[0] == "grouped"]
    if grouped:   # ShuffleNet V1's gconv2 input: group k's outputs read group k's rows only
        (_, groups_, per_new, rows), = grouped
        out_per = weights.shape[-1] // groups_
        new = np.empty(weights.shape[:axis] + (per_new,) + weights.shape[axis + 1:], weights.dtype)
        for k in range(groups_):
            mine = rows[k * per_new:(k + 1) * per_new]
            if any(g != k for g, _ in mine):
                raise UserError("ShuffleNet V1 channel selection crossed a conv group")
            cols = slice(k * out_per, (k + 1) * out_per)
            new[..., cols] = np.take(weights[..., cols], [r for _, r in mine], axis=axis)
        return new
    return np.take(weights, _index(weights.shape[axis], segments), axis=axis)


def transfer(model, new_spec):
    """``new_spec`` built and filled from ``model`` (a float model of a wider spec of the same
    architecture, possibly at another input resolution): shrunk groups keep their largest-L2-norm
    channels, everything else is copied (no weight depends on the resolution; the shapes are checked)."""
    from tfmobile.models.registry import build, spec_of

    wrapped = _wrapped_layers(model)
    if wrapped:
        raise UserError(f"transfer needs the float model, but {model.name} is wrapped for QAT or "
                        f"pruning ({wrapped[0]}, ...): transfer the float checkpoint (or "
                        f"compress.strip a pruned model first), then apply the compression again")
    old_spec = spec_of(model)
    if old_spec is None:
        raise UserError("transfer needs a model built by tfmobile.models (it has no spec)")
    if not isinstance(new_spec, ModelSpec):
        raise UserError(f"transfer needs a ModelSpec, got {type(new_spec).__name__}")
    if tuple(new_spec.input_shape) != tuple(old_spec.input_shape):
        if new_spec.input_shape[-1] != old_spec.input_shape[-1]:
            raise UserError(f"{new_spec.name} takes {new_spec.input_shape[-1]} input channels, "
                            f"{old_spec.name} {old_spec.input_shape[-1]}: transfer keeps the channels")
        bound = _input_size_bound_layer(model)
        if bound is not None:
            raise UserError(f"{old_spec.name} cannot change its input resolution: layer {bound!r} "
                            f"folds a feature map into a vector whose width depends on the input size")
    old_groups = {g.name: g for g in _all_groups(old_spec)}
    new_groups = {g.name: g for g in _all_groups(new_spec)}
    at_old_input = new_spec.copy()
    at_old_input.input_shape = tuple(old_spec.input_shape)
    if set(old_groups) != set(new_groups) \
            or _with_widths(at_old_input, old_groups) != _comparable(old_spec):
        raise UserError(f"{new_spec.name} is not {old_spec.name} with narrower channel groups "
                        f"(or another input resolution)")
    maps = {}
    for name, old in old_groups.items():
        new_width = new_groups[name].width
        if new_width > old.width:
            raise UserError(f"group {name!r} grows from {old.width} to {new_width} channels; "
                            f"transfer only narrows")
        if new_width < old.width:
            for key, segs in _axis_maps(old, kept_channels(model, old, new_width), new_width).items():
                maps.setdefault(key, []).extend(segs)
    new_model = build(new_spec)
    for layer in new_model.layers:
        if not layer.weights:
            continue
        source = model.get_layer(layer.name).get_weights()
        axes = _AXES.get(type(layer).__name__, {})
        out = []
        for i, w in enumerate(source):
            for role in (IN, OUT, CHAN):
                segs = maps.get((layer.name, role))
                if segs and role in axes and axes[role][i] is not None:
                    w = _slice(w, axes[role][i], segs)
            out.append(w)
        if [w.shape for w in out] != [tuple(v.shape) for v in layer.weights]:
            raise UserError(f"layer {layer.name!r} of {new_spec.name} does not match the sliced "
                            f"weights of {old_spec.name}")
        layer.set_weights(out)
    return new_model


def _comparable(spec):
    d = spec.to_dict()
    d.pop("name")
    return d


def _with_widths(spec, groups_by_name):
    """``spec`` (as compared) with every group's fields set back to the width in ``groups_by_name``."""
    wide = spec.copy()
    for g in groups_by_name.values():
        for block, field in g.fields:
            i = wide.block_index(block)
            wide.blocks[i] = replace(wide.blocks[i], **{field: g.width})
    return _comparable(wide)
