"""convert.tflm.tflm_accuracy: top-1 of an int8 model run by TFLite-Micro (in a child process) agrees
with LiteRT's on the same images; broken models and the runtime's aborts are one-line errors."""
import numpy as np
import pytest

import tfmobile  # noqa: F401
import tf_keras as keras

from netadapt_tiny import tiny_spec, tiny_splits
from tfmobile import convert, data, evaluation, models
from tfmobile.convert.tflm import tflm_accuracy
from tfmobile.errors import UserError


@pytest.fixture(scope="module")
def test_images():
    d = data.load_fashion_mnist(None, subset=True)
    return d.x_test[:200], d.y_test[:200]


@pytest.fixture(scope="module")
def int8_model(test_images, tmp_path_factory):
    """A tiny MobileNetV1 with a logits head (as the firmware export has), trained a few short epochs so
    that its predictions differ from image to image (agreeing on one constant class would prove
    nothing) without the near-ties of random logits, int8 calibrated on real images."""
    from tfmobile import train

    keras.utils.set_random_seed(3)
    spec = tiny_spec((8, 16, 16), name="mbv1_tflm_accuracy").to_dict()
    spec["classifier_activation"] = "linear"
    model = models.build(models.ModelSpec.from_dict(spec))
    model, _ = train.fit(model, tiny_splits(), str(tmp_path_factory.mktemp("train")), epochs=6, batch_size=16,
                         lr=5e-3, tensorboard=False, verbose=0)
    calibration = data.preprocess(test_images[0][:50], (32, 32, 3))
    return convert.to_tflite(model, "int8", representative_data=calibration)


def test_tflm_top1_agrees_with_litert_on_200_images(int8_model, test_images):
    images, labels = test_images
    res = tflm_accuracy(int8_model, images, labels, agree_with="litert")
    assert res["n"] == 200 and res["arena_bytes"] == convert.measure_arena(int8_model)["arena_bytes"]
    # LiteRT's own path (evaluation.evaluate_tflite: preprocess, quantize, argmax) on the same images
    litert = evaluation.evaluate_tflite(int8_model, images, labels)
    assert abs(round(200 * res["accuracy"]) - round(200 * litert["accuracy"])) <= 1   # within 1 image
    agree = res["agree_with"]
    assert agree["runtime"] == "litert" and agree["fraction"] >= 0.99
    assert agree["litert_accuracy"] == litert["accuracy"]
    # LiteRT's reference kernels (TFLM's are ports of them) agree on every image
    exact = tflm_accuracy(int8_model, images, labels, arena_bytes=res["arena_bytes"],
                          agree_with="litert_reference")["agree_with"]
    assert exact["runtime"] == "litert_reference" and exact["agreeing"] == 200
    outputs = convert.run_tflite(int8_model, data.preprocess(images, (32, 32, 3)))
    assert len(set(outputs.argmax(-1).tolist())) >= 3, "a constant prediction would make agreement trivial"
    # float images already at the model's input give the same result; a given arena is used as it is
    float_res = tflm_accuracy(int8_model, data.preprocess(images, (32, 32, 3)), labels,
                              arena_bytes=res["arena_bytes"] + 1024)
    assert float_res["accuracy"] == res["accuracy"] and float_res["arena_bytes"] == res["arena_bytes"] + 1024
    assert float_res["agree_with"] is None


def test_broken_models_and_bad_inputs_are_user_errors(int8_model, test_images):
    images, labels = test_images
    for broken in (b"not a model at all", int8_model[:len(int8_model) // 3]):
        with pytest.raises(UserError):
            tflm_accuracy(broken, images[:4], labels[:4])
    with pytest.raises(UserError, match="labels"):
        tflm_accuracy(int8_model, images[:4], labels[:3])
    with pytest.raises(UserError, match="model input"):
        tflm_accuracy(int8_model, np.zeros((4, 16, 16, 3), np.float32), labels[:4])
    with pytest.raises(UserError, match="allocate"):
        tflm_accuracy(int8_model, images[:4], labels[:4], arena_bytes=1024)


def test_a_crash_of_the_runtime_names_the_signal():
    # untrained logits -> int8 SOFTMAX input scale ~1e-8: TFLM aborts the process (docs/export.md)
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inp)
    x = keras.layers.Dense(10, kernel_initializer=keras.initializers.RandomNormal(stddev=1e-9))(x)
    m = keras.Model(inp, keras.layers.Softmax()(x))
    rep = np.random.default_rng(0).uniform(-1, 1, (10, 8, 8, 1)).astype(np.float32)
    tfl = convert.to_tflite(m, "int8", representative_data=rep)
    with pytest.raises(UserError, match="SIGABRT"):
        tflm_accuracy(tfl, rep, np.zeros(10, int), arena_bytes=64 << 10)
