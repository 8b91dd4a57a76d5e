"""MobileNet V1/V2/V3 builders against keras.applications: equal parameter counts AND equal outputs.

keras.applications' model is built with weights=None (random init); its BatchNorm statistics,
gammas/betas and biases are then randomised too (otherwise BN is the identity and the softmax is
near-uniform, which would hide wiring errors). Its weights go through ``save_weights`` into our
``build(weights=path)``; logits (classifier_activation=None on both sides) must agree to 1e-5.
V3 is compared with include_preprocessing=False on both sides (our default: inputs in [-1, 1]).
The default suite runs the whole matrix at 32x32 (parameter counts do not depend on the
resolution); the 224x224, 1000-class matrix with softmax outputs is marked slow.
"""
import json

import numpy as np
import pytest

import tfmobile  # noqa: F401  (legacy Keras before TensorFlow)
import tf_keras as keras

from tfmobile import models
from tfmobile.errors import UserError
from tfmobile.models import layers as L
from tfmobile.models.weights import weighted_layers

KERAS_APPS = {
    "mbv1": keras.applications.MobileNet,
    "mbv2": keras.applications.MobileNetV2,
    "mbv3_small": keras.applications.MobileNetV3Small,
    "mbv3_large": keras.applications.MobileNetV3Large,
}

MATRIX = [
    ("mbv1", {"alpha": 1.0}),
    ("mbv1", {"alpha": 0.5}),
    ("mbv2", {"alpha": 1.0}),
    ("mbv2", {"alpha": 0.35}),
    ("mbv3_small", {"alpha": 1.0}),
    ("mbv3_small", {"alpha": 1.0, "minimalistic": True}),
    ("mbv3_large", {"alpha": 1.0}),
    ("mbv3_large", {"alpha": 1.0, "minimalistic": True}),
]
# extra widths exercising the rounding rules (make_divisible of ratios, alpha > 1 heads)
EXTRA = [
    ("mbv1", {"alpha": 0.25, "depth_multiplier": 2}),
    ("mbv2", {"alpha": 1.4}),
    ("mbv3_small", {"alpha": 0.75}),
    ("mbv3_large", {"alpha": 1.25}),
]


def _ids(cases):
    return [f"{n}-" + "-".join(f"{k}{v}" for k, v in kw.items()) for n, kw in cases]


def keras_reference(name, kw, input_shape, classifier_activation):
    extra = {"include_preprocessing": False} if name.startswith("mbv3") else {}
    return KERAS_APPS[name](input_shape=input_shape, weights=None, classes=1000,
                            classifier_activation=classifier_activation, **kw, **extra)


def randomise(model, seed=0):
    """Random BN statistics / affine parameters and biases (kernels keep keras' random init)."""
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = (w.shape for w in layer.get_weights())
            layer.set_weights([rng.uniform(0.5, 1.5, g), rng.normal(0, 0.2, b),
                               rng.normal(0, 0.2, m), rng.uniform(0.5, 1.5, v)])
        elif getattr(layer, "bias", None) is not None:
            ws = layer.get_weights()
            ws[-1] = rng.normal(0, 0.2, ws[-1].shape)
            layer.set_weights(ws)


def compare(tmp_path, name, kw, size, classifier_activation=None, fmt="h5"):
    shape = (size, size, 3)
    ref = keras_reference(name, kw, shape, classifier_activation)
    randomise(ref)
    path = str(tmp_path / ("ref.h5" if fmt == "h5" else "ckpt/ref"))
    ref.save_weights(path)
    ours = models.build(name, input_shape=shape, classes=1000,
                        classifier_activation=classifier_activation, weights=path, **kw)
    assert ours.count_params() == ref.count_params()
    x = np.random.RandomState(1).uniform(-1, 1, (2,) + shape).astype("float32")
    a = ref(x, training=False).numpy()
    b = ours(x, training=False).numpy()
    assert a.shape == b.shape == (2, 1000)
    assert np.std(a) > (1e-4 if classifier_activation else 1e-2), "degenerate comparison"
    diff = float(np.abs(a - b).max())
    print(f"MEASURED {name} {kw} {size}x{size} {fmt} act={classifier_activation}: params "
          f"{ours.count_params()} (keras {ref.count_params()}), max|out|={np.abs(a).max():.4g}, "
          f"max abs diff {diff:.3g}")  # shown with pytest -rP
    assert diff <= 1e-5, f"{name} {kw}: max abs diff {diff}"
    return ours, ref, diff


# default suite: one case per builder path (V1 via a TF checkpoint, V2, V3 with SE + h-swish);
# the full matrix is in the slow tests below.
FAST = [("mbv1", {"alpha": 0.5}, "ckpt"), ("mbv2", {"alpha": 0.35}, "h5"),
        ("mbv3_small", {"alpha": 1.0}, "h5")]


@pytest.mark.parametrize("name,kw,fmt", FAST, ids=[f"{n}-{f}" for n, _, f in FAST])
def test_matches_keras_applications_32(tmp_path, name, kw, fmt):
    compare(tmp_path, name, kw, 32, fmt=fmt)


@pytest.mark.slow
@pytest.mark.parametrize("name,kw", MATRIX + EXTRA, ids=_ids(MATRIX + EXTRA))
def test_matches_keras_applications_224_logits(tmp_path, name, kw):
    """224x224, 1000 classes, logits (classifier_activation=None on both sides)."""
    compare(tmp_path, name, kw, 224)


@pytest.mark.slow
@pytest.mark.parametrize("name,kw", MATRIX, ids=_ids(MATRIX))
def test_matches_keras_applications_224_softmax(tmp_path, name, kw):
    """224x224, 1000 classes, the default softmax outputs."""
    compare(tmp_path, name, kw, 224, classifier_activation="softmax")


def test_spec_json_roundtrip_builds_identical_model(tmp_path):
    spec = models.get_spec("mbv3_small", input_shape=(64, 64, 3), alpha=0.5, classes=10,
                           bn_momentum=0.9)
    path = tmp_path / "spec.json"
    path.write_text(spec.to_json())
    again = models.ModelSpec.load(path)
    assert again == spec
    a, b = models.build(spec), models.build(again)
    assert [(l.name, type(l).__name__) for l in a.layers] == [(l.name, type(l).__name__) for l in b.layers]
    assert [w.shape for w in a.weights] == [w.shape for w in b.weights]
    assert models.spec_of(b) == spec
    assert all(l.momentum == 0.9 for l in a.layers if isinstance(l, keras.layers.BatchNormalization))
    # same weights -> same outputs
    b.set_weights(a.get_weights())
    x = np.random.RandomState(0).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(a(x, training=False).numpy(), b(x, training=False).numpy())


def _shapes(model):
    return {l.name: [tuple(w.shape) for w in l.weights] for l in model.layers}


def test_with_block_changes_only_that_layer():
    spec = models.get_spec("mbv2", input_shape=(32, 32, 3), alpha=0.35, classes=10)
    blk = spec.blocks[spec.block_index("block_3")]
    assert blk.expanded == 6 * 8
    base = _shapes(models.build(spec))
    new = _shapes(models.build(spec.with_block("block_3", expanded=40)))
    changed = sorted(k for k in base if base[k] != new[k])
    # the expansion conv, its BN and the depthwise conv consume the new width; the projection's
    # input channels shrink too (that is the one layer's width as seen by its neighbours)
    assert changed == ["block_3_dw", "block_3_dw_bn", "block_3_expand_bn", "block_3_expand_conv",
                       "block_3_project_conv"]
    assert new["block_3_expand_conv"] == [(1, 1, 8, 40)]
    # the output width of a block: its projection and the next block's expansion input
    spec1 = models.get_spec("mbv1", input_shape=(32, 32, 3), alpha=0.25, classes=10)
    base = _shapes(models.build(spec1))
    new = _shapes(models.build(spec1.with_block("block_5", filters=48)))
    changed = sorted(k for k in base if base[k] != new[k])
    assert changed == ["block_5_pw_bn", "block_5_pw_conv", "block_6_dw", "block_6_dw_bn",
                       "block_6_pw_conv"]


def test_layer_names_follow_contract():
    m = models.build("mbv3_small", input_shape=(32, 32, 3), classes=10)
    names = {l.name for l in m.layers}
    for n in ["stem_conv", "stem_bn", "stem_hard_swish", "block_0_dw", "block_0_se_squeeze",
              "block_0_se_excite", "block_0_se_hard_sigmoid", "block_0_se_mul", "block_3_expand_conv",
              "block_3_dw", "block_3_se_squeeze", "block_3_project_conv", "block_4_add", "head_conv",
              "top_hidden_conv", "top_logits", "top_softmax"]:
        assert n in names, n
    _only_standard_layers(m)


def _only_standard_layers(m):
    """No Lambda / TFOpLambda layers (tfmot cannot wrap them); custom ones are in CUSTOM_OBJECTS."""
    bad = [l.name for l in m.layers if type(l).__name__ in ("Lambda", "TFOpLambda", "SlicingOpLambda")]
    assert not bad, (m.name, bad)
    custom = {type(l).__name__ for l in m.layers} - set(dir(keras.layers)) - {"InputLayer"}
    assert custom <= set(L.CUSTOM_OBJECTS), custom


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mbv1", "mbv2", "mbv3_large"])
def test_only_standard_layers_other_families(name):
    _only_standard_layers(models.build(name, input_shape=(32, 32, 3), classes=10))


def test_include_top_false_and_pooling():
    m = models.build("mbv2", input_shape=(64, 64, 3), alpha=0.35, include_top=False)
    assert m.output_shape == (None, 2, 2, 1280)
    m = models.build("mbv1", input_shape=(64, 64, 3), alpha=0.25, include_top=False, pooling="max")
    assert m.output_shape == (None, 256)


def test_include_preprocessing_matches_keras(tmp_path):
    ref = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None,
                                              include_preprocessing=True, classifier_activation=None)
    randomise(ref)
    ref.save_weights(str(tmp_path / "w.h5"))
    ours = models.build("mbv3_small", input_shape=(32, 32, 3), include_preprocessing=True,
                        classifier_activation=None, weights=str(tmp_path / "w.h5"))
    assert ours.layers[1].name == "rescale"
    x = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert np.abs(ref(x, training=False).numpy() - ours(x, training=False).numpy()).max() <= 1e-5


def test_mismatching_weights_name_the_layer(tmp_path):
    ref = keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, weights=None)
    ref.save_weights(str(tmp_path / "w.h5"))
    spec = models.get_spec("mbv1", input_shape=(32, 32, 3), alpha=0.25).with_block("block_2", filters=24)
    with pytest.raises(UserError, match="layer 'block_2_pw_conv'.*'conv_pw_2'"):
        models.build(spec, weights=str(tmp_path / "w.h5"))
    with pytest.raises(UserError, match="weighted layers"):
        models.build("mbv1", input_shape=(32, 32, 3), alpha=0.25, include_top=False,
                     weights=str(tmp_path / "w.h5"))
    small = {"input_shape": (32, 32, 3), "alpha": 0.25}
    with pytest.raises(UserError, match="not found"):
        models.build("mbv1", weights=str(tmp_path / "nope.h5"), **small)
    (tmp_path / "junk.h5").write_bytes(b"not a weights file")
    with pytest.raises(UserError, match="neither HDF5"):
        models.build("mbv1", weights=str(tmp_path / "junk.h5"), **small)


def test_a_model_loses_nothing_when_a_load_fails(tmp_path):
    m = models.build("mbv1", input_shape=(32, 32, 3), alpha=0.25, classes=10)
    m.save_weights(str(tmp_path / "own.h5"))
    other = models.build("mbv1", input_shape=(32, 32, 3), alpha=0.5, classes=10)
    before = [w.numpy().copy() for w in other.weights]
    from tfmobile.models.weights import load_weights
    with pytest.raises(UserError, match="layer 'stem_conv'"):
        load_weights(other, models.spec_of(other), str(tmp_path / "own.h5"))
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, other.weights))
    # own weights round-trip
    again = models.build(models.spec_of(m), weights=str(tmp_path / "own.h5"))
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(m.weights, again.weights))
    assert len(weighted_layers(again)) == len(weighted_layers(m))


def test_imagenet_offline_is_a_clean_user_error(monkeypatch):
    from tf_keras.src.utils import data_utils

    def no_network(*a, **k):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    monkeypatch.setattr(data_utils, "get_file", no_network)
    with pytest.raises(UserError, match="needs internet"):
        models.build("mbv1", input_shape=(32, 32, 3), alpha=0.25, weights="imagenet")
    with pytest.raises(UserError, match="no ImageNet weights"):
        models.build("mbv1", input_shape=(32, 32, 3), alpha=0.3, weights="imagenet")


@pytest.mark.parametrize("kwargs,match", [
    ({"alpha": 0}, "alpha"),
    ({"alpha": -1.0}, "alpha"),
    ({"input_shape": (16, 16, 3)}, "too small"),
    ({"input_shape": (224, 224)}, "input_shape"),
    ({"pooling": "mean", "include_top": False}, "pooling"),
    ({"dropout": 1.5}, "dropout"),
    ({"classes": 0}, "classes"),
    ({"classifier_activation": "bogus"}, "classifier_activation"),
    ({"bn_momentum": 1.0}, "bn_momentum"),
    ({"groups": 3}, r"does not take option\(s\): groups"),
    ({"minimalistic": True}, r"does not take option\(s\): minimalistic"),
])
def test_bad_arguments_are_user_errors(kwargs, match):
    with pytest.raises(UserError, match=match):
        models.build("mbv2", **kwargs)


def test_bad_specs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="too small"):
        models.build("mbv3_small", input_shape=(31, 31, 3))
    with pytest.raises(UserError, match="depth_multiplier"):
        models.get_spec("mbv1", depth_multiplier=0)
    spec = models.get_spec("mbv2", input_shape=(32, 32, 3), alpha=0.35, classes=10)
    with pytest.raises(UserError, match="block_3"):
        models.build(spec.with_block("block_3", expanded=-4))
    with pytest.raises(UserError, match="stride"):
        models.build(spec.with_block("block_3", stride=3))
    with pytest.raises(UserError, match="block_3"):
        models.build(spec.with_block("block_3", act="swishy"))
    broken = spec.to_dict()
    del broken["blocks"][4]["filters"]
    with pytest.raises(UserError, match="block_3|filters"):
        models.build(models.ModelSpec.from_dict(broken))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="malformed spec JSON"):
        models.ModelSpec.load(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text(json.dumps({"family": "mbv2", "name": "x", "blocks": []}))
    with pytest.raises(UserError, match="missing"):
        models.ModelSpec.load(tmp_path / "bad2.json")


ALLOWED_INT8_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH", "ADD", "MUL", "MEAN", "RESHAPE",
                    "SOFTMAX", "FULLY_CONNECTED", "QUANTIZE", "DEQUANTIZE"}


def int8_ops(model, shape):
    """Full-integer conversion; returns the set of op names, asserting no float tensors remain."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    def rep():
        r = np.random.RandomState(0)
        for _ in range(4):
            yield [r.uniform(-1, 1, (1,) + shape).astype("float32")]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    interp = Interpreter(model_content=conv.convert())
    ops = {d["op_name"] for d in interp._get_ops_details()}  # before allocate: no DELEGATE nodes
    assert interp.get_input_details()[0]["dtype"] == np.int8
    floats = [t["name"] for t in interp.get_tensor_details() if t["dtype"] == np.float32]
    assert not floats, floats
    return ops


def test_tflite_int8_ops_of_v3_blocks():
    """A hand-written spec of MobileNetV3's pieces (h-swish stem, SE inverted residual with
    residual Add, V3 head and classifier): builtin int8 ops only, h-swish as ONE HARD_SWISH op."""
    full = models.get_spec("mbv3_small", input_shape=(32, 32, 3), alpha=0.5, classes=10)
    keep = ["stem", "block_4", "head", "top"]
    spec = full.copy()
    spec.blocks = [b for b in full.blocks if b.name in keep]
    spec = spec.with_block("stem", filters=24).with_block("block_4", filters=24)
    spec.input_shape = (8, 8, 3)
    m = models.build(spec)
    assert "block_4_add" in {l.name for l in m.layers}
    ops = int8_ops(m, (8, 8, 3))
    assert "HARD_SWISH" in ops and ops <= ALLOWED_INT8_OPS, ops


@pytest.mark.slow
def test_tflite_int8_ops_include_hard_swish():
    """The whole mbv3_small converts to builtin int8 ops, with HARD_SWISH."""
    m = models.build("mbv3_small", input_shape=(32, 32, 3), alpha=0.5, classes=10)
    ops = int8_ops(m, (32, 32, 3))
    assert "HARD_SWISH" in ops and ops <= ALLOWED_INT8_OPS, ops


def test_imagenet_path_transfers_keras_weights(monkeypatch):
    """weights="imagenet" minus the download: keras.applications' constructor is replaced by one
    that returns a randomised weights=None model, which must arrive in ours layer by layer."""
    made = {}
    original = keras.applications.MobileNet

    def fake_mobilenet(**kw):
        assert kw["weights"] == "imagenet"
        kw["weights"] = None
        made["model"] = ref = original(**kw)
        randomise(ref, seed=3)
        return ref

    monkeypatch.setattr(keras.applications, "MobileNet", fake_mobilenet)
    ours = models.build("mbv1", input_shape=(32, 32, 3), alpha=0.25, weights="imagenet")
    ref = made["model"]
    assert len(ref.weights) == len(ours.weights)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(ref.weights, ours.weights))
    # 10 classes: keras' no-top weights fill the backbone, the new classifier keeps its init
    ours10 = models.build("mbv1", input_shape=(32, 32, 3), alpha=0.25, classes=10, weights="imagenet")
    ref = made["model"]
    assert not ref.layers[-1].weights  # the no-top reference
    n = len(ref.weights)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(ref.weights, ours10.weights[:n]))
    assert ours10.get_layer("top_logits").kernel.shape == (1, 1, 256, 10)
