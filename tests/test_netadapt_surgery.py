"""NetAdapt's channel surgery: groups of a spec, shrinking one, and weight transfer (issue 11, 1-2).

The default suite shrinks a sample of each family's groups and transfers a few per family; ``-m slow``
shrinks every group of every family at two widths.
"""
import numpy as np
import pytest

import tfmobile  # noqa: F401
import tf_keras as keras

from tfmobile import analysis, models, netadapt
from tfmobile.errors import UserError
from tfmobile.models import surgery

SMALL = dict(input_shape=(32, 32, 3), classes=10)
FAMILY_KW = {"shufflenet_v1": dict(groups=2), "squeezenet1_0": dict(bypass="simple"),
             "squeezenet1_1": dict(bypass="complex")}


def _spec(name, alpha, **kw):
    return models.get_spec(name, alpha=alpha, **SMALL, **dict(FAMILY_KW.get(name, {}), **kw))


def _adds(model):
    return sum(isinstance(l, keras.layers.Add) for l in model.layers)


# --- groups ------------------------------------------------------------------------------------
def test_mbv2_groups_by_hand():
    """MobileNetV2 alpha 0.35 (Table 2 widths 16, 8, 8, 16, 24, 32, 56, 112 after rounding)."""
    gs = {g.name: g for g in netadapt.groups(_spec("mbv2", 0.35))}
    # residual stage of blocks 3-5 (32 * 0.35 -> 16 channels): one group, three producers, the
    # expansions of blocks 4, 5 and 6 consume it
    stage = gs["block_3"]
    assert stage.width == 16 and stage.fields == (
        ("block_3", "filters"), ("block_4", "filters"), ("block_5", "filters"))
    assert stage.producers == ("block_3_project_conv", "block_4_project_conv", "block_5_project_conv")
    assert set(stage.consumers) == {"block_4_expand_conv", "block_5_expand_conv",
                                    "block_6_expand_conv"}
    exp = gs["block_3/expanded"]
    assert exp.width == 48 and exp.producers == ("block_3_expand_conv",)
    assert {t.layer for t in exp.ties if t.role == surgery.CHAN} == {
        "block_3_expand_bn", "block_3_dw", "block_3_dw_bn"}
    assert exp.consumers == ("block_3_project_conv",)
    assert gs["head"].width == 1280 and gs["head"].consumers == ("top_logits",)
    assert gs["stem"].width == 16
    # 8-channel groups (block_0, the 8-wide stage of blocks 1-2) cannot shrink by a step of 8
    assert "block_0" not in gs and "block_1" not in gs and "block_1/expanded" in gs
    assert gs["block_1/expanded"].widths() == [40, 32, 24, 16, 8]


def test_se_hidden_and_residual_stem_groups_of_mbv3():
    gs = {g.name: g for g in netadapt.groups(_spec("mbv3_large", 1.0))}
    # block_0 (16 -> 16, stride 1, no expansion) adds the stem's output: stem and block_0 are one group
    assert gs["stem"].fields == (("stem", "filters"), ("block_0", "filters"))
    se = gs["block_3/se"]
    assert se.producers == ("block_3_se_squeeze",) and se.consumers == ("block_3_se_excite",)
    # the expansion's gate comes back through the excite conv (sliced, not scored)
    assert any(t.layer == "block_3_se_excite" and t.role == surgery.OUT and not t.score
               for t in gs["block_3/expanded"].ties)
    assert gs["top/hidden"].width == 1280 and gs["top/hidden"].consumers == ("top_logits",)


def test_shufflenet_and_squeezenet_groups():
    v1 = {g.name: g for g in netadapt.groups(_spec("shufflenet_v1", 1.0, groups=3))}
    assert sorted(v1) == ["stage2/mid", "stage3/mid", "stage4/mid"]
    assert v1["stage3/mid"].channel_step == 24 and v1["stage3/mid"].width == 120
    assert len(v1["stage3/mid"].fields) == 8    # all units of the stage
    v2 = {g.name: g for g in netadapt.groups(_spec("shufflenet_v2", 1.0))}
    assert sorted(v2) == ["conv1", "conv5", "stage2/mid", "stage3/mid", "stage4/mid"]
    sq = {g.name: g for g in netadapt.groups(_spec("squeezenet1_1", 1.0, bypass="simple"))}
    # fire3 adds fire2's output (128 = 128), fire5 fire4's: their expand branches are tied
    assert sq["fire2/expand1x1"].fields == (("fire2", "expand1x1"), ("fire3", "expand1x1"))
    assert "fire3/expand1x1" not in sq
    assert sq["fire4/expand3x3"].fields == (("fire4", "expand3x3"), ("fire5", "expand3x3"))
    assert sq["fire3/squeeze"].fields == (("fire3", "squeeze"),)
    # the second branch starts after the first on the consumers' input axis
    assert {(t.layer, t.offset) for t in sq["fire2/expand3x3"].ties if t.role == surgery.IN} == {
        ("fire3_squeeze", 64), ("fire4_squeeze", 64)}


def _sample(groups, n):
    if len(groups) <= n:
        return groups
    step = len(groups) / n
    return [groups[int(i * step)] for i in range(n)]


def _check_shrinks(spec, gs):
    model = models.build(spec)
    macs, adds = analysis.profile(model).macs, _adds(model)
    for g in gs:
        width = g.widths()[0]
        assert width % g.channel_step == 0 and width >= g.channel_step
        smaller = models.build(netadapt.shrink(spec, g, width))
        assert analysis.profile(smaller).macs < macs, g.name
        assert _adds(smaller) == adds, g.name


@pytest.mark.parametrize("name", models.available())
def test_groups_shrink_one_step(name):
    spec = _spec(name, 0.5)
    gs = netadapt.groups(spec)
    assert gs
    _check_shrinks(spec, _sample(gs, 4))


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.35, 1.0])
@pytest.mark.parametrize("name", models.available())
def test_every_group_shrinks_one_step(name, alpha):
    spec = _spec(name, alpha)
    _check_shrinks(spec, netadapt.groups(spec))


def test_shrink_bad_input():
    spec = _spec("mbv2", 0.35)
    for group, width, needle in [("block_99", 8, "no channel group 'block_99'"),
                                 ("block_3", 24, "has 16 channels; it cannot grow to 24"),
                                 ("block_3", 12, "multiple of 8 and at least 8"),
                                 ("block_3", 0, "multiple of 8 and at least 8"),
                                 ("block_3", 8.0, "width must be an integer")]:
        with pytest.raises(UserError) as e:
            netadapt.shrink(spec, group, width)
        assert needle in str(e.value), str(e.value)
    g = {g.name: g for g in netadapt.groups(spec)}["block_3"]
    shrunk = netadapt.shrink(spec, g, 8)
    assert [shrunk.block(b).filters for b in ("block_3", "block_4", "block_5")] == [8, 8, 8]
    assert spec.block("block_3").filters == 16     # the input spec is not touched
    with pytest.raises(UserError, match="at least 24"):
        netadapt.shrink(_spec("shufflenet_v1", 1.0, groups=3), "stage3/mid", 16)


# --- weight transfer ---------------------------------------------------------------------------
def randomise(model, seed=0):
    """Non-trivial BN statistics and biases (kernels keep their random init)."""
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = (w.shape for w in ws)
            layer.set_weights([rng.uniform(0.5, 1.5, g), rng.normal(0, 0.2, b),
                               rng.normal(0, 0.2, m), rng.uniform(0.5, 1.5, v)])
        elif len(ws) == 2:
            layer.set_weights([ws[0], rng.normal(0, 0.2, ws[1].shape)])
    return model


def _silence_dropped(model, group, keep):
    """Zero the consumers' input weights of the channels transfer drops: they then add nothing."""
    for t in group.ties:
        if t.role not in (surgery.IN, surgery.GROUPED_IN):
            continue
        layer = model.get_layer(t.layer)
        ws = layer.get_weights()
        kernel = ws[0]
        dropped = [c for c in range(group.width) if c not in set(keep[t.part])]
        if t.role == surgery.IN:
            axis = 0 if isinstance(layer, keras.layers.Dense) else 2
            index = [slice(None)] * kernel.ndim
            index[axis] = [t.offset + c for c in dropped]
            kernel[tuple(index)] = 0
        else:   # ShuffleNet V1: channel c reaches gconv2 group s // per at row s % per
            first_groups, groups = group.shuffle[t.part]
            per, out_per = group.width // groups, kernel.shape[-1] // groups
            per_first = group.width // first_groups
            for c in dropped:
                a, p = divmod(c, per_first)
                s = p * first_groups + a if first_groups > 1 else c
                kernel[:, :, s % per, (s // per) * out_per:(s // per + 1) * out_per] = 0
        ws[0] = kernel
        layer.set_weights(ws)


def _check_transfer_exact(name, pick):
    spec = _spec(name, 0.5, classifier_activation=None)
    model = randomise(models.build(spec))
    original = model.get_weights()
    x = np.random.RandomState(1).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    audible = 0.0
    for g in pick(netadapt.groups(spec)):
        model.set_weights(original)
        width = g.widths()[0]
        keep = netadapt.kept_channels(model, g, width)
        before = model(x, training=False).numpy()
        _silence_dropped(model, g, keep)
        want = model(x, training=False).numpy()
        small = netadapt.transfer(model, netadapt.shrink(spec, g, width))
        got = small(x, training=False).numpy()
        assert models.spec_of(small) == netadapt.shrink(spec, g, width)
        scale = max(1.0, float(np.abs(want).max()))
        assert np.abs(got - want).max() <= 1e-5 * scale, (g.name, np.abs(got - want).max())
        audible = max(audible, float(np.abs(before - want).max()))
    # the comparison can fail: before silencing, the dropped channels changed the output (deep in
    # a random network a change can fade out, so this holds for the groups taken together)
    assert audible > 1e-3


@pytest.mark.parametrize("name", models.available())
def test_transfer_is_exact_when_dropped_channels_are_silent(name):
    _check_transfer_exact(name, lambda gs: _sample(gs, 2) + gs[-1:])


@pytest.mark.slow
@pytest.mark.parametrize("name", models.available())
def test_transfer_is_exact_every_group(name):
    _check_transfer_exact(name, lambda gs: gs)


def _norms(kernel):
    return np.sqrt((kernel.reshape(-1, kernel.shape[-1]) ** 2).sum(axis=0))


def test_transfer_keeps_the_largest_norm_channels():
    spec = _spec("mbv2", 0.35)
    model = randomise(models.build(spec))
    # a single producer: the expansion of block_3 (48 -> 40)
    small = netadapt.transfer(model, netadapt.shrink(spec, "block_3/expanded", 40))
    old = model.get_layer("block_3_expand_conv").get_weights()[0]
    top = sorted(np.argsort(-_norms(old))[:40])
    np.testing.assert_array_equal(small.get_layer("block_3_expand_conv").get_weights()[0],
                                  old[..., top])
    np.testing.assert_array_equal(small.get_layer("block_3_dw").get_weights()[0],
                                  model.get_layer("block_3_dw").get_weights()[0][:, :, top])
    np.testing.assert_array_equal(small.get_layer("block_3_project_conv").get_weights()[0],
                                  model.get_layer("block_3_project_conv").get_weights()[0][:, :, top])
    # a residual stage: norms summed over the three projections (16 -> 8)
    small = netadapt.transfer(model, netadapt.shrink(spec, "block_3", 8))
    summed = sum(_norms(model.get_layer(f"block_{i}_project_conv").get_weights()[0]) for i in (3, 4, 5))
    top = sorted(np.argsort(-summed)[:8])
    for i in (3, 4, 5):
        old = model.get_layer(f"block_{i}_project_bn").get_weights()
        new = small.get_layer(f"block_{i}_project_bn").get_weights()
        for o, n in zip(old, new):
            np.testing.assert_array_equal(n, o[top])
    np.testing.assert_array_equal(small.get_layer("block_6_expand_conv").get_weights()[0],
                                  model.get_layer("block_6_expand_conv").get_weights()[0][:, :, top])
    # untouched layers are copied
    np.testing.assert_array_equal(small.get_layer("stem_conv").get_weights()[0],
                                  model.get_layer("stem_conv").get_weights()[0])


def test_transfer_bad_input():
    spec = _spec("mbv2", 0.35)
    model = models.build(spec)
    with pytest.raises(UserError, match="not mbv2_0.35_32 with narrower channel groups"):
        netadapt.transfer(model, spec.with_block("block_3", kernel=5))
    wide = netadapt.shrink(spec, "block_3", 8)
    with pytest.raises(UserError, match="grows from 8 to 16 channels"):
        netadapt.transfer(models.build(wide), spec)
    inp = keras.Input((8, 8, 3))
    with pytest.raises(UserError, match="built by tfmobile.models"):
        netadapt.transfer(keras.Model(inp, keras.layers.Conv2D(2, 1)(inp)), wide)


@pytest.mark.parametrize("compression", ["qat", "prune"])
def test_transfer_refuses_wrapped_models(compression):
    """Chosen: refuse. QAT's fake-quant ranges and pruning masks belong to the old channels; NetAdapt
    shrinks the float model and compresses the result again."""
    from tfmobile import compress

    spec = _spec("mbv2", 0.35)
    model = models.build(spec)
    wrapped = compress.qat(model) if compression == "qat" else compress.prune(model, 0.5, 0, 10)
    with pytest.raises(UserError, match="transfer the float checkpoint"):
        netadapt.transfer(wrapped, netadapt.shrink(spec, "block_3", 8))
