"""tfmobile.train: fit, per-epoch checkpoints, resume after a kill, architecture checks, LiteRT eval.

A tiny two-conv stand-in family is registered here (through the real model registry, so specs,
checkpoints and tfmot wrapping work exactly as for the zoo) to keep each fit to a few seconds.
"""
import contextlib
import json
import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

import tfmobile  # noqa: F401
import tf_keras as keras

from tfmobile import compress, data, evaluation, models, train
from tfmobile.errors import UserError
from tfmobile.models import registry
from tfmobile.models.layers import conv_bn_act
from tfmobile.models.blocks import Block
from tfmobile.models.spec import ModelSpec


@dataclass(kw_only=True)
class _TinyConv(Block):
    type: ClassVar[str] = "tiny_conv"
    filters: int
    stride: int

    def out_channels(self, cin):
        return self.filters


@dataclass(kw_only=True)
class _TinyHead(Block):
    type: ClassVar[str] = "tiny_head"


@registry.register_block(_TinyConv)
def _tiny_conv(x, b, spec):
    return conv_bn_act(x, b.filters, 3, b.stride, b.name, bn_momentum=0.9)


@registry.register_block(_TinyHead)
def _tiny_head(x, b, spec):
    x = keras.layers.GlobalAveragePooling2D(name=b.name + "_pool")(x)
    return keras.layers.Dense(spec.classes, activation="softmax", name=b.name + "_fc")(x)


@registry.register_model("tiny_test")
def _tiny(input_shape=(32, 32, 3), alpha=1.0, classes=10, **kw):
    w = max(4, int(8 * alpha))
    blocks = [{"type": "tiny_conv", "name": "c1", "filters": w, "stride": 2},
              {"type": "tiny_conv", "name": "c2", "filters": 2 * w, "stride": 2},
              {"type": "tiny_head", "name": "head"}]
    return ModelSpec("tiny", f"tiny_test_{w}", tuple(input_shape), blocks, classes=classes)


@pytest.fixture(scope="module")
def splits():
    return data.train_val_split(data.load_fashion_mnist(subset=True), 0.2, limit=800)


@pytest.fixture(scope="module")
def trained(splits, tmp_path_factory):
    """One float run shared by the tests that need a trained model: (output_dir, model, metrics)."""
    out = str(tmp_path_factory.mktemp("float") / "run")
    model, m = train.fit(_tiny_model(2.0), splits, out, epochs=4, batch_size=32, lr=5e-3, verbose=0)
    return out, model, m


def _tiny_model(alpha=1.0, res=16):
    return models.build("tiny_test", input_shape=(res, res, 3), alpha=alpha)


def test_fit_learns_and_writes_checkpoint_metrics_logs(trained, splits):
    from pathlib import Path

    out, model, m = trained
    out = Path(out)
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3, 4]
    # learns: well above chance (10 %) on the held-out validation split after 4 short epochs
    assert m["val_accuracy"] > 0.35, m["history"]
    # cosine schedule: the learning rate decays
    lrs = [h["lr"] for h in m["history"]]
    assert lrs[-1] < lrs[1]
    # every variable of the step exists before it is traced: one trace, not two (seconds per NetAdapt proposal)
    assert model.train_function.experimental_get_tracing_count() == 1
    info = json.loads((out / "checkpoint" / "checkpoint.json").read_text())
    assert info["epoch"] == 4 and info["compression"] is None
    assert info["metrics"]["val_accuracy"] == pytest.approx(m["val_accuracy"])
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 4
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out / "logs" / "validation"))
    # the checkpoint rebuilds the same function
    again = train.load_checkpoint(str(out / "checkpoint"))
    x = data.preprocess(splits.x_val[:8], (16, 16, 3))
    np.testing.assert_allclose(again(x, training=False), model(x, training=False), atol=1e-5)
    assert train.evaluate(again, splits.x_val, splits.y_val) == pytest.approx(m["val_accuracy"], abs=1e-6)


class _KillAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt("simulated kill")


@contextlib.contextmanager
def _killed_at(epoch, batch):
    """train.fit inside stops with KeyboardInterrupt at (epoch, batch), as a killed process would; the checkpoint
    callback is the real one again afterwards."""
    killer = _KillAt(epoch, batch)

    class Killing(train._EpochCheckpoint):
        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            killer.on_epoch_begin(epoch)

        def on_train_batch_begin(self, batch, logs=None):
            killer.on_train_batch_begin(batch)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(train, "_EpochCheckpoint", Killing)
        yield


def test_resume_after_kill_continues_from_last_checkpoint(tmp_path, splits):
    out = str(tmp_path / "run")
    # Kill in the middle of epoch 3 (index 2): epochs 1-2 are checkpointed, epoch 3 is lost.
    with _killed_at(2, 3):
        train.fit(_tiny_model(), splits, out, epochs=4, batch_size=64, verbose=0, steps_per_epoch=5)
    info = train.checkpoint_info(out)
    assert info["epoch"] == 2
    saved_step = int(np.load(os.path.join(out, "checkpoint", "optimizer.npz"))["v0"])
    assert saved_step == 2 * 5
    # without --resume the existing checkpoint is protected
    with pytest.raises(UserError, match="--resume"):
        train.fit(_tiny_model(), splits, out, epochs=4, batch_size=64, verbose=0, steps_per_epoch=5)
    model, m = train.fit(_tiny_model(), splits, out, epochs=4, batch_size=64, verbose=0, resume=True,
                         steps_per_epoch=5)
    assert m["resumed_from_epoch"] == 2
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3, 4]
    assert train.checkpoint_info(out)["epoch"] == 4
    assert int(model.optimizer.iterations.numpy()) == 2 * saved_step


def test_checkpoint_of_another_architecture_is_a_user_error(tmp_path, splits):
    out = str(tmp_path / "run")
    train.fit(_tiny_model(1.0), splits, out, epochs=1, batch_size=64, verbose=0, steps_per_epoch=1)
    with pytest.raises(UserError, match="not the requested"):
        train.fit(_tiny_model(2.0), splits, out, epochs=2, batch_size=64, verbose=0, resume=True)
    other = models.get_spec("tiny_test", input_shape=(16, 16, 3), alpha=2.0)
    with pytest.raises(UserError, match="not the requested"):
        train.load_checkpoint(os.path.join(out, "checkpoint"), expect=other)
    # weights that do not fit the stored spec
    ck = os.path.join(out, "checkpoint")
    with open(os.path.join(ck, "spec.json"), "w") as f:
        f.write(other.to_json())
    with pytest.raises(UserError, match="does not match"):
        train.load_checkpoint(ck)
    with pytest.raises(UserError, match="not a tfmobile checkpoint"):
        train.load_checkpoint(str(tmp_path))


def test_atomic_checkpoint_survives_a_failed_save(tmp_path, splits, monkeypatch):
    model = _tiny_model()
    ck = str(tmp_path / "ck")
    train.save_checkpoint(model, ck, extra={"epoch": 1})
    before = open(os.path.join(ck, "weights.h5"), "rb").read()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_weights", boom)
    with pytest.raises(OSError):
        train.save_checkpoint(model, ck, extra={"epoch": 2})
    assert train.checkpoint_info(ck)["epoch"] == 1
    assert open(os.path.join(ck, "weights.h5"), "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["ck"]  # no temp litter


def test_evaluate_tflite_matches_keras(trained, splits):
    import tensorflow as tf

    _, model, _ = trained
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    res = evaluation.evaluate_tflite(conv.convert(), splits.x_val, splits.y_val, batch_size=64)
    keras_acc = train.evaluate(model, splits.x_val, splits.y_val)
    assert res["n"] == len(splits.y_val)
    assert res["accuracy"] == pytest.approx(keras_acc, abs=0.01)


def test_qat_fine_tune_and_checkpoint_roundtrip(tmp_path, splits, trained):
    float_dir, _, fm = trained
    qmodel, m = train.fit(train.load_checkpoint(float_dir), splits, str(tmp_path / "q"), epochs=1,
                          batch_size=64, compression="qat", verbose=0)
    assert m["compression"] == "qat"
    # QAT fine-tuning starts from the float weights: accuracy stays near the float model's
    assert m["val_accuracy"] > fm["val_accuracy"] - 0.1
    assert any("quant" in type(layer).__name__.lower() for layer in qmodel.layers)
    assert qmodel.train_function.experimental_get_tracing_count() == 1
    back = train.load_checkpoint(str(tmp_path / "q"))
    x = data.preprocess(splits.x_val[:8], (16, 16, 3))
    np.testing.assert_allclose(back(x, training=False), qmodel(x, training=False), atol=1e-4)


@pytest.mark.slow
def test_prune_checkpoint_is_stripped_and_resumes_to_target(tmp_path, splits, trained):
    float_dir, _, _ = trained
    out = str(tmp_path / "p")
    kw = dict(batch_size=64, compression="prune", target_sparsity=0.5, verbose=0, steps_per_epoch=4)
    train.fit(train.load_checkpoint(float_dir), splits, out, epochs=1, **kw)
    # resumed with a longer run: wrapped again, pruning schedule continues from the saved step
    model, m = train.fit(train.load_checkpoint(float_dir), splits, out, epochs=3, resume=True, **kw)
    assert m["resumed_from_epoch"] == 1
    back = train.load_checkpoint(out)
    assert train.checkpoint_info(out)["compression"] == "prune"
    assert not any("prune" in type(layer).__name__.lower() for layer in back.layers)  # stripped
    rep = compress.sparsity_report(back)
    assert rep["sparse_layers_sparsity"] == pytest.approx(0.5, abs=0.02)


# --------------------------------------------------------------------------------------------
# knowledge distillation
# --------------------------------------------------------------------------------------------
def test_distillation_loss_mixes_labels_and_scaled_soft_targets():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(6, 10)).astype("float32"), rng.normal(size=(6, 10)).astype("float32")
    labels = rng.integers(0, 10, 6)
    plain = keras.losses.sparse_categorical_crossentropy(labels, student, from_logits=True).numpy()
    np.testing.assert_allclose(train.distillation_loss(labels, student, teacher, 0.0, 4.0), plain, rtol=1e-5)
    mixed = train.distillation_loss(labels, student, teacher, 0.5, 4.0).numpy()
    assert np.all(np.abs(mixed - plain) > 1e-3)
    # Hinton's T^2 times KL(teacher_T || student_T), by hand
    t = 4.0
    pt, ps = tf.nn.softmax(teacher / t).numpy(), tf.nn.softmax(student / t).numpy()
    soft = t * t * (pt * (np.log(pt) - np.log(ps))).sum(-1)
    np.testing.assert_allclose(mixed, 0.5 * plain + 0.5 * soft, rtol=1e-4)
    # a student equal to its teacher has no soft loss
    np.testing.assert_allclose(train.distillation_loss(labels, teacher, teacher, 1.0, 4.0), 0.0, atol=1e-5)


def _shifted_teacher(model):
    """The trained model with its classes rolled by one (it disagrees with the labels everywhere) and its
    probabilities sharpened (the small trained model is unsure; its soft targets at T=2 are near uniform)."""
    import tensorflow as tf

    inputs = keras.Input(model.input_shape[1:])
    rolled = keras.layers.Lambda(lambda p: 5.0 * tf.math.log(tf.roll(p, 1, axis=-1) + 1e-7))
    return keras.Model(inputs, keras.layers.Softmax()(rolled(model(inputs, training=False))))


def _agreement(student, teacher, splits):
    x = data.preprocess(splits.x_val, (16, 16, 3))
    return float(np.mean(student(x, training=False).numpy().argmax(-1) == teacher(x, training=False).numpy().argmax(-1)))


def test_distilled_student_moves_to_its_teacher_and_checkpoint_holds_the_student(trained, splits, tmp_path):
    _, teacher_base, _ = trained
    teacher = _shifted_teacher(teacher_base)
    out = str(tmp_path / "kd")
    student, m = train.fit(_tiny_model(), splits, out, epochs=4, batch_size=32, lr=5e-3, verbose=0,
                           teacher=teacher, distill=1.0, temperature=2.0)
    assert m["distillation"] == {"weight": 1.0, "temperature": 2.0}
    # W=1: the labels are ignored, the student predicts what the (wrong-on-purpose) teacher predicts
    assert _agreement(student, teacher, splits) > 0.3   # the teacher itself is right on 4 in 10 of its classes
    assert m["val_accuracy"] < 0.2     # measured on the true labels: below chance
    assert teacher.trainable           # the teacher is given back as it came
    # the checkpoint is the student alone: its own spec, its weights, the same function
    back = train.load_checkpoint(out)
    assert models.spec_of(back).name == models.spec_of(student).name
    x = data.preprocess(splits.x_val[:8], (16, 16, 3))
    np.testing.assert_allclose(back(x, training=False), student(x, training=False), atol=1e-5)


def test_distillation_settings_are_checked(splits, tmp_path, trained):
    with pytest.raises(UserError, match="teacher"):
        train.fit(_tiny_model(), splits, str(tmp_path / "a"), epochs=1, verbose=0, distill=0.5)
    for distill, temperature in ((1.5, 4.0), (-0.1, 4.0), (0.5, 0.0)):
        with pytest.raises(UserError, match="distillation"):
            train.fit(_tiny_model(), splits, str(tmp_path / "b"), epochs=1, verbose=0, teacher=trained[1],
                      distill=distill, temperature=temperature)


def test_distilled_fit_resumes_after_kill(trained, splits, tmp_path):
    teacher = _shifted_teacher(trained[1])
    out = str(tmp_path / "kd")
    kw = dict(epochs=3, batch_size=32, lr=5e-3, verbose=0, steps_per_epoch=8, teacher=teacher, distill=1.0,
              temperature=2.0)
    with _killed_at(1, 3):
        train.fit(_tiny_model(), splits, out, **kw)
    assert train.checkpoint_info(out)["epoch"] == 1
    student, m = train.fit(_tiny_model(), splits, out, resume=True, **kw)
    assert m["resumed_from_epoch"] == 1 and [h["epoch"] for h in m["history"]] == [1, 2, 3]
    assert int(student.optimizer.iterations.numpy()) == 3 * 8
    assert m["val_accuracy"] < 0.1     # still following the shifted teacher after the resume, not the labels
