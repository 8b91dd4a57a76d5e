"""The channel ties of a spec, as each block kind states them (its ``channels`` rule).

Surgery (``tfmobile.models.surgery``) walks a spec block by block; each block kind's ``channels``
function receives the ``ChannelWalker``, the block and its input ``segments`` (a list of (draft
group, width) pairs: a concatenation has several) and returns its output segments. A kind says
which Keras layers carry each channel set (``Tie``): the producers whose output channels it is,
the per-channel layers it passes through (BatchNorm, depthwise), and the consumers whose input
channels it is, at an offset into a concatenation. A residual Add merges the two sets it ties; a
set that cannot shrink (an odd split, a grouped input) is frozen.
"""
import math
from dataclasses import dataclass

# Tie roles: which axis of a layer's weights holds the group's channels.
OUT = "out"        # conv / dense output channels (kernel's last axis, bias)
IN = "in"          # conv / dense input channels
CHAN = "chan"      # per-channel layers: BatchNorm (all weights), depthwise kernel axis 2
# ShuffleNet V1's branch: grouped 1x1 convs around a channel shuffle (transfer follows the shuffle)
SHUFFLED_CHAN = "shuffled_chan"   # the depthwise and its BN, after the shuffle
GROUPED_IN = "grouped_in"         # the second grouped 1x1's input channels


@dataclass(frozen=True)
class Tie:
    layer: str
    role: str
    offset: int = 0        # where the group's channels start on that axis (concatenations)
    part: int = 0          # channels of different parts are chosen independently (per-stage widths)
    score: bool = False    # a producer whose kernel norms choose the kept channels


class Draft:
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


def segment_offsets(segments):
    """(draft, offset, width) of each segment of a concatenated tensor."""
    offset = 0
    for draft, width in segments:
        yield draft, offset, width
        offset += width


class ChannelWalker:
    """What a kind's ``channels`` rule may do: open groups, tie layers to them, merge, freeze."""

    def __init__(self, spec, step):
        self.spec, self.step, self.drafts = spec, step, []
        self.stage_draft = None

    def new(self, name, width, fields, step=None):
        d = Draft(name, width, step or self.step, fields)
        self.drafts.append(d)
        return d

    def tie(self, draft, layer, role, offset=0, part=0, score=False):
        if draft is not None:
            draft.root().ties.append(Tie(layer, role, offset, part, score))

    def tie_input(self, segments, layer, role):
        for draft, offset, _ in segment_offsets(segments):
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
        """A new group: the output channels of ``conv`` (scored) and its BatchNorm."""
        d = self.new(name, width, [(name.split("/")[0], field)])
        self.tie(d, conv, OUT, score=True)
        if bn:
            self.tie(d, bn, CHAN)
        return d

    def stage_mid(self, block, step=None):
        """The branch width shared by a stage's units (ShuffleNet ``mid``): a stride-2 unit opens the
        stage; each unit is its own part (its channels are chosen on their own). -> (draft, part)."""
        if block.stride == 2 or self.stage_draft is None:
            name = f"{block.name.rsplit('_unit', 1)[0]}/mid"
            self.stage_draft = self.new(name, block.mid, [], step or self.step)
            part = 0
        else:
            part = self.stage_draft.parts
            self.stage_draft.parts += 1
        d = self.stage_draft
        d.fields.append((block.name, "mid"))
        if d.width != block.mid:
            d.frozen = True   # an edited spec whose stage is not uniform: leave that stage alone
        return d, part

    def grouped_step(self, *groups):
        """The channel step of a width that grouped convolutions with ``groups`` must divide."""
        return math.lcm(self.step, *groups)


def passthrough(walker, block, segments):
    """Channels unchanged (pools, rescaling)."""
    return segments


def top_consumer(layer_suffix):
    """A ShuffleNet / SqueezeNet head: ``<name>_<layer_suffix>`` reads the channels (include_top)."""
    def channels(walker, block, segments):
        if walker.spec.include_top:
            walker.tie_input(segments, f"{block.name}_{layer_suffix}", IN)
        return [(None, walker.spec.classes if walker.spec.include_top else sum(x for _, x in segments))]
    return channels
