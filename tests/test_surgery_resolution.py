"""The input resolution as a model operation (issue 20): ``with_resolution``, ``lowest_resolution`` and
``transfer`` to a spec at another input size, with and without narrower channel groups."""
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

import tfmobile  # noqa: F401
import tf_keras as keras

from tfmobile import models
from tfmobile.errors import UserError
from tfmobile.models import kinds, registry, surgery
from tfmobile.models.blocks import Block
from tfmobile.models.kinds import BlockKind

ZOO_NAMES = sorted(registry.ZOO)
SMALL_ALPHA = {"mbv1": 0.25, "mbv2": 0.35, "mbv3_small": 0.25, "mbv3_large": 0.25}
FAMILY_KW = {"shufflenet_v1": dict(groups=2), "shufflenet_v2": dict(alpha=0.5)}


def _spec(name, resolution=40):
    kw = dict(FAMILY_KW.get(name, {}))
    kw.setdefault("alpha", SMALL_ALPHA.get(name, 1.0))
    return models.get_spec(name, input_shape=(resolution, resolution, 3), classes=10, **kw)


def _weights(model):
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def test_lowest_resolution_is_the_total_stride():
    want = {"mbv1": 32, "mbv2": 32, "mbv3_small": 32, "mbv3_large": 32, "shufflenet_v1": 32,
            "shufflenet_v2": 32, "squeezenet1_0": 16, "squeezenet1_1": 16}
    assert {name: surgery.lowest_resolution(_spec(name)) for name in ZOO_NAMES} == want
    # the resolution never enters: the same network at 224 has the same lowest input
    assert surgery.lowest_resolution(_spec("mbv2", 224)) == 32


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_every_family_moves_to_its_lowest_resolution_with_every_weight(name):
    spec = _spec(name)
    model = models.build(spec)
    rng = np.random.default_rng(0)
    for layer in model.layers:   # distinct values everywhere (BN variances stay positive)
        layer.set_weights([(w + rng.uniform(0, 0.01, w.shape)).astype(w.dtype)
                           for w in layer.get_weights()])
    lowest = surgery.lowest_resolution(spec)
    low_spec = surgery.with_resolution(spec, lowest)
    low = surgery.transfer(model, low_spec)
    assert low.input_shape == (None, lowest, lowest, 3)
    assert models.spec_of(low) == low_spec
    old, new = _weights(model), _weights(low)
    assert sorted(old) == sorted(new)
    for layer_name, weights in old.items():
        assert len(weights) == len(new[layer_name])
        for a, b in zip(weights, new[layer_name]):
            np.testing.assert_array_equal(a, b)
    out = low(rng.uniform(-1, 1, (2, lowest, lowest, 3)).astype(np.float32), training=False)
    assert out.shape == (2, 10) and np.isfinite(out).all()


def test_resolution_and_narrower_groups_together():
    spec = _spec("mbv2", 48)
    model = models.build(spec)
    small = surgery.shrink(surgery.with_resolution(spec, 40), "block_3/expanded", 40)
    moved = surgery.transfer(model, small)
    assert moved.input_shape == (None, 40, 40, 3)
    assert moved.get_layer("block_3_expand_conv").get_weights()[0].shape[-1] == 40
    np.testing.assert_array_equal(moved.get_layer("stem_conv").get_weights()[0],
                                  model.get_layer("stem_conv").get_weights()[0])
    # the channel choice is the one a shrink at the old resolution makes
    same_size = surgery.transfer(model, surgery.shrink(spec, "block_3/expanded", 40))
    np.testing.assert_array_equal(moved.get_layer("block_3_project_conv").get_weights()[0],
                                  same_size.get_layer("block_3_project_conv").get_weights()[0])


def test_with_resolution_names_and_values():
    spec = _spec("mbv2", 48)
    low = surgery.with_resolution(spec, 32)
    assert low.name == "mbv2_0.35_32" and low.input_shape == (32, 32, 3)
    assert low.blocks == spec.blocks and spec.input_shape == (48, 48, 3)   # a copy
    assert surgery.with_resolution(spec, 48).name == "mbv2_0.35_48"
    custom = spec.copy()
    custom.name = "my_net"
    assert surgery.with_resolution(custom, 40).name == "my_net_40"
    tall = spec.copy()
    tall.input_shape = (48, 40, 3)
    assert surgery.with_resolution(tall, 40).input_shape == (40, 40, 3)
    for bad in (0, -8, 8.0, True, "32", None):
        with pytest.raises(UserError, match="resolution must be a positive integer"):
            surgery.with_resolution(spec, bad)
    with pytest.raises(UserError, match="below 32, the total stride of mbv2_0.35_48"):
        surgery.with_resolution(spec, 24)
    with pytest.raises(UserError, match="above the largest resolution, 1024x1024"):
        surgery.with_resolution(spec, 2048)
    with pytest.raises(UserError, match="needs a ModelSpec"):
        surgery.lowest_resolution("mbv2")


@dataclass(kw_only=True)
class FixedPoolHead(Block):
    """A 4x4 average pool, Flatten and Dense: the head of old VGG-style nets, bound to one input size."""

    type: ClassVar[str] = "toy_fixed_pool_head"


def _fixed_pool_head(x, b, spec):
    x = keras.layers.AveragePooling2D(4, name=f"{b.name}_pool")(x)
    x = keras.layers.Flatten(name=f"{b.name}_flatten")(x)
    return keras.layers.Dense(spec.classes, name=f"{b.name}_logits")(x)


kinds.register(BlockKind(FixedPoolHead, _fixed_pool_head))


def test_transfer_refuses_a_head_bound_to_the_input_size():
    spec = models.ModelSpec("toy", "toy_32", (32, 32, 3), [
        {"type": "conv_bn", "name": "stem", "filters": 8, "kernel": 3, "stride": 2},
        {"type": "toy_fixed_pool_head", "name": "head"}], classes=10)
    model = models.build(spec)
    with pytest.raises(UserError, match="layer 'head_flatten' folds a feature map"):
        surgery.transfer(model, surgery.with_resolution(spec, 16))


def test_transfer_refuses_other_input_channels_and_other_blocks():
    spec = _spec("mbv2", 48)
    model = models.build(spec)
    grey = surgery.with_resolution(spec, 40)
    grey.input_shape = (40, 40, 1)
    with pytest.raises(UserError, match="takes 1 input channels"):
        surgery.transfer(model, grey)
    with pytest.raises(UserError, match="not mbv2_0.35_48 with narrower channel groups"):
        surgery.transfer(model, surgery.with_resolution(spec, 40).with_block("block_3", kernel=5))


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_every_family_converts_to_int8_at_its_lowest_resolution(name):
    from tfmobile.convert import to_tflite
    from tfmobile.convert.verification import run_tflite

    spec = surgery.with_resolution(_spec(name), surgery.lowest_resolution(_spec(name)))
    data = to_tflite(models.build(spec), "int8", io="int8", num_calibration=4)
    size = spec.input_shape[0]
    out = run_tflite(data, np.zeros((1, size, size, 3), np.float32))
    assert np.asarray(out).shape[-1] == 10


def test_a_resolution_proposal_trains_and_validates_at_its_input_size(tmp_path):
    """run_proposal on a spec one resolution step down: BatchNorm re-estimated, fine-tuned and validated
    on the run's images resized to the proposal's input (the data config keeps the run's 32x32), and
    its checkpoint takes that input."""
    from netadapt_tiny import tiny_splits, tiny_spec

    from tfmobile import train
    from tfmobile.netadapt.workers import LocalPool

    spec = tiny_spec()
    assert surgery.lowest_resolution(spec) == 4
    train.save_checkpoint(models.build(spec), str(tmp_path / "parent"))
    low = surgery.with_resolution(spec, 24)
    task = {"group": surgery.RESOLUTION_GROUP, "width": 24, "spec": low.to_json(indent=None),
            "parent": str(tmp_path / "parent"), "steps": 2, "bn_batches": 2, "batch_size": 32,
            "lr": 1e-2, "seed": 0, "augment": True, "shift": 0.0, "threads": 1,
            "output_dir": str(tmp_path / "proposal"),
            "data": {"data_dir": None, "subset": True, "limit": 300, "val_fraction": 0.1, "seed": 0,
                     "input_shape": [32, 32, 3]}}
    results = {}
    pool = LocalPool(1)   # run_proposal sets TensorFlow's threads: a fresh process, as in a run
    try:
        pool.run({"r": task}, results.__setitem__)
    finally:
        pool.close()
    result = results["r"]
    assert (result["group"], result["width"]) == ("resolution", 24)
    assert train.checkpoint_spec(result["checkpoint"]) == low
    model = train.load_checkpoint(result["checkpoint"])
    assert model.input_shape == (None, 24, 24, 3)
    splits = tiny_splits()
    assert result["val_accuracy"] == pytest.approx(train.evaluate(model, splits.x_val, splits.y_val))
