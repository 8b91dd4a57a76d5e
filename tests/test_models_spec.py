"""The typed ModelSpec: block schema, explicit residuals, channel flow, argument rules, spec on a model."""
import json

import pytest
from conftest import run_cli

import tfmobile  # noqa: F401
import tf_keras as keras

from tfmobile import models
from tfmobile.errors import UserError
from tfmobile.models import ModelSpec, arguments, registry
from tfmobile.models.registry import get_spec
from tfmobile.models.blocks import InvertedResidual

SMALL = dict(input_shape=(32, 32, 3), classes=10)
ZOO_NAMES = sorted(registry.ZOO)   # not models.available(): tests may register stand-ins


def _adds(model):
    return sorted(l.name for l in model.layers if isinstance(l, keras.layers.Add))


# --- block schema ------------------------------------------------------------------------------
def test_with_block_misspelled_or_foreign_field_is_refused():
    spec = models.get_spec("mbv2", alpha=0.35, **SMALL)
    with pytest.raises(UserError) as e:
        spec.with_block("block_3", expandd=40)
    msg = str(e.value)
    assert "expandd" in msg and "block_3" in msg and "expanded, filters, kernel" in msg
    assert "\n" not in msg
    with pytest.raises(UserError, match="'stem' \\(conv_bn\\) has no field\\(s\\) expanded"):
        spec.with_block("stem", expanded=8)
    with pytest.raises(UserError, match="no block named 'block_99'"):
        spec.with_block("block_99", filters=8)
    # a valid field with a bad value is refused at the edit, by the field's rule
    with pytest.raises(UserError, match="block 'block_3': filters must be a positive integer"):
        spec.with_block("block_3", filters=0)
    # and the original is untouched
    assert spec.block("block_3").expanded == 48


def test_blocks_have_attribute_access_and_defaults():
    spec = models.get_spec("mbv1", alpha=0.25, **SMALL)
    stem = spec.block("stem")
    assert (stem.filters, stem.kernel, stem.stride, stem.bias, stem.bn) == (8, 3, 2, False, True)
    sq = models.get_spec("squeezenet1_1", **SMALL)
    assert sq.block("fire2").bypass == "none" and sq.block("fire2").use_residual is False


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_json_round_trip_every_family(name):
    spec = models.get_spec(name, **SMALL)
    d = json.loads(spec.to_json())
    assert all(list(b)[:2] == ["type", "name"] for b in d["blocks"])
    assert models.ModelSpec.from_json(spec.to_json()) == spec


def test_old_spec_files_still_load_and_keep_their_skips():
    """A spec.json written before the typed schema: MobileNet's classifier repeated classes /
    dropout / activation, no use_residual anywhere, optional fields absent."""
    spec = models.get_spec("mbv3_small", alpha=0.5, **SMALL)
    old = spec.to_dict()
    for b in old["blocks"]:
        b.pop("use_residual", None)
        if b["type"] == "conv_bn":
            del b["bias"], b["bn"]
        if b["type"] == "classifier":
            b.update(classes=10, dropout=spec.dropout, activation="softmax")
    again = models.ModelSpec.from_dict(old)
    assert again == spec
    assert _adds(models.build(again)) == _adds(models.build(spec)) != []
    old["blocks"][-1]["classes"] = 12
    with pytest.raises(UserError, match="classes=12 disagrees with the spec's classes=10"):
        models.ModelSpec.from_dict(old)


def test_unknown_block_type_or_field_in_a_file():
    d = models.get_spec("mbv2", alpha=0.35, **SMALL).to_dict()
    d["blocks"][2]["filterz"] = 3
    with pytest.raises(UserError, match="'block_1' \\(inverted_residual\\) has no field\\(s\\) filterz"):
        models.ModelSpec.from_dict(d)
    d["blocks"][2] = {"type": "resnet_block", "name": "x"}
    with pytest.raises(UserError, match="unknown type 'resnet_block'"):
        models.ModelSpec.from_dict(d)


def test_every_block_type_is_used_by_the_zoo():
    """So that building the zoo (test_channel_flow_matches_the_built_model) builds every type."""
    specs = [models.get_spec(n, **SMALL) for n in ZOO_NAMES]
    specs += [models.get_spec("mbv3_small", include_preprocessing=True, include_top=False,
                              pooling="avg", **SMALL)]
    assert {b.type for s in specs for b in s.blocks} == {kind.type for kind in registry.ZOO_KINDS}


# --- residuals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kw,block,change,producer", [
    ("mbv2", dict(alpha=0.35), "block_2", dict(filters=16), "block_1"),
    ("mbv3_large", dict(alpha=0.5), "block_5", dict(filters=48), "block_4"),
    ("shufflenet_v1", dict(alpha=0.5, groups=2), "stage3_unit8", dict(out=96), "stage3_unit7"),
    ("squeezenet1_1", dict(bypass="simple"), "fire3", dict(expand3x3=32), "fire2"),
])
def test_a_width_that_breaks_a_skip_is_refused_naming_both_blocks(name, kw, block, change, producer):
    spec = models.get_spec(name, **kw, **SMALL)
    assert spec.block(block).use_residual is True
    edited = spec.with_block(block, **change)
    with pytest.raises(UserError) as e:
        models.build(edited)
    msg = str(e.value)
    assert f"block {block!r} adds its input" in msg and f"from {producer!r}" in msg, msg
    # the same width on the producing side is refused too (the first skip it breaks names it)
    key, value = next(iter(change.items()))
    if name.startswith("mbv"):
        with pytest.raises(UserError, match=f"'{producer}'"):
            spec.with_block(producer, filters=value).check()
    # dropping the skip is possible, but only by saying so (the last skip of its stage here)
    built = models.build(edited.with_block(block, use_residual=False))
    assert len(_adds(built)) == len(_adds(models.build(spec))) - 1


def test_residuals_are_derived_once_and_stored():
    spec = models.get_spec("mbv2", alpha=0.35, **SMALL)
    flags = {b.name: b.use_residual for b in spec.blocks if isinstance(b, InvertedResidual)}
    # MobileNetV2 Table 2: repeats after the first of each row add their input
    assert [n for n, f in flags.items() if f] == [
        "block_2", "block_4", "block_5", "block_7", "block_8", "block_9", "block_11", "block_12",
        "block_14", "block_15"]
    assert _adds(models.build(spec)) == sorted(f"{n}_add" for n, f in flags.items() if f)
    assert '"use_residual": true' in spec.to_json()


def test_shufflenet_v1_stride2_unit_cannot_add():
    spec = models.get_spec("shufflenet_v1", alpha=0.5, groups=2, **SMALL)
    with pytest.raises(UserError, match="stride-2 unit concatenates its input"):
        spec.with_block("stage2_unit1", use_residual=True).check()


# --- channel flow ------------------------------------------------------------------------------
def _last_layer_channels(model, block):
    mine = [l for l in model.layers if l.name.startswith(block + "_") or l.name == block]
    return mine[-1].output_shape[-1]


@pytest.mark.parametrize("name,kw", [(n, {}) for n in ZOO_NAMES] + [
    ("mbv3_small", dict(include_preprocessing=True, include_top=False, pooling="avg"))])
def test_channel_flow_matches_the_built_model(name, kw):
    spec = models.get_spec(name, **SMALL, **kw)
    flow = spec.channel_flow()
    model = models.build(spec)
    assert [f.name for f in flow] == [b.name for b in spec.blocks]
    assert flow[0].in_channels == 3 and flow[0].producer == "input"
    for prev, cur in zip(flow, flow[1:]):
        assert cur.in_channels == prev.out_channels and cur.producer == prev.name
    for f in flow[:-1]:   # the classifier changes rank
        assert f.out_channels == _last_layer_channels(model, f.name), f


def test_channel_flow_hand_computed_mbv2():
    flow = {f.name: f for f in models.get_spec("mbv2", alpha=0.35, **SMALL).channel_flow()}
    # alpha 0.35: stem make_divisible(32*.35=11.2, 8) = 16; rows 16->8, 24->8, 32->16
    assert (flow["stem"].out_channels, flow["block_0"].out_channels) == (16, 8)
    assert (flow["block_1"].in_channels, flow["block_1"].out_channels) == (8, 8)
    assert (flow["block_3"].in_channels, flow["block_3"].out_channels) == (8, 16)
    assert flow["top"].in_channels == 1280


# --- arguments ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_one_rule_per_argument_every_family(name):
    # bn_momentum 0 is valid everywhere (it was refused by ShuffleNet only); 1 nowhere
    spec = models.get_spec(name, bn_momentum=0.0, **SMALL)
    assert spec.options["bn_momentum"] == 0.0
    for bad, needle in [(dict(bn_momentum=1.0), "bn_momentum must be in [0, 1)"),
                        (dict(classes=0), "classes must be a positive integer"),
                        (dict(dropout=1.0), "dropout must be in [0, 1)"),
                        (dict(alpha=float("nan")), "alpha must be a positive number"),
                        (dict(classifier_activation="bogus"), "classifier_activation must be one of"),
                        (dict(include_top=False, pooling="sum"), "pooling must be one of")]:
        kw = dict(SMALL, **bad)
        with pytest.raises(UserError) as e:
            models.get_spec(name, **kw)
        assert needle in str(e.value), (name, bad, str(e.value))
    with pytest.raises(UserError, match=f"{name} does not take option\\(s\\): depth_multipler"):
        models.get_spec(name, depth_multipler=2)


def test_every_zoo_argument_has_a_rule():
    import inspect
    for name in ZOO_NAMES:
        for key in inspect.signature(registry.ZOO[name]).parameters:
            assert key == "input_shape" or key in arguments.RULES, (name, key)


def test_classes_live_on_the_spec_only():
    spec = models.get_spec("mbv1", alpha=0.25, **SMALL)
    assert not hasattr(spec.block("top"), "classes")
    spec.classes = 7
    assert models.build(spec).output_shape == (None, 7)


# --- the spec on a model -----------------------------------------------------------------------
def test_attach_spec_and_spec_of():
    spec = models.get_spec("mbv2", alpha=0.35, **SMALL)
    inp = keras.Input((4, 4, 3))
    plain = keras.Model(inp, keras.layers.Conv2D(2, 1)(inp))
    assert models.spec_of(plain) is None
    assert models.attach_spec(plain, spec) is plain
    assert models.spec_of(plain) == spec
    with pytest.raises(UserError, match="attach_spec needs a ModelSpec"):
        models.attach_spec(plain, spec.to_dict())


def _huge_spec_dict(**changes):
    spec = get_spec("mbv2", alpha=0.35, input_shape=(32, 32, 3), classes=10).to_dict()
    spec.update(changes)
    return spec


@pytest.mark.parametrize("shape, needle", [
    ([100000, 100000, 3], "input_shape 100000x100000 is above the largest resolution, 1024x1024"),
    ([32, 1025, 3], "input_shape 32x1025 is above the largest resolution"),
    ([32, 32, 10 ** 7], "more than the largest width 16384"),
])
def test_spec_bound_applies_to_every_reader(shape, needle):
    with pytest.raises(UserError, match=needle):
        ModelSpec.from_dict(_huge_spec_dict(input_shape=shape))
    built = get_spec("mbv2", alpha=0.35, input_shape=(32, 32, 3), classes=10)
    built.input_shape = tuple(shape)          # a spec made in code is refused by check()
    with pytest.raises(UserError, match=needle):
        built.check()
    assert ModelSpec.from_dict(_huge_spec_dict(input_shape=[1024, 1024, 3])).input_shape == (1024, 1024, 3)


def test_netadapt_checkpoint_with_a_huge_input_is_refused_before_building(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "spec.json").write_text(json.dumps(_huge_spec_dict(input_shape=[100000, 100000, 3])))
    (ckpt / "checkpoint.json").write_text(json.dumps({"compression": None, "epoch": 1, "metrics": {}}))
    p = run_cli("pipelines.netadapt", "--checkpoint", ckpt, "--resource", "macs", "--target", "0.5",
                "--subset", "--output_dir", tmp_path / "out", timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "is above the largest resolution, 1024x1024" in errors[0], p.stderr[-2000:]
