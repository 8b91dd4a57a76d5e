"""tfmobile.compress: QAT converts to all-int8 for every family, pruning / 2:4 / PQAT sparsity,
checkpoint round trip. Tiny models (32x32, small alpha) and a handful of steps on random data:
these tests check structure (ops, dtypes, zeros), not accuracy.

Default suite (~2 min on the shared 2 cores): QAT -> all-int8 for mbv2 and mbv3_small, pruning to a
target, argument checks. ``-m slow`` adds the other six families, 2:4, PQAT in the .tflite, the
apply/load_weights round trips and the PQAT reload (together ~10 min)."""
import json
import os

import numpy as np
import pytest

import tfmobile  # noqa: F401  (legacy Keras before TensorFlow)
import tf_keras as keras

from tfmobile import compress, convert, models
from tfmobile.errors import UserError

RES = (32, 32, 3)
FAST_FAMILIES = ("mbv2", "mbv3_small")


def _kwargs(name):
    kw = dict(input_shape=RES, classes=10)
    if name.startswith("mb"):
        kw["alpha"] = 0.35
    elif name.startswith("shufflenet"):
        kw["alpha"] = 0.5
    return kw


def _build(name):
    return models.build(name, **_kwargs(name))


def _data(n=16, shape=RES, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, *shape)).astype(np.float32)
    y = rng.integers(0, 10, size=n)
    return x, y


def _fit(model, steps, batch=8, callbacks=(), seed=0):
    x, y = _data(steps * batch, tuple(model.input_shape[1:]), seed)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=list(callbacks), shuffle=False)
    return model


def _int8(model):
    from tfmobile.convert import to_tflite
    calib = _data(8, tuple(model.input_shape[1:]), seed=3)[0]
    return to_tflite(model, mode="int8", representative_data=calib, io="int8")


def _kernels_without_fake_quant(qat_model):
    """Names of Conv2D / DepthwiseConv2D / Dense layers whose kernel QAT does not fake-quantize."""
    missing = []
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", None)
        if isinstance(inner, (keras.layers.Conv2D, keras.layers.Dense)):
            if not any("kernel_min" in w.name for w in layer.weights):
                missing.append(inner.name)
    return missing


def _qat_all_int8(name):
    from tfmobile.convert import tflite_op_counts

    model = _build(name)
    q = compress.qat(model)
    assert models.spec_of(q) == models.spec_of(model)
    # every kernel sees int8 rounding in training (tfmot alone skips Conv->ReLU without BN)
    assert _kernels_without_fake_quant(q) == []
    # Same weights: before any QAT step the fake-quant model tracks the float one closely.
    x = _data(4, seed=1)[0]
    ref = model(x, training=False).numpy()
    out = q(x, training=False).numpy()
    assert np.argmax(out, 1).tolist() == np.argmax(ref, 1).tolist() or np.max(np.abs(out - ref)) < 0.1
    tfl = _int8(q)
    assert convert.float_ops(tfl) == []
    ops = tflite_op_counts(tfl)
    assert "DEQUANTIZE" not in ops, ops   # (QUANTIZE int8->int8 requantizes are fine)
    n_hswish = sum(type(layer).__name__ == "HardSwish" for layer in model.layers)
    assert ops.get("HARD_SWISH", 0) == n_hswish  # still one fused op per HardSwish after QAT
    # BatchNorm folded into the convolutions: no MUL/ADD per conv. The only MULs left are the SE
    # gates (Multiply) and HardSigmoid's /6.
    n_mul_layers = sum(type(layer).__name__ in ("Multiply", "HardSigmoid") for layer in model.layers)
    assert ops.get("MUL", 0) <= n_mul_layers, ops
    return tfl


@pytest.mark.parametrize("name", FAST_FAMILIES)
def test_qat_converts_to_all_int8(name):
    _qat_all_int8(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in models.available() if n not in FAST_FAMILIES])
def test_qat_converts_to_all_int8_other_families(name):
    _qat_all_int8(name)


@pytest.mark.parametrize("relu", ["layer", "activation"])
def test_conv_relu_without_bn_gets_kernel_fake_quant_and_fuses(relu):
    inp = keras.Input(RES)
    x = keras.layers.Conv2D(8, 3, name="c1")(inp)
    x = keras.layers.ReLU(name="r1")(x) if relu == "layer" else keras.layers.Activation("relu")(x)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.Add()([x, x])
    x = keras.layers.ReLU()(x)                   # Add -> ReLU keeps tfmot's handling
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, name="d1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Dense(10, name="logits")(x)
    model = keras.Model(inp, x)
    q = compress.qat(model)
    assert _kernels_without_fake_quant(q) == []
    # the conv's own output is not fake-quantized: the ReLU after it carries the range
    conv = next(layer for layer in q.layers if getattr(layer, "layer", None) is not None
                and layer.layer.name == "c1")
    assert not any("post_activation" in w.name for w in conv.weights)
    from tfmobile.convert import tflite_op_counts
    tfl = _int8(q)
    assert convert.float_ops(tfl) == []
    ops = tflite_op_counts(tfl)
    assert ops.get("CONV_2D") == 1 and ops.get("DEPTHWISE_CONV_2D") == 1, ops
    assert "RELU" not in ops and "RELU6" not in ops, ops     # fused into the conv / FC
    pq = compress.pqat(model)
    assert _kernels_without_fake_quant(pq) == []


def test_every_custom_zoo_layer_has_a_quantize_config():
    from tfmobile.models import layers as zoo_layers
    from tensorflow_model_optimization.quantization.keras.default_8bit import (
        Default8BitQuantizeRegistry)

    missing = [n for n, cls in zoo_layers.CUSTOM_OBJECTS.items()
               if issubclass(cls, keras.layers.Layer) and n not in compress.LAYER_CONFIGS]
    assert missing == []
    # and the layers tfmot's registry lacks but the zoo uses are covered
    registry = Default8BitQuantizeRegistry()
    assert not registry.supports(keras.layers.Multiply())
    assert "Multiply" in compress.LAYER_CONFIGS


def test_qat_refuses_unknown_layer_by_name():
    inp = keras.Input(RES)
    x = keras.layers.Conv2D(8, 3)(inp)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="my_lambda")(x)
    model = keras.Model(inp, x)
    with pytest.raises(UserError, match="my_lambda"):
        compress.qat(model)


def test_prune_reaches_target_sparsity_and_gzip_shrinks(tmp_path):
    model = _build("mbv2")
    steps = 6
    p = compress.prune(model, 0.6, begin_step=0, end_step=4)
    _fit(p, steps, callbacks=compress.pruning_callbacks(log_dir=str(tmp_path / "logs")))
    s = compress.strip(p)
    assert not any(type(layer).__name__ == "PruneLowMagnitude" for layer in s.layers)
    assert models.spec_of(s) is not None
    rep = compress.sparsity_report(s)
    pruned = set(compress.prunable_layers(model))
    assert pruned
    by_name = {layer.name: layer for layer in model.layers}
    assert all(by_name[n].kernel.shape[-2] > 4 for n in pruned)   # the stem conv is skipped
    for name, info in rep["layers"].items():
        if name in pruned:
            assert abs(info["sparsity"] - 0.6) < 0.02, (name, info)
        elif info["type"] == "DepthwiseConv2D":
            assert info["sparsity"] < 0.05, (name, info)
    assert abs(rep["sparse_layers_sparsity"] - 0.6) < 0.02
    lines = (tmp_path / "logs" / "sparsity.jsonl").read_text().splitlines()
    assert len(lines) == 1 and abs(json.loads(lines[0])["sparse_layers_sparsity"] - 0.6) < 0.02
    # the kernels gzip smaller once most of them are 60 % zeros
    def kernel_bytes(m):
        return b"".join(np.asarray(w).tobytes() for w in m.get_weights())
    assert convert.gzip_size(kernel_bytes(s)) < 0.8 * convert.gzip_size(kernel_bytes(model))


@pytest.mark.slow  # ~60-100 s on the shared 2 cores
def test_prune_2_4_pattern_holds_after_strip():
    model = _build("mbv3_small")
    p = compress.prune(model, 0.5, begin_step=0, end_step=2, structured_2_4=True)
    _fit(p, 3, callbacks=compress.pruning_callbacks())
    s = compress.strip(p)
    assert compress.check_2_4(s) == []
    rep = compress.sparsity_report(s)
    for name in compress.prunable_layers(model):
        assert rep["layers"][name]["sparsity"] >= 0.45, (name, rep["layers"][name])
    # the checker itself can fail: the unpruned model does not have the pattern
    assert compress.check_2_4(model) != []


def test_prune_bad_arguments():
    model = _build("mbv2")
    with pytest.raises(UserError):
        compress.prune(model, 1.2, 0, 10)
    with pytest.raises(UserError):
        compress.prune(model, 0.5, 10, 5)
    with pytest.raises(UserError):
        compress.prune(model, "half", 0, 10)
    with pytest.raises(UserError):
        compress.apply(model, "distill")


@pytest.mark.slow  # ~60-100 s on the shared 2 cores
def test_pqat_keeps_sparsity_in_int8_tflite():
    model = _build("mbv2")
    p = compress.prune(model, 0.5, begin_step=0, end_step=2)
    _fit(p, 3, callbacks=compress.pruning_callbacks())
    s = compress.strip(p)
    float_rep = compress.sparsity_report(s)
    pq = compress.pqat(s)
    _fit(pq, 3, seed=5)   # a few QAT steps: with plain QAT the zeros would drift away
    tfl = _int8(pq)
    assert convert.float_ops(tfl) == []
    t = convert.tflite_sparsity(tfl)
    assert all(v["dtype"] == "int8" for v in t["tensors"].values())
    pruned = compress.prunable_layers(model)
    pruned_params = sum(float_rep["layers"][n]["params"] for n in pruned)
    pruned_zeros = sum(float_rep["layers"][n]["zeros"] for n in pruned)
    # every zero of the pruned kernels is still an int8 zero (BN folding scales, never un-zeros)
    assert t["zeros"] >= pruned_zeros
    int8_conv_fc = t["conv_fc_params"] * t["conv_fc_sparsity"]
    assert int8_conv_fc >= 0.98 * pruned_zeros
    assert pruned_zeros / pruned_params == pytest.approx(0.5, abs=0.02)


@pytest.mark.slow  # 50-70 s each on the shared 2 cores
@pytest.mark.parametrize("kind", ["qat", "pqat"])
def test_apply_and_load_weights_round_trip(tmp_path, kind):
    model = _build("mbv3_small")
    q = compress.apply(model, kind)
    _fit(q, 2)   # moves weights and the quantizers' min/max
    path = str(tmp_path / "weights.h5")
    with compress.quantize_scope():
        q.save_weights(path)
    fresh = compress.apply(_build("mbv3_small"), kind)
    with compress.quantize_scope():
        fresh.load_weights(path)
    x = _data(4, seed=2)[0]
    np.testing.assert_allclose(fresh(x, training=False).numpy(), q(x, training=False).numpy(),
                               atol=1e-6)
    assert compress.apply(model, None) is model
    assert compress.apply(model, "prune") is model


def test_gzip_size(tmp_path):
    zeros = bytes(10000)
    noise = np.random.default_rng(0).integers(0, 256, 10000, dtype=np.uint8).tobytes()
    assert convert.gzip_size(zeros) < 200 < 9000 < convert.gzip_size(noise)
    f = tmp_path / "a.bin"
    f.write_bytes(noise)
    assert convert.gzip_size(str(f)) == convert.gzip_size(noise)
    with pytest.raises(UserError):
        convert.gzip_size(str(tmp_path / "missing.bin"))


@pytest.mark.slow  # ~60-100 s on the shared 2 cores
def test_pqat_checkpoint_reload_keeps_sparsity_when_training_resumes(tmp_path):
    model = _build("mbv3_small")
    targets = compress.prunable_layers(model)
    rng = np.random.default_rng(0)
    for layer in model.layers:          # a "pruned" model without the cost of a pruning fit
        if layer.name in targets:
            k = layer.kernel.numpy()
            k[rng.random(k.shape) < 0.5] = 0.0
            layer.kernel.assign(k)
    zeros_before = compress.sparsity_report(model)["zeros"]
    pq = compress.pqat(model)
    path = str(tmp_path / "weights.h5")
    with compress.quantize_scope():
        pq.save_weights(path)
    fresh = compress.apply(_build("mbv3_small"), "pqat")   # masks built on dense random weights
    with compress.quantize_scope():
        fresh.load_weights(path)                           # ... and refreshed here
    _fit(fresh, 2)
    # the kernels the quantizer feeds forward (weight * mask) keep every zero after 2 steps;
    # with the all-ones masks of the fresh build, Adam would have moved them off zero
    kept = 0
    masked = set()
    for layer in fresh.layers:
        for weight, _, qvars in getattr(layer, "_weight_vars", []):
            if "sparsity_mask" in qvars:
                masked.add(layer.layer.name)
                kept += int(np.sum(weight.numpy() * qvars["sparsity_mask"].numpy() == 0))
    # every pruned layer has a mask, the SE squeeze convs (Conv2D -> bare ReLU) included (PQAT also
    # gives the unpruned stem a mask; it has no zeros to keep)
    assert set(targets) <= masked
    rep = compress.sparsity_report(model)["layers"]
    expected = sum(rep[name]["zeros"] for name in masked)
    assert expected > 0.9 * zeros_before and kept >= expected


def test_schemes_use_only_tfmots_public_api():
    """compress.schemes reaches tfmot through ``tensorflow_model_optimization``'s public modules
    only (a private path can move in an upgrade without a word), and keeps tfmot's default layout
    transform instead of a copy of its list."""
    import ast
    import inspect

    from tfmobile.compress import schemes

    source = inspect.getsource(schemes)
    imported = [alias.name if isinstance(node, ast.Import) else node.module
                for node in ast.walk(ast.parse(source)) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names]
    assert not [m for m in imported if m and m.startswith("tensorflow_model_optimization.")], imported
    assert "python.core" not in source
    import tensorflow_model_optimization as tfmot

    default = tfmot.quantization.keras.default_8bit.Default8BitQuantizeLayoutTransform
    for scheme in (schemes.QuantizeScheme(), schemes.PrunePreserveQuantizeScheme()):
        assert isinstance(scheme.get_layout_transformer(), default)
