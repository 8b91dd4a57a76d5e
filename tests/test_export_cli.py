"""pipelines.export end to end (subprocess): a tiny happy path with --json, and every kind of bad input
-> one line, exit 2, nothing left behind. The default 224x224 command is a slow test."""
import json
import os

import pytest

from conftest import run_cli, run_cli_cases

TINY = ["--model", "mbv2", "--alpha", "0.35", "--resolution", "32", "--num_calibration", "10",
        "--num_verify", "10"]


def _one_line_error(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return errors[0]


def _listing(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_tiny_int8_tflm_json(tmp_path):
    out = tmp_path / "out"
    p = run_cli("pipelines.export", *TINY, "--int8", "--tflm", "--mcu", "cortex_m7", "--json",
                "--output_dir", out)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout)            # exactly one JSON object on stdout
    assert r["randomly_initialized"] is True and "randomly initialised" in p.stderr
    (a,) = r["artifacts"]
    assert a["mode"] == "int8" and a["verification"]["float_ops"] == []
    assert os.path.getsize(a["path"]) == a["size_bytes"]
    assert a["inputs"][0]["dtype"] == "int8"
    t = r["tflm"]
    assert t["arena_bytes"] > 0 and t["tflm_vs_litert_max_lsb"] <= 1 and t["budget"]["fits"] is True
    assert "SOFTMAX op cut" in t["firmware_from"]      # no second conversion
    for f in t["files"].values():
        assert os.path.isfile(f)
    assert _listing(out) == sorted(["mbv2_int8.tflite", "mbv2_int8.json", "mbv2_int8_tflm.tflite",
                                    "mbv2_int8_tflm.json", "mbv2_int8_tflm.cc", "mbv2_int8_tflm.h",
                                    "mbv2_int8_tflm_op_resolver.h"])
    side = json.load(open(out / "mbv2_int8.json"))
    assert side["spec"]["family"] == "mbv2" and side["spec"]["input_shape"] == [32, 32, 3]


def test_float16_and_text_output(tmp_path):
    p = run_cli("pipelines.export", *TINY, "--float16", "--output_dir", tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "RANDOMLY INITIALISED" in p.stdout and "fp16" in p.stdout
    assert _listing(tmp_path) == ["mbv2_fp16.json", "mbv2_fp16.tflite"]


BAD_FLAGS = [
    (["--model", "resnet50", "--int8"], "unknown model"),
    (["--int8", "--float16"], "contradicting flags"),
    (["--tflm", "--dynamic"], "contradicting flags"),
    (["--int8", "--mcu", "cortex_m7"], "--tflm"),
    (["--tflm", "--mcu", "pentium"], "unknown MCU"),
    (["--float16", "--io", "uint8"], "--io"),
    (["--int8", "--weights", "/nonexistent/weights.h5"], "not found"),
]


def test_bad_flags(tmp_path):
    """Every case in one child interpreter (conftest.run_cli_cases): one error line, nothing written."""
    outs = [tmp_path / f"out{k}" for k in range(len(BAD_FLAGS))]
    results = run_cli_cases("pipelines.export", [
        [*([] if "--model" in args else ["--model", "mbv2"]), "--alpha", "0.35", "--resolution", "32", *args,
         "--output_dir", out] for (args, _), out in zip(BAD_FLAGS, outs)])
    for (args, message), out, p in zip(BAD_FLAGS, outs, results):
        assert message in _one_line_error(p), args
        assert not out.exists(), args


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = run_cli("pipelines.export", *TINY, "--int8", "--output_dir", blocker / "sub")
    assert "output dir" in _one_line_error(p)


def test_weights_that_do_not_fit(tmp_path):
    import tfmobile  # noqa: F401
    from tfmobile import models

    path = tmp_path / "mbv3.h5"
    models.build("mbv3_small", input_shape=(32, 32, 3), alpha=0.75, classes=10).save_weights(str(path))
    out = tmp_path / "out"
    p = run_cli("pipelines.export", *TINY, "--int8", "--weights", path, "--output_dir", out)
    message = _one_line_error(p)
    # names the file, and the first layer where mbv3_small's weights stop matching mbv2's
    # (mbv3's 5th weighted layer is an SE squeeze with a bias; mbv2's is a bias-free 1x1 projection)
    assert f"weights file {path} does not fit the model" in message, message
    assert "'block_0_project_conv'" in message and "'block_0_se_squeeze'" in message, message
    assert not out.exists()


def test_model_with_ops_tflm_cannot_run(tmp_path):
    import tfmobile  # noqa: F401
    import tf_keras as keras

    # RepeatVector lowers to TILE: int8 in LiteRT, no kernel in TFLite-Micro
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, strides=2)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.RepeatVector(3)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(10)(x)
    path = tmp_path / "tiled.h5"
    keras.Model(inp, x).save(str(path))
    out = tmp_path / "out"
    p = run_cli("pipelines.export", "--model", path, "--tflm", "--num_calibration", "5", "--num_verify", "5",
                "--output_dir", out)
    assert "TILE" in _one_line_error(p)
    assert not out.exists()


@pytest.mark.slow
def test_default_command_224(tmp_path):
    p = run_cli("pipelines.export", "--model", "mbv3_small", "--int8", "--json", "--output_dir", tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout)
    (a,) = r["artifacts"]
    assert a["inputs"][0]["shape"] == [1, 224, 224, 3] and a["verification"]["float_ops"] == []
    # random init: MobileNetV3's softmax is ~uniform, so check the error, not argmax agreement
    assert a["verification"]["mean_abs_error"] < 0.01 and "HARD_SWISH" in a["ops"]
    assert r["randomly_initialized"] is True and r["wall_s"] > 0


def _huge_checkpoint(directory, **changes):
    """A checkpoint directory whose spec.json asks for a huge input (no weights: refused before them)."""
    from tfmobile import models

    spec = models.get_spec("mbv2", alpha=0.35, input_shape=(32, 32, 3), classes=10).to_dict()
    spec.update(changes)
    os.makedirs(directory)
    with open(os.path.join(directory, "spec.json"), "w") as f:
        json.dump(spec, f)
    with open(os.path.join(directory, "checkpoint.json"), "w") as f:
        json.dump({"compression": None, "epoch": 1, "metrics": {}}, f)
    return directory


def test_checkpoint_spec_with_a_huge_input_is_refused_before_building(tmp_path):
    ckpt = _huge_checkpoint(str(tmp_path / "ckpt"), input_shape=[100000, 100000, 3])
    out = tmp_path / "out"
    p = run_cli("pipelines.export", "--model", "mbv2", "--weights", ckpt, "--int8", "--output_dir", out,
                timeout=120)
    assert "input_shape 100000x100000 is above the largest resolution, 1024x1024" in _one_line_error(p)
    assert _listing(out) == []
