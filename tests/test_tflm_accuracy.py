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
    model, _ = train.fit(model, tiny_splits(), str(tmp_path_factory.mktemp("train")), epochs=10, batch_size=16,
                         lr=5e-3, tensorboard=False, verbose=0)
    calibration = data.preprocess(test_images[0][:50], (32, 32, 3))
    return convert.to_tflite(model, "int8", representative_data=calibration)


def _litert_reference_top1(tflite, images):
    """LiteRT's top-1 with its reference kernels (those TFLM's are ported from), the inputs quantized as
    evaluation.evaluate_tflite quantizes them."""
    x = data.preprocess(images, (32, 32, 3))
    it = convert.interpreter(tflite, reference_kernels=True)
    d, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zero_point = d["quantization"]
    fed = np.clip(np.round(x / scale + zero_point), -128, 127).astype(np.int8)
    top1 = []
    for i in range(len(fed)):
        it.set_tensor(d["index"], fed[i:i + 1])
        it.invoke()
        top1.append(int(it.get_tensor(out["index"]).argmax()))
    return np.array(top1)


def test_tflm_top1_agrees_with_litert_on_200_images(int8_model, test_images):
    images, labels = test_images
    res = tflm_accuracy(int8_model, images, labels, agree_with="litert_reference")
    assert res["n"] == 200 and res["arena_bytes"] == convert.measure_arena(int8_model)["arena_bytes"]
    reference = _litert_reference_top1(int8_model, images)
    assert len(set(reference.tolist())) >= 3, "a constant prediction would make agreement trivial"
    # TFLM's kernels are ports of LiteRT's reference kernels: the same top-1 on (at least 99 % of) the images
    agree = res["agree_with"]
    assert agree["runtime"] == "litert_reference" and agree["agreeing"] >= 198
    assert agree["litert_accuracy"] == float((reference == labels).mean())
    assert abs(round(200 * res["accuracy"]) - round(200 * agree["litert_accuracy"])) <= 1   # within 1 image
    # LiteRT's default kernels (evaluation.evaluate_tflite, the accuracy the reports show) round some ops
    # 1 LSB away from the reference ones, which flips the near-ties of this barely trained model now and then
    default = tflm_accuracy(int8_model, images, labels, arena_bytes=res["arena_bytes"], agree_with="litert")
    litert = evaluation.evaluate_tflite(int8_model, images, labels)
    assert default["agree_with"]["litert_accuracy"] == litert["accuracy"]
    assert default["agree_with"]["fraction"] >= 0.97 and abs(default["accuracy"] - litert["accuracy"]) <= 0.02
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
