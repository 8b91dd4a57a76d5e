"""tfmobile.train's run-level functions: choosing a run's architecture (run_spec) and a restartable
training stage (fit_or_load). A zoo MobileNet V1 at alpha 0.25, 32x32, one step per epoch."""
import json
import os

import numpy as np
import pytest

import tfmobile  # noqa: F401

from tfmobile import data, models, train
from tfmobile.errors import UserError

FIT = dict(batch_size=16, steps_per_epoch=1, verbose=0, tensorboard=False)


@pytest.fixture(scope="module")
def splits():
    return data.train_val_split(data.load_fashion_mnist(subset=True), 0.2, limit=100)


def _three_classes():
    """Fashion-MNIST subset images of classes 0, 1, 2 only: a data set the zoo's 10-class head does not fit."""
    full = data.load_fashion_mnist(subset=True)
    tr, te = np.asarray(full.y_train) < 3, np.asarray(full.y_test) < 3
    return data.ImageData(full.x_train[tr], np.asarray(full.y_train)[tr], full.x_test[te],
                          np.asarray(full.y_test)[te], "three classes", ("a", "b", "c"))


def _refuse_load(**kw):
    raise AssertionError(f"data already given, loaded again with {kw}")


def test_run_spec_takes_the_classes_of_the_data():
    spec, ds = train.run_spec(_refuse_load, "mbv1", alpha=0.25, resolution=32, dataset=_three_classes())
    assert spec.classes == 3 and tuple(spec.input_shape) == (32, 32, 3)
    assert ds.source == "three classes"


def test_fit_or_load_trains_then_loads_then_resumes(tmp_path, splits):
    out = str(tmp_path / "run")
    built = []

    def make_model():
        built.append(1)
        return models.build("mbv1", input_shape=(32, 32, 3), alpha=0.25, classes=10)

    first, m1 = train.fit_or_load(make_model, splits, out, 1, **FIT)
    assert len(built) == 1 and m1["epochs"] == 1
    # finished: loaded from the checkpoint, the model factory is not called, metrics are metrics.json's
    again, m2 = train.fit_or_load(make_model, splits, out, 1, **FIT)
    assert len(built) == 1
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
        assert m2 == json.load(f)
    x = data.preprocess(splits.x_val[:4], (32, 32, 3))
    np.testing.assert_allclose(again(x, training=False), first(x, training=False), atol=1e-5)
    # more epochs asked: the run is resumed from its epoch-1 checkpoint, not started again
    _, m3 = train.fit_or_load(make_model, splits, out, 2, **FIT)
    assert m3["resumed_from_epoch"] == 1 and m3["epochs"] == 2
    assert train.checkpoint_info(out)["epoch"] == 2

    # run_spec from that (float) checkpoint: a PQAT run needs a pruned one; the data must fit its head
    with pytest.raises(UserError, match="is a float checkpoint; --pqat needs a prune one"):
        train.run_spec(_refuse_load, from_checkpoint=out, compression="pqat", dataset=splits)
    with pytest.raises(UserError, match="checkpoint has 10 classes but the data has 3"):
        train.run_spec(_refuse_load, from_checkpoint=out, compression="qat", dataset=_three_classes())
    asked = []
    spec, _ = train.run_spec(lambda **kw: asked.append(kw) or data.load_fashion_mnist(subset=True),
                             "mbv2", alpha=1.0, resolution=64, from_checkpoint=out, compression="qat")
    # the checkpoint's architecture wins over the zoo arguments, and the data is loaded at its size
    assert spec.name == "mbv1_0.25_32" and spec.classes == 10
    assert asked == [{"image_size": (32, 32), "channels": 3}]


def _stage(out, splits, calib, epochs, qat_epochs, model=None):
    from tfmobile.main_job import Job

    job = Job(out, splits, batch_size=16, steps_per_epoch=1, resume={"seed": 0, "verbose": 0})
    model = model or models.build("mbv1", input_shape=(32, 32, 3), alpha=0.25, classes=10)
    return job, job.float_qat_int8("m_int8", model, epochs, 1e-3, qat_epochs, calib, tflm=False, bench=False)


def test_float_int8_stage_resumes_in_its_directory_and_is_post_training_int8_without_qat(tmp_path, splits):
    """main_job.Job.float_qat_int8 (the main job's stages, shared with NetAdapt's final stage and baselines)."""
    from tfmobile.main_job import Job

    calib = data.sample_images(splits.x_train, (32, 32, 3), n=20)
    out = str(tmp_path / "stage")
    job, (row, fmodel, qmodel) = _stage(out, splits, calib, 1, 0)
    assert qmodel is None and list(job.timings) == ["float training", "PTQ int8 export", "measure m_int8"]
    assert row["variant"] == "m_int8" and 0 <= row["accuracy"] <= 1 and row["input_dtype"] == "int8"
    assert "latency_ms" not in row and os.path.isfile(os.path.join(out, "tflite", "m_int8.tflite"))
    tflite = open(row["path"], "rb").read()
    # again in the same directory: the float training is finished there, so it is not trained again
    job, (again, _, _) = _stage(out, splits, calib, 1, 0)
    assert job.metrics["float"]["resumed_from_epoch"] == 1
    assert open(again["path"], "rb").read() == tflite and again["accuracy"] == row["accuracy"]
    # no float epochs: the model as given
    job, (_, fmodel2, _) = _stage(str(tmp_path / "given"), splits, calib, 0, 0, model=fmodel)
    assert fmodel2 is fmodel and "float training" not in job.timings
    assert not os.path.exists(tmp_path / "given" / "train")
    with pytest.raises(UserError, match="already holds a run"):   # the main job itself still refuses the directory
        Job(out, splits)


@pytest.mark.slow
def test_float_qat_int8_stage_exports_the_qat_model_and_resumes_it(tmp_path, splits):
    calib = data.sample_images(splits.x_train, (32, 32, 3), n=20)
    out = str(tmp_path / "stage")
    job, (row, _, qmodel) = _stage(out, splits, calib, 1, 1)
    assert qmodel is not None and list(job.timings)[:3] == ["float training", "QAT fine-tuning", "QAT int8 export"]
    assert row["input_dtype"] == "int8"
    job, (again, _, _) = _stage(out, splits, calib, 1, 1)
    assert job.metrics["qat"]["resumed_from_epoch"] == 1
    assert open(again["path"], "rb").read() == open(row["path"], "rb").read()
