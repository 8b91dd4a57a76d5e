"""A block type registered in one call (docs/blocks.md) is loadable, buildable, shrinkable, transferable
and predictable: the toy bottleneck below is the docs' example, and every path is checked on it."""
import collections
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from test_netadapt_resource import trained_like

import tfmobile  # noqa: F401
from tfmobile import analysis, models
from tfmobile.bench import graph
from tfmobile.errors import UserError
from tfmobile.models import kinds, registry, surgery
from tfmobile.models import layers as L
from tfmobile.models.blocks import POSITIVE, STRIDE, Block, spec_field
from tfmobile.models.channels import IN
from tfmobile.models.kinds import BlockKind
from tfmobile.netadapt.resource import resource
from tfmobile.netadapt.resource import ensure_lut, int8_ops


# --- the toy block type, as docs/blocks.md shows it -------------------------------------------
@dataclass(kw_only=True)
class ToyBottleneck(Block):
    """1x1 conv to ``mid`` -> ReLU -> 3x3 conv (stride) to ``filters`` -> ReLU."""

    type: ClassVar[str] = "toy_bottleneck"
    mid: int = spec_field(POSITIVE)
    filters: int = spec_field(POSITIVE)
    stride: int = spec_field(STRIDE, 1)

    def out_channels(self, cin):
        return self.filters


def toy_build(x, b, spec):
    x = L.conv_bn_act(x, b.mid, 1, 1, f"{b.name}_reduce", act="relu")
    return L.conv_bn_act(x, b.filters, 3, b.stride, f"{b.name}_main", act="relu")


def toy_channels(w, b, segs):
    w.tie_input(segs, f"{b.name}_reduce_conv", IN)
    mid = w.conv_out(f"{b.name}/mid", b.mid, "mid", f"{b.name}_reduce_conv", f"{b.name}_reduce_bn")
    w.tie(mid, f"{b.name}_main_conv", IN)
    return [(w.conv_out(b.name, b.filters, "filters", f"{b.name}_main_conv", f"{b.name}_main_bn"),
             b.filters)]


def toy_int8(g, x, b, spec):
    x = g.conv(x, b.mid, 1, act="relu")
    return g.conv(x, b.filters, 3, b.stride, act="relu")


kinds.register(BlockKind(ToyBottleneck, toy_build, toy_channels, toy_int8))


@registry.register_model("toy_net")
def toy_net(input_shape=(32, 32, 3), alpha=1.0, classes=10):
    blocks = [{"type": "toy_bottleneck", "name": "t1", "mid": 16, "filters": 24, "stride": 2},
              {"type": "toy_bottleneck", "name": "t2", "mid": 32, "filters": 40, "stride": 2},
              {"type": "classifier", "name": "head"}]
    return models.ModelSpec("toy_net", "toy_net", tuple(input_shape), blocks, classes=classes)


def _spec():
    return models.get_spec("toy_net")


def test_loads_checks_and_builds():
    spec = _spec()
    again = models.ModelSpec.from_json(spec.to_json())
    assert again == spec and isinstance(again.block("t1"), ToyBottleneck)
    with pytest.raises(UserError, match="mid must be a positive integer"):
        spec.with_block("t1", mid=0)
    model = models.build(spec)
    names = {layer.name for layer in model.layers}
    assert {"t1_reduce_conv", "t1_main_conv", "t2_main_bn", "head_logits"} <= names
    assert model.get_layer("t2_main_conv").output.shape[1:] == (8, 8, 40)


def test_groups_shrink_and_transfer():
    spec = _spec()
    assert {g.name: g.width for g in surgery.groups(spec)} == {"t1/mid": 16, "t1": 24, "t2/mid": 32, "t2": 40}
    narrower = surgery.shrink(spec, "t1/mid", 8)
    assert narrower.block("t1").mid == 8 and narrower.block("t2") == spec.block("t2")
    model = models.build(spec)
    reduce = model.get_layer("t1_reduce_conv")
    kernel = reduce.get_weights()[0]
    dropped = [1, 2, 4, 7, 9, 10, 12, 15]
    kernel[..., dropped] = 0.0      # with fresh BN (beta 0, mean 0) these channels are exactly 0
    reduce.set_weights([kernel])
    moved = surgery.transfer(model, narrower)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(moved(x, training=False), model(x, training=False), rtol=1e-5, atol=1e-6)
    kept = [c for c in range(16) if c not in dropped]
    np.testing.assert_array_equal(moved.get_layer("t1_main_conv").get_weights()[0],
                                  model.get_layer("t1_main_conv").get_weights()[0][:, :, kept, :])


def test_int8_ops_equal_the_converted_model_and_resources_are_predicted(tmp_path):
    from tfmobile.convert import to_tflite
    spec = surgery.shrink(_spec(), "t2/mid", 24)
    data = to_tflite(trained_like(models.build(spec)), "int8", io="int8", num_calibration=4)
    want = collections.Counter(graph.config_key(layer["config"]) for layer in graph.layers(data))
    assert collections.Counter(op["key"] for op in int8_ops(spec)["ops"]) == want
    assert resource(spec, "macs") == analysis.profile(spec).macs > 0
    derived = int8_ops(spec)
    assert resource(spec, "flash") == analysis.int8_flash(derived)["flash_bytes"]
    assert abs(resource(spec, "flash") - len(data)) <= 0.25 * len(data)   # 20 kB: fixed bytes dominate
    assert resource(spec, "peak_sram") == analysis.tflm_arena(derived)["arena_bytes"] > 0
    lut = str(tmp_path / "lut.json")
    assert ensure_lut([spec], lut) == len(want)
    assert resource(spec, "latency", lut=lut) > 0


def test_a_kind_without_int8_ops_or_channel_rules_says_so():
    @dataclass(kw_only=True)
    class Opaque(Block):
        type: ClassVar[str] = "toy_opaque"

    kinds.register(BlockKind(Opaque, lambda x, b, spec: x))
    spec = _spec()
    spec.blocks.insert(1, Opaque(name="o"))
    with pytest.raises(UserError, match="has no channel surgery"):
        surgery.groups(spec)
    with pytest.raises(UserError, match="does not model block type 'toy_opaque'"):
        resource(spec, "flash")

    class Impostor(Opaque):
        type: ClassVar[str] = "toy_bottleneck"

    with pytest.raises(UserError, match="is already ToyBottleneck"):
        kinds.register(BlockKind(Impostor, toy_build))
