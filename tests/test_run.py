"""The CLIs pipelines.train / pipelines.run: bad inputs (one line, exit 2) and an end-to-end smoke run."""
import json
import os

import numpy as np
import pytest


def _one_error_line(r):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    return lines[0]


def test_train_bad_inputs(cli, tmp_path):
    # missing Fashion-MNIST IDX files in --data_dir (a directory with neither IDX nor class folders)
    (tmp_path / "empty").mkdir()
    r = cli("pipelines.train", "--data_dir", tmp_path / "empty", "--output_dir", tmp_path / "o1", timeout=300)
    assert "not found" in _one_error_line(r)
    # an image directory where one class has no images
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    import tfmobile  # noqa: F401
    import tensorflow as tf
    (root / "a" / "0.png").write_bytes(tf.io.encode_png(np.zeros((8, 8, 1), np.uint8)).numpy())
    r = cli("pipelines.train", "--image_dir", root, "--output_dir", tmp_path / "o2", timeout=300)
    assert "class 'b'" in _one_error_line(r)


def test_train_cli_flag_errors(cli, tmp_path):
    r = cli("pipelines.train", "--qat", "--output_dir", tmp_path, timeout=300)
    assert "--from_checkpoint" in _one_error_line(r)
    r = cli("pipelines.train", "--qat", "--from_checkpoint", tmp_path, "--output_dir", tmp_path / "o", timeout=300)
    assert "not a tfmobile checkpoint" in _one_error_line(r)


def test_checkpoint_of_another_architecture_via_cli(cli, tmp_path):
    """--resume into an output_dir whose checkpoint is another model: one line, exit 2."""
    import tfmobile  # noqa: F401
    from tfmobile import models, train

    out = tmp_path / "run"
    spec = models.get_spec("mbv1", input_shape=(32, 32, 3), alpha=0.25, classes=10)
    train.save_checkpoint(models.build(spec), str(out / "checkpoint"), extra={"epoch": 1})
    r = cli("pipelines.train", "--model", "mbv2", "--alpha", "0.35", "--subset", "--resume",
            "--output_dir", out, "--epochs", "2", timeout=300)
    assert "not the requested" in _one_error_line(r)


def _tiny_folder(root, classes=3, per_class=10, seed=0):
    """A class-folder set of 16x16 PNGs whose classes differ (a bar whose width is the class)."""
    import tfmobile  # noqa: F401
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 40, (16, 16, 3)).astype(np.uint8)
            img[:, : 4 * (c + 1)] += 150
            (root / f"class{c}" / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    return root


def test_run_happy_path_on_a_tiny_folder(cli, tmp_path):
    """``python -m pipelines.run --data_dir`` end to end in the default suite: a few steps per stage
    on 30 images; the report, every .tflite (loadable, runnable in LiteRT) and numbers that are
    accuracies. (test_run_end_to_end_smoke, slow, adds pruning and TFLite-Micro.)"""
    import tfmobile  # noqa: F401
    from tfmobile import convert, main_job

    root = _tiny_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    r = cli("pipelines.run", "--data_dir", root, "--output_dir", out, "--model", "mbv1", "--alpha", "0.25",
            "--resolution", "32", "--epochs", "1", "--qat_epochs", "1", "--steps_per_epoch", "2",
            "--bench_runs", "2", "--notflm", "--json", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert json.loads((out / "report.json").read_text())["variants"] == rep["variants"]
    assert [v["variant"] for v in rep["variants"]] == ["float32", "ptq_int8", "qat_int8"]
    assert rep["classes"] == 3 and rep["data_source"] == str(root) and rep["test_images"] == 6
    assert rep["input_shape"] == [32, 32, 3] and rep["augment"] == ["shift"]
    assert rep["lr"] < main_job.MAIN_JOB_LR        # a tiny set's batch of 16 trains at a lower rate
    assert rep["training"]["float"]["steps_run"] == 2 and rep["training"]["qat"]["steps_run"] == 2
    for v in rep["variants"]:
        assert isinstance(v["accuracy"], float) and 0.0 <= v["accuracy"] <= 1.0, v
        assert os.path.isfile(v["path"]) and v["size_bytes"] == os.path.getsize(v["path"])
        with open(v["path"], "rb") as f:
            interp = convert.interpreter(f.read())
        interp.allocate_tensors()
        interp.invoke()
        assert interp.get_output_details()[0]["shape"].tolist() == [1, 3]
    assert rep["variants"][2]["input_dtype"] == "int8" and not rep["variants"][2]["float_ops"]
    for f in ("report.md", "accuracy_latency_size.png"):
        assert (out / f).stat().st_size > 0


@pytest.mark.slow
def test_run_end_to_end_smoke(cli, tmp_path):
    out = tmp_path / "run"
    r = cli("pipelines.run", "--output_dir", out, "--epochs", "1", "--qat_epochs", "1", "--prune", "0.5",
            "--prune_epochs", "1", "--steps_per_epoch", "3", "--bench_runs", "5", "--json", timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    names = [v["variant"] for v in rep["variants"]]
    assert names == ["float32", "ptq_int8", "qat_int8", "pruned50_qat_int8"]
    assert rep["input_shape"] == [48, 48, 3] and rep["clipnorm"] == 1.0 and rep["lr"] == 5e-3  # the recipe
    for v in rep["variants"]:
        assert v["test_images"] == 1000 and 0.0 <= v["accuracy"] <= 1.0
        assert os.path.isfile(v["path"]) and v["size_bytes"] == os.path.getsize(v["path"])
        assert v["latency_ms"]["median_ms"] > 0
    by = {v["variant"]: v for v in rep["variants"]}
    assert by["qat_int8"]["size_bytes"] < by["float32"]["size_bytes"] / 2
    assert by["qat_int8"]["input_dtype"] == "int8" and not by["qat_int8"]["float_ops"]
    assert by["pruned50_qat_int8"]["conv_fc_sparsity"] > 0.3
    assert "tflm" not in by["ptq_int8"] or by["ptq_int8"]["tflm"] is None
    for name in ("qat_int8", "pruned50_qat_int8"):       # the trained int8 models run in TFLite-Micro
        tflm = by[name]["tflm"]
        assert "error" not in tflm, tflm
        assert tflm["arena_bytes"] > 0 and tflm["arena_bytes"] % 16 == 0 and tflm["tflm_vs_litert_max_lsb"] <= 1
        for f in tflm["files"].values():
            assert os.path.getsize(f) > 0, f
    assert "TFLite-Micro export failed" not in (out / "report.md").read_text()
    for f in ("report.md", "report.json", "accuracy_latency_size.png"):
        assert (out / f).stat().st_size > 0
    assert (out / "accuracy_latency_size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
