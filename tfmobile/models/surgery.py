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

ShuffleNet's stage channels pass through channel shuffles, splits and concatenations that mix
every stage; its shrinkable widths are the branch (``mid``) widths of each stage, where V1's
grouped 1x1 convolutions and shuffle are followed channel by channel.
"""
import math
from dataclasses import dataclass, replace

import numpy as np

from tfmobile.errors import UserError
from tfmobile.models.blocks import (Classifier, ConvBN, DwSeparable, Fire, GlobalPool,
                                    InvertedResidual, Rescale, ShuffleClassifier, ShuffleConv,
                                    ShuffleMaxPool, ShuffleV1Unit, ShuffleV2Unit, SqueezeClassifier,
                                    SqueezeMaxPool, SqueezeStem)
from tfmobile.models.spec import ModelSpec

DEFAULT_CHANNEL_STEP = 8

# Tie roles: which axis of a layer's weights holds the group's channels.
OUT = "out"        # conv / dense output channels (kernel's last axis, bias)
IN = "in"          # conv / dense input channels
CHAN = "chan"      # per-channel layers: BatchNorm (all weights), depthwise kernel axis 2
# ShuffleNet V1's branch: grouped 1x1 convs around a channel shuffle (see _v1_layout)
SHUFFLED_CHAN = "shuffled_chan"   # the depthwise and its BN, after the shuffle
GROUPED_IN = "grouped_in"         # the second grouped 1x1's input channels


@dataclass(frozen=True)
class Tie:
    layer: str
    role: str
    offset: int = 0        # where the group's channels start on that axis (concatenations)
    part: int = 0          # channels of different parts are chosen independently (per-stage widths)
    score: bool = False    # a producer whose kernel norms choose the kept channels


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


class _Draft:
    """A group while the spec is walked; merged by residual Adds, frozen where it cannot shrink."""

    def __init__(self, name, width, step, fields):
        self.name, self.width, self.step = name, width, step
        self.fields, self.ties, self.shuffle = list(fields), [], []
        self.frozen, self.parts = False, 1
        self.alias = None

    def root(self):
        d = self
        while d.alias is not None:
            d = d.alias
        return d


class _Walker:
    def __init__(self, spec, step):
        self.spec, self.step, self.drafts = spec, step, []
        self.stage_mid = None

    def new(self, name, width, fields, step=None):
        d = _Draft(name, width, step or self.step, fields)
        self.drafts.append(d)
        return d

    def tie(self, draft, layer, role, offset=0, part=0, score=False):
        if draft is not None:
            draft.root().ties.append(Tie(layer, role, offset, part, score))

    def tie_input(self, segments, layer, role):
        for draft, offset, _ in _offsets(segments):
            self.tie(draft, layer, role, offset)

    def freeze(self, segments):
        for draft, _ in segments:
            if draft is not None:
                draft.root().frozen = True

    def merge(self, keep, other):
        keep, other = keep.root(), other.root()
        if keep is other:
            return keep
        keep.fields += other.fields
        keep.ties += other.ties
        keep.frozen |= other.frozen
        other.alias = keep
        return keep

    def conv_out(self, name, width, field, conv, bn=None):
        d = self.new(name, width, [(name.split("/")[0], field)])
        self.tie(d, conv, OUT, score=True)
        if bn:
            self.tie(d, bn, CHAN)
        return d


def _offsets(segments):
    offset = 0
    for draft, width in segments:
        yield draft, offset, width
        offset += width


# --- one function per block type: (walker, block, input segments) -> output segments ----------
def _conv_bn(w, b, segs):
    w.tie_input(segs, f"{b.name}_conv", IN)
    return [(w.conv_out(b.name, b.filters, "filters", f"{b.name}_conv", b.bn and f"{b.name}_bn"),
             b.filters)]


def _dw_separable(w, b, segs):
    if b.depth_multiplier != 1:
        w.freeze(segs)
    for layer in (f"{b.name}_dw", f"{b.name}_dw_bn"):
        w.tie_input(segs, layer, CHAN)
    w.tie_input(segs, f"{b.name}_pw_conv", IN)
    return [(w.conv_out(b.name, b.filters, "filters", f"{b.name}_pw_conv", f"{b.name}_pw_bn"),
             b.filters)]


def _inverted_residual(w, b, segs):
    n = b.name
    mid = segs
    if b.expanded is not None:
        w.tie_input(segs, f"{n}_expand_conv", IN)
        mid = [(w.conv_out(f"{n}/expanded", b.expanded, "expanded", f"{n}_expand_conv",
                           f"{n}_expand_bn"), b.expanded)]
    for layer in (f"{n}_dw", f"{n}_dw_bn"):
        w.tie_input(mid, layer, CHAN)
    if b.se is not None:
        w.tie_input(mid, f"{n}_se_squeeze", IN)
        w.tie_input(mid, f"{n}_se_excite", OUT)      # the gate: sliced, not scored
        se = w.conv_out(f"{n}/se", b.se, "se", f"{n}_se_squeeze")
        w.tie(se, f"{n}_se_excite", IN)
    w.tie_input(mid, f"{n}_project_conv", IN)
    out = w.conv_out(n, b.filters, "filters", f"{n}_project_conv", f"{n}_project_bn")
    if not b.use_residual:
        return [(out, b.filters)]
    if len(segs) != 1 or segs[0][0] is None:
        w.freeze(segs + [(out, b.filters)])
        return segs
    return [(w.merge(segs[0][0], out), b.filters)]


def _passthrough(w, b, segs):
    return segs


def _classifier(w, b, segs):
    n = b.name
    if b.hidden is not None:
        w.tie_input(segs, f"{n}_hidden_conv", IN)
        segs = [(w.conv_out(f"{n}/hidden", b.hidden, "hidden", f"{n}_hidden_conv"), b.hidden)]
    w.tie_input(segs, f"{n}_logits", IN)
    return [(None, w.spec.classes)]


def _shuffle_conv(w, b, segs):
    w.tie_input(segs, f"{b.name}_conv", IN)
    return [(w.conv_out(b.name, b.filters, "filters", f"{b.name}_conv", f"{b.name}_bn"), b.filters)]


def _stage_mid(w, b, step):
    """The branch width shared by a stage's units (a new part per unit: their channels are their own)."""
    if b.stride == 2 or w.stage_mid is None:
        w.stage_mid = w.new(f"{b.name.rsplit('_unit', 1)[0]}/mid", b.mid, [], step)
        part = 0
    else:
        part = w.stage_mid.parts
        w.stage_mid.parts += 1
    d = w.stage_mid
    d.fields.append((b.name, "mid"))
    if d.width != b.mid:
        d.frozen = True   # an edited spec whose stage is not uniform: leave that stage alone
    return d, part


def _shufflenet_v1_unit(w, b, segs):
    w.freeze(segs)    # grouped input, and added to or concatenated with the output
    n = b.name
    step = math.lcm(w.step, b.first_groups, b.groups)
    d, part = _stage_mid(w, b, step)
    w.tie(d, f"{n}_gconv1", OUT, part=part, score=True)
    w.tie(d, f"{n}_gconv1_bn", CHAN, part=part)
    for layer in (f"{n}_dw", f"{n}_dw_bn"):
        w.tie(d, layer, SHUFFLED_CHAN, part=part)
    w.tie(d, f"{n}_gconv2", GROUPED_IN, part=part)
    d.shuffle.append((b.first_groups, b.groups))
    return [(None, b.out)]


def _shufflenet_v2_unit(w, b, segs):
    n = b.name
    if b.stride == 2:
        for layer in (f"{n}_left_dw", f"{n}_left_dw_bn"):
            w.tie_input(segs, layer, CHAN)
        w.tie_input(segs, f"{n}_left_conv", IN)
        w.tie_input(segs, f"{n}_conv1", IN)
        if b.left is None:
            w.freeze(segs)
    else:
        w.freeze(segs)    # split in half: the halves go different ways
    d, part = _stage_mid(w, b, w.step)
    w.tie(d, f"{n}_conv1", OUT, part=part, score=True)
    for layer in (f"{n}_conv1_bn", f"{n}_dw", f"{n}_dw_bn"):
        w.tie(d, layer, CHAN, part=part)
    w.tie(d, f"{n}_conv2", IN, part=part)
    return [(None, b.out)]


def _top_consumer(layer_suffix):
    def handle(w, b, segs):
        if w.spec.include_top:
            w.tie_input(segs, f"{b.name}_{layer_suffix}", IN)
        return [(None, w.spec.classes if w.spec.include_top else sum(x for _, x in segs))]
    return handle


def _squeezenet_stem(w, b, segs):
    w.tie_input(segs, f"{b.name}_conv", IN)
    return [(w.conv_out(b.name, b.filters, "filters", f"{b.name}_conv"), b.filters)]


def _fire(w, b, segs):
    n = b.name
    w.tie_input(segs, f"{n}_squeeze", IN)
    squeeze = w.conv_out(f"{n}/squeeze", b.squeeze, "squeeze", f"{n}_squeeze")
    w.tie(squeeze, f"{n}_expand1x1", IN)
    w.tie(squeeze, f"{n}_expand3x3", IN)
    e1 = w.conv_out(f"{n}/expand1x1", b.expand1x1, "expand1x1", f"{n}_expand1x1")
    e3 = w.conv_out(f"{n}/expand3x3", b.expand3x3, "expand3x3", f"{n}_expand3x3")
    out = [(e1, b.expand1x1), (e3, b.expand3x3)]
    if b.use_residual:
        if [x for _, x in segs] == [b.expand1x1, b.expand3x3] and all(d is not None for d, _ in segs):
            return [(w.merge(d_in, d_out), x) for (d_in, x), (d_out, _) in zip(segs, out)]
        w.freeze(segs + out)      # the Add ties channels across the two branches
        return out
    if b.bypass == "complex":
        w.tie_input(segs, f"{n}_bypass_conv", IN)
        for draft, offset, _ in _offsets(out):
            w.tie(draft, f"{n}_bypass_conv", OUT, offset)
    return out


_HANDLERS = {
    ConvBN: _conv_bn, DwSeparable: _dw_separable, InvertedResidual: _inverted_residual,
    Rescale: _passthrough, GlobalPool: _passthrough, Classifier: _classifier,
    ShuffleConv: _shuffle_conv, ShuffleMaxPool: _passthrough, ShuffleV1Unit: _shufflenet_v1_unit,
    ShuffleV2Unit: _shufflenet_v2_unit, ShuffleClassifier: _top_consumer("fc"),
    SqueezeStem: _squeezenet_stem, SqueezeMaxPool: _passthrough, Fire: _fire,
    SqueezeClassifier: _top_consumer("conv"),
}


def _all_groups(spec, channel_step=DEFAULT_CHANNEL_STEP):
    """Every channel group of ``spec`` that shrinking may touch (frozen ones left out)."""
    if not isinstance(spec, ModelSpec):
        raise UserError(f"channel groups need a ModelSpec, got {type(spec).__name__}")
    if not (isinstance(channel_step, int) and not isinstance(channel_step, bool) and channel_step > 0):
        raise UserError(f"channel_step must be a positive integer, got {channel_step!r}")
    spec.check()
    w = _Walker(spec, channel_step)
    segs = [(None, spec.input_shape[-1])]
    for b in spec.blocks:
        handler = _HANDLERS.get(type(b))
        if handler is None:
            raise UserError(f"block {b.name!r} ({b.type}) has no channel surgery")
        segs = handler(w, b, segs)
    w.freeze(segs)    # the network's output (logits or features) keeps its width
    out = []
    for d in w.drafts:
        if d.alias is None and not d.frozen and d.fields:
            out.append(Group(d.name, d.width, d.step, tuple(d.fields), tuple(d.ties),
                             tuple(d.shuffle)))
    return out


def groups(spec, channel_step=DEFAULT_CHANNEL_STEP):
    """The independently shrinkable channel sets of ``spec`` that have a narrower width to go to."""
    return [g for g in _all_groups(spec, channel_step) if g.widths()]


def _find(spec, group, channel_step):
    name = group.name if isinstance(group, Group) else group
    for g in _all_groups(spec, channel_step):
        if g.name == name:
            return g
    raise UserError(f"spec {spec.name} has no channel group {name!r} (see netadapt.groups(spec))")


def shrink(spec, group, width, channel_step=DEFAULT_CHANNEL_STEP):
    """A copy of ``spec`` with ``group`` (a Group or its name) at ``width`` channels."""
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
    architecture): shrunk groups keep their largest-L2-norm channels, everything else is copied."""
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
    old_groups = {g.name: g for g in _all_groups(old_spec)}
    new_groups = {g.name: g for g in _all_groups(new_spec)}
    if set(old_groups) != set(new_groups) or _with_widths(new_spec, old_groups) != _comparable(old_spec):
        raise UserError(f"{new_spec.name} is not {old_spec.name} with narrower channel groups")
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
