"""tfmobile.analysis: MAC formulas, fused-graph peak memory, flash estimate, paper MACs, real TFLite."""
import json

import pytest

import tfmobile  # noqa: F401
import tf_keras as keras
from tf_keras import layers

from tfmobile import analysis, models
from tfmobile.errors import UserError

from tflite_helpers import tflite_graph_stats, to_int8


def _row(p, name):
    return next(l for l in p.layers if l.name == name)


def test_mac_formulas_per_layer_type():
    inp = keras.Input((16, 16, 8))
    a = layers.Conv2D(16, 3, strides=2, padding="same", name="conv")(inp)             # 8x8x16
    b = layers.Conv2D(32, 1, groups=4, use_bias=False, name="gconv")(a)                # 8x8x32
    c = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(b)    # 8x8x64
    d = layers.SeparableConv2D(8, 3, padding="valid", name="sep")(c)                   # 6x6x8
    e = layers.Conv2DTranspose(4, 2, strides=2, name="tconv")(d)                       # 12x12x4
    f = layers.GlobalAveragePooling2D(name="gap")(e)
    g = layers.Dense(10, name="fc")(f)
    p = analysis.profile(keras.Model(inp, g))
    assert _row(p, "conv").macs == 3 * 3 * 8 * 16 * 8 * 8
    assert _row(p, "gconv").macs == 1 * 1 * (16 // 4) * 32 * 8 * 8
    assert _row(p, "dw").macs == 3 * 3 * 32 * 2 * 8 * 8
    assert _row(p, "sep").macs == 3 * 3 * 64 * 6 * 6 + 64 * 8 * 6 * 6
    assert _row(p, "tconv").macs == 2 * 2 * 8 * 4 * 6 * 6
    assert _row(p, "gap").macs == 0
    assert _row(p, "fc").macs == 4 * 10
    # the total, summed by hand from the per-layer figures above (no MACs in input, GAP or bias adds)
    assert p.macs == 73728 + 8192 + 36864 + 39168 + 4608 + 40 == 162600
    assert _row(p, "gconv").params == 4 * 32
    # weights + biases by hand: conv 3*3*8*16+16, gconv 4*32, dw 3*3*32*2+64, sep 3*3*64+64*8+8,
    # tconv 2*2*8*4+4, fc 4*10+10
    assert p.params == 1168 + 128 + 640 + 1096 + 132 + 50 == 3214
    assert _row(p, "conv").output_shape == [8, 8, 16] and _row(p, "conv").output_bytes == 8 * 8 * 16


def _residual_model():
    inp = keras.Input((8, 8, 4), name="x")                                   # 256 elements
    a = layers.Conv2D(8, 3, padding="same", name="a")(inp)                   # 512
    a = layers.BatchNormalization(name="a_bn")(a)
    a = layers.ReLU(6.0, name="a_relu")(a)
    b = layers.Conv2D(8, 3, padding="same", name="b")(a)                     # 512
    b = layers.BatchNormalization(name="b_bn")(b)
    y = layers.Add(name="add")([a, b])                                       # 512, keeps a alive
    y = layers.ReLU(name="add_relu")(y)
    y = layers.Dropout(0.5, name="drop")(y)
    y = layers.Conv2D(2, 1, name="c")(y)                                     # 128
    return keras.Model(inp, y)


def test_peak_counts_skip_tensors_on_the_fused_graph():
    p = analysis.profile(_residual_model())
    # TFLite graph: a(+bn+relu6), b(+bn), add(+relu), c; dropout disappears.
    assert p.tflite_ops == 4
    assert _row(p, "a_bn").fused_into == "a" and _row(p, "a_relu").fused_into == "a"
    assert _row(p, "b_bn").fused_into == "b"
    assert _row(p, "add_relu").fused_into == "add"
    assert _row(p, "drop").fused_into == "(identity)"
    # at a: x 256 + a 512; at b: a 512 + b 512; at add: a + b + sum = 1536; at c: 512 + 128
    assert p.peak_activation_bytes == 1536
    assert p.peak_activation_bytes_float32 == 4 * 1536
    assert p.peak_at == "add"


def test_relu_not_fused_when_conv_output_has_another_consumer():
    inp = keras.Input((4, 4, 2))
    a = layers.Conv2D(4, 1, name="a")(inp)
    r = layers.ReLU(name="r")(a)
    y = layers.Concatenate(name="cat")([a, r])
    p = analysis.profile(keras.Model(inp, y))
    assert _row(p, "r").fused_into is None
    assert p.tflite_ops == 3


def test_profile_of_spec_equals_profile_of_model_and_is_json():
    spec = models.get_spec("squeezenet1_1", input_shape=(32, 32, 3), classes=10)
    a = analysis.profile(spec)
    b = analysis.profile(models.build(spec))
    assert a.to_dict() == b.to_dict()
    d = json.loads(json.dumps(a.to_dict()))
    for key in ("model", "params", "macs", "peak_activation_bytes", "flash_bytes", "layers"):
        assert key in d
    assert {"name", "type", "output_shape", "params", "macs"} <= set(d["layers"][0])
    assert "fire2_squeeze" in a.table() and "peak activations" in a.table()


def test_rejects_non_models():
    with pytest.raises(UserError):
        analysis.profile("mbv2")

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(UserError, match="functional"):
        analysis.profile(Sub())


def test_keras_applications_model_matches_zoo_mbv2():
    """Any functional model works; keras.applications' MobileNetV2 counts like our mbv2."""
    ka = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                        classes=10)
    ours = analysis.profile(models.get_spec("mbv2", input_shape=(96, 96, 3), alpha=0.35, classes=10))
    theirs = analysis.profile(ka)
    assert theirs.macs == ours.macs
    assert theirs.params == ours.params
    # keras.applications pads explicitly (ZeroPadding2D + 'valid' depthwise) where ours uses
    # padding="same", and puts the softmax inside Dense: the converter folds those PADs and splits
    # the softmax out, so both run the same TFLite graph.
    assert _row(theirs, "block_1_pad").fused_into == "block_1_depthwise"
    assert theirs.tflite_ops == ours.tflite_ops
    assert theirs.peak_activation_bytes == ours.peak_activation_bytes


# --- papers' MACs at 224x224 -----------------------------------------------------------------
PAPER_MACS = [("mbv1", {}, 569e6), ("mbv2", {}, 300e6), ("mbv2", {"alpha": 1.4}, 585e6),
              ("mbv3_large", {}, 219e6), ("mbv3_small", {}, 56e6)]


def test_mbv3_small_macs_match_paper():
    p = analysis.profile(models.get_spec("mbv3_small"))
    assert abs(p.macs - 56e6) / 56e6 <= 0.02, p.macs


@pytest.mark.slow
@pytest.mark.parametrize("name,kw,macs", PAPER_MACS)
def test_mobilenet_macs_match_papers(name, kw, macs):
    p = analysis.profile(models.get_spec(name, **kw))
    assert abs(p.macs - macs) / macs <= 0.02, p.macs


# --- cross-check against real int8 .tflite files ----------------------------------------------
def _cross_check(model):
    data = to_int8(model)
    p = analysis.profile(model)
    n_ops, peak = tflite_graph_stats(data)
    assert p.tflite_ops == n_ops
    assert p.peak_activation_bytes == peak
    assert 0.9 <= len(data) / p.flash_bytes <= 1.1, (len(data), p.flash_bytes)
    return p, data


# The default suite cross-checks SqueezeNet 1.1 in
# tests/test_models_shufflenet_squeezenet.py::test_squeezenet_complex_converts_to_builtin_int8.
@pytest.mark.slow
@pytest.mark.parametrize("name,kw", [
    ("shufflenet_v1", dict(groups=3, alpha=0.5)), ("shufflenet_v2", dict(alpha=0.5)),
    ("squeezenet1_0", dict(bypass="simple")),
    ("mbv2", dict(alpha=0.35)), ("mbv3_small", {}), ("mbv1", dict(alpha=0.25)),
    ("mbv3_large", dict(alpha=0.75, minimalistic=True))])
def test_matches_real_int8_tflite(name, kw):
    _cross_check(models.build(name, input_shape=(64, 64, 3), classes=10, **kw))


@pytest.mark.slow
def test_matches_real_int8_tflite_keras_applications():
    _cross_check(keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35,
                                                weights=None, classes=10))
