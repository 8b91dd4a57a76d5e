"""tfmobile.bench backends and pipelines.benchmark: litert, benchmark_litert, benchmark_model (stand-in)."""
import json
import os
import stat
import tempfile

import pytest

import tfmobile  # noqa: F401
from conftest import run_cli_cases
from tfmobile.errors import UserError

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_BM = os.path.join(HERE, "fake_benchmark_model")
FAKE_BM_PROFILE = os.path.join(HERE, "data", "benchmark_model_tiny_v2_op_profile.txt")
TINY_VERSION = 2
# tiny_tflite()'s ops in execution order, from its layers, and the per-op avg ms of the stand-in's
# recorded op profile (tests/data/benchmark_model_tiny_v2_op_profile.txt), written out by hand
TINY_OPS = ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "HARD_SWISH", "MEAN", "FULLY_CONNECTED", "SOFTMAX"]
RECORDED_AVG_MS = [0.004, 0.003, 0.002, 0.001, 0.002, 0.001, 0.001, 0.001]


def tiny_tflite():
    """A small int8 model (16x16x3) with the ops that fusion matters for, converted once and cached.

    conv3x3/s2 + BN + ReLU6 (-> one CONV_2D), depthwise + BN + ReLU6, 1x1 conv, residual ADD,
    HardSwish (own HARD_SWISH op), global average pool (MEAN), dense + softmax.
    """
    d = os.path.join(tempfile.gettempdir(), "tfmobile_test_bench")
    path = os.path.join(d, f"tiny_v{TINY_VERSION}.tflite")
    if os.path.exists(path):
        return path
    import tf_keras as keras
    from tf_keras import layers

    from tfmobile.convert import to_tflite
    from tfmobile.io import write_bytes
    from tfmobile.models.layers import HardSwish

    keras.utils.set_random_seed(0)
    x0 = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x0)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU(6.0)(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU(6.0)(y)
    y = layers.Conv2D(8, 1, use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    x = layers.Add()([x, y])
    x = HardSwish()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(x0, x)
    write_bytes(path, to_tflite(model, "int8", io="int8", num_calibration=4))
    return path


@pytest.fixture(scope="module")
def tiny():
    return tiny_tflite()


@pytest.fixture
def corrupt(tmp_path):
    p = tmp_path / "corrupt.tflite"
    p.write_bytes(b"\x1c\x00\x00\x00XXXX" + os.urandom(200))
    return str(p)


SCHEMA = ("backend", "threads", "runs", "init_ms", "mean_ms", "median_ms", "p90_ms", "std_ms", "min_ms", "cv")


# ---- statistics ---------------------------------------------------------------------------------

def test_summarize_matches_numpy():
    import numpy as np

    from tfmobile.bench.stats import cv_warning, summarize
    t = [1.0, 2.0, 2.5, 3.0, 10.0, 1.5, 2.2]
    s = summarize(t)
    assert s["mean_ms"] == pytest.approx(np.mean(t))
    assert s["median_ms"] == pytest.approx(np.median(t))
    assert s["p90_ms"] == pytest.approx(np.percentile(t, 90))
    assert s["std_ms"] == pytest.approx(np.std(t, ddof=1))
    assert s["min_ms"] == 1.0 and s["cv"] == pytest.approx(np.std(t, ddof=1) / np.mean(t))
    assert cv_warning(s) and "coefficient of variation" in cv_warning(s)
    assert cv_warning(summarize([1.0, 1.01, 0.99, 1.0])) is None
    with pytest.raises(ValueError):
        summarize([])


# ---- graph reading: what TFLite actually runs --------------------------------------------------

def test_layers_reflect_tflite_fusion(tiny):
    from tfmobile.bench import graph
    data = open(tiny, "rb").read()
    ops = [ly["op"] for ly in graph.layers(data)]
    # conv+BN+ReLU6 fused: exactly 2 CONV_2D and 1 DEPTHWISE_CONV_2D, no separate BN/RELU6 ops
    assert ops.count("CONV_2D") == 2 and ops.count("DEPTHWISE_CONV_2D") == 1
    assert "HARD_SWISH" in ops and "ADD" in ops and "MEAN" in ops and "FULLY_CONNECTED" in ops
    assert not {"RELU6", "MUL", "BATCH_NORM"} & set(ops)
    first = graph.layers(data)[0]["config"]
    assert first["options"]["fusedActivationFunction"] == "RELU6"
    assert first["options"]["strideH"] == 2 and first["inputs"][1]["shape"] == [8, 3, 3, 3]
    assert graph.layers(data)[0]["macs"] == 8 * 8 * 8 * 3 * 3 * 3


def test_op_model_runs_standalone(tiny, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from tfmobile.bench import graph
    data = open(tiny, "rb").read()
    for ly in graph.layers(data):
        one = graph.op_model(data, ly["index"])
        assert graph.op_names(one) == [ly["op"]]
        # same configuration (shapes, dtypes, options, weights) as in the whole model
        assert graph.layers(one)[0]["config"] == ly["config"]
        p = tmp_path / f"op{ly['index']}.tflite"
        p.write_bytes(one)
        it = Interpreter(model_path=str(p))
        it.allocate_tensors()
        it.invoke()


def test_corrupt_and_missing_models_are_user_errors(corrupt, tmp_path):
    from tfmobile.bench import graph, measure
    with pytest.raises(UserError, match="not a TFLite model"):
        measure(corrupt)
    with pytest.raises(UserError, match="no such"):
        measure(str(tmp_path / "missing.tflite"))
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00\x00\x00\x00TFL3" + b"\xff" * 16)
    with pytest.raises(UserError):
        graph.layers(junk.read_bytes())


# ---- litert backends ----------------------------------------------------------------------------

def test_measure_litert_schema(tiny):
    from tfmobile.bench import measure
    r = measure(tiny, backend="litert", threads=1, runs=20, warmup=3, warn=False)
    for k in SCHEMA:
        assert k in r, k
    assert r["runs"] == 20 and r["threads"] == 1
    assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"] and r["mean_ms"] > 0 and r["init_ms"] > 0
    assert r["model_bytes"] == os.path.getsize(tiny) and r["ops"]["CONV_2D"] == 2
    assert r["cpus"] and len(r["cpus"]) == 1          # pinned to one core
    assert 0 < r["cpu_median_ms"] <= r["median_ms"] * 1.5   # thread CPU time of the 1-thread invokes
    assert r["clock"] == "cpu" and r["clock_median_ms"] == r["cpu_median_ms"]   # the LUT's clock at 1 thread
    assert r["device"]["cpu"] and r["device"]["runtime"].startswith("ai-edge-litert")
    assert isinstance(r["warnings"], list)


def test_clock_median_is_the_lut_clock_of_the_backend_and_threads():
    from tfmobile.bench import clock_median
    from tfmobile.bench.lut import latency_clock

    r = {"median_ms": 2.0, "cpu_median_ms": 1.5}
    assert clock_median(r, "litert", 1) == {"clock": "cpu", "clock_median_ms": 1.5}
    for backend, threads in (("litert", 2), ("benchmark_model", 1), ("android", 1)):
        assert clock_median(r, backend, threads) == {"clock": "wall", "clock_median_ms": 2.0}
        assert latency_clock(backend, threads) == "wall"


def test_measure_warns_on_high_cv(tiny, monkeypatch, capsys):
    from tfmobile import bench
    from tfmobile.bench import litert

    real = litert.run_worker

    def noisy(*a, **k):  # the real run, then one run made 10x slower: cv must exceed 5 %
        out = real(*a, **k)
        out["results"][0]["times_ms"][0] *= 10
        return out
    monkeypatch.setattr(litert, "run_worker", noisy)
    r = bench.measure(tiny, runs=10, warmup=1)
    assert r["cv"] > 0.05 and r["warnings"]
    assert "coefficient of variation" in capsys.readouterr().err


def test_benchmark_litert_backend_runs_the_real_tool(tiny):
    from tfmobile.bench import measure
    r = measure(tiny, backend="benchmark_litert", runs=10, warmup=2, warn=False)
    assert r["runs"] == 10 and r["init_ms"] > 0
    # the tool prints 0.01 ms steps: on a fast host this 8-op model reads 0.00 (seen: mean 0.0, max 0.01)
    assert 0 <= r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["mean_ms"] >= 0
    assert r["p90_ms"] is None and r["notes"]


def test_bad_counts_and_backend(tiny):
    from tfmobile.bench import measure
    with pytest.raises(UserError, match="runs"):
        measure(tiny, runs=0)
    with pytest.raises(UserError, match="unknown backend"):
        measure(tiny, backend="tpu")


# ---- benchmark_model: parser (real-format samples) and runner (stand-in binary) ----------------

# Lines as printed by TFLite's benchmark_model (format from tensorflow/lite/tools/benchmark/README.md
# and the tool's log output); a logcat-prefixed variant as seen through `adb logcat`.
SAMPLE = """INFO: STARTING!
INFO: Graph: [/data/local/tmp/ssd_mobilenet_v2_coco.tflite]
INFO: The input model file size (MB): 67.3128
INFO: Initialized session in 5.579ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 p5=1238753 median=1239807 p95=1247415

INFO: Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832
"""

PROFILE = """============================== Run Order ==============================
\t             [node type]\t  [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                 CONV_2D\t    0.000\t    4.269\t    4.269\t  0.107%\t  0.107%\t     0.000\t        0\t[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]
\t       DEPTHWISE_CONV_2D\t    4.270\t    2.150\t    2.150\t  0.054%\t  0.161%\t     0.000\t        0\t[MobilenetV1/MobilenetV1/Conv2d_1_depthwise/Relu6]
\t                 SOFTMAX\t   79.443\t    0.029\t    0.029\t  0.001%\t  1.993%\t     0.000\t        0\t[MobilenetV1/Predictions/Softmax]

Number of nodes executed: 31
============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t                 CONV_2D\t       15\t     1.406\t    89.270%\t    89.270%\t     0.000\t        0
\t       DEPTHWISE_CONV_2D\t       13\t     0.169\t    10.730%\t   100.000%\t     0.000\t        0

Timings (microseconds): count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929
Memory (bytes): count=0
31 nodes observed
"""


def test_parse_benchmark_model_output():
    from tfmobile.bench.benchmark_model import parse_output
    r = parse_output(SAMPLE)
    assert r["init_ms"] == pytest.approx(5.579) and r["first_ms"] == pytest.approx(1357.602)
    assert r["mean_ms"] == pytest.approx(1240.27) and r["warmup_avg_ms"] == pytest.approx(1357.6)
    assert r["runs"] == 50 and r["std_ms"] == pytest.approx(2.565) and r["min_ms"] == pytest.approx(1238.588)
    assert r["median_ms"] == pytest.approx(1239.807) and r["p90_ms"] is None
    assert r["memory_init_mb"] == pytest.approx(6.36328) and r["memory_overall_mb"] == pytest.approx(109.832)
    assert r["model_size_mb"] == pytest.approx(67.3128) and "op_profile" not in r
    # the same through logcat, with an old-style memory line and the op-profiling tables
    logcat = "\n".join("11-23 10:00:00.000  123  123 I tflite  : " + ln for ln in SAMPLE.splitlines())
    logcat = logcat.replace("Memory footprint delta from the start of the tool", "Peak memory footprint")
    r2 = parse_output(logcat + "\n" + PROFILE)
    assert r2["mean_ms"] == pytest.approx(1240.27) and r2["runs"] == 50
    assert r2["memory_overall_mb"] == pytest.approx(109.832)
    assert [p["node_type"] for p in r2["op_profile"]] == ["CONV_2D", "DEPTHWISE_CONV_2D", "SOFTMAX"]
    assert r2["op_profile"][0]["avg_ms"] == pytest.approx(4.269)
    assert r2["op_profile"][0]["name"] == "MobilenetV1/MobilenetV1/Conv2d_0/Relu6"
    assert r2["op_summary"][0] == {"node_type": "CONV_2D", "count": 15, "avg_ms": 1.406, "percent": 89.27,
                                   "times_called": 0}
    assert r2["nodes_executed"] == 31
    with pytest.raises(UserError, match="no 'Inference timings'"):
        parse_output("ERROR: The model is not a valid Flatbuffer buffer\nERROR: Failed to mmap model x")


def test_benchmark_model_backend_with_standin(tiny):
    from tfmobile.bench import measure
    r = measure(tiny, backend="benchmark_model", binary=FAKE_BM, runs=15, warmup=2, op_profiling=True,
                warn=False)
    # the stand-in printed count=15 for its timed runs: the flags reached it and its line was parsed
    assert r["binary"] == FAKE_BM and r["runs"] == 15
    assert r["init_ms"] > 0 and 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
    assert r["min_ms"] <= r["mean_ms"] <= r["max_ms"]
    assert r["memory_overall_mb"] >= 0 and r["memory_peak_mb"] > 0
    assert r["num_ops"] == len(TINY_OPS) and r["ops"] == {op: TINY_OPS.count(op) for op in TINY_OPS}
    # the recorded op profile, row by row, and its node-type summary
    assert [p["node_type"] for p in r["op_profile"]] == TINY_OPS
    assert [p["avg_ms"] for p in r["op_profile"]] == RECORDED_AVG_MS
    assert r["op_profile"][3]["name"] == "model/add/add" and r["op_profile"][7]["start_ms"] == 0.014
    assert {s["node_type"]: s["count"] for s in r["op_summary"]} == {op: TINY_OPS.count(op) for op in TINY_OPS}
    assert r["op_summary"][0] == {"node_type": "CONV_2D", "count": 2, "avg_ms": 0.006, "percent": 40.0,
                                  "times_called": 2}
    assert r["nodes_executed"] == 8


def test_benchmark_model_errors(tiny, corrupt, tmp_path, monkeypatch):
    from tfmobile.bench import measure
    monkeypatch.delenv("TFMOBILE_BENCHMARK_MODEL", raising=False)
    with pytest.raises(UserError, match="no benchmark_model binary"):
        measure(tiny, backend="benchmark_model")
    with pytest.raises(UserError, match="not found"):
        measure(tiny, backend="benchmark_model", binary=str(tmp_path / "nope"))
    noexec = tmp_path / "bm"
    noexec.write_text("#!/bin/sh\n")
    noexec.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(UserError, match="not executable"):
        measure(tiny, backend="benchmark_model", binary=str(noexec))
    failing = tmp_path / "bm_fail"
    failing.write_text("#!/bin/sh\necho 'ERROR: Failed to allocate tensors!'\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(UserError, match="Failed to allocate tensors"):
        measure(tiny, backend="benchmark_model", binary=str(failing))
    monkeypatch.setenv("TFMOBILE_BENCHMARK_MODEL", FAKE_BM)
    with pytest.raises(UserError, match="not a TFLite model"):
        measure(corrupt, backend="benchmark_model")


# ---- CLI -----------------------------------------------------------------------------------------

def test_cli_benchmark_json(cli, tiny):
    p = cli("pipelines.benchmark", "--tflite", tiny, "--runs", "10", "--warmup", "2", "--json")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    for k in SCHEMA:
        assert k in r
    assert r["ops"]["HARD_SWISH"] == 1
    assert r["clock"] == "cpu" and r["clock_median_ms"] == r["cpu_median_ms"] > 0   # what lut predict predicts


def test_cli_benchmark_model_backend_env(cli, tiny, monkeypatch):
    monkeypatch.setenv("TFMOBILE_BENCHMARK_MODEL", FAKE_BM)
    p = cli("pipelines.benchmark", "--tflite", tiny, "--backend", "benchmark_model", "--runs", "5", "--op_profiling",
            "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    # the environment's binary ran with --num_runs=5 and its recorded op profile came back
    assert r["binary"] == FAKE_BM and r["runs"] == 5
    assert [row["avg_ms"] for row in r["op_profile"]] == RECORDED_AVG_MS


def test_cli_benchmark_errors(tiny, corrupt, monkeypatch):
    """Every case in one child interpreter (conftest.run_cli_cases)."""
    monkeypatch.delenv("TFMOBILE_BENCHMARK_MODEL", raising=False)
    bad_flags = [(["--backend", "benchmark_model"], "no benchmark_model binary"),
                 (["--backend", "benchmark_model", "--binary", "/nonexistent/benchmark_model"], "not found"),
                 (["--runs", "0"], "runs must be")]
    unreadable = (corrupt, "/nonexistent/m.tflite")
    results = run_cli_cases("pipelines.benchmark", [["--tflite", tiny, *args] for args, _ in bad_flags]
                            + [["--tflite", path, "--json"] for path in unreadable])
    for (args, needle), p in zip(bad_flags, results):
        assert p.returncode == 2, args
        assert p.stderr.strip().splitlines()[-1].startswith("error: ") and needle in p.stderr
        assert "Traceback" not in p.stderr
    for path, p in zip(unreadable, results[len(bad_flags):]):   # corrupt and missing: only the error line
        assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr, path
        assert p.stderr.strip().splitlines() == [ln for ln in p.stderr.strip().splitlines() if ln.startswith("error: ")]


def test_worker_reports_unloadable_model(tmp_path):
    from tfmobile.bench.litert import run_worker
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00\x00\x00\x00TFL3" + b"\x00" * 32)
    out = run_worker([str(bad)], runs=2, warmup=0)
    assert "error" in out["results"][0]


@pytest.mark.slow
def test_zoo_model_cli(cli, tmp_path):
    p = cli("pipelines.benchmark", "--model", "mbv2", "--alpha", "0.35", "--resolution", "96",
            "--work_dir", str(tmp_path), "--runs", "10", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["zoo_model"]["name"] == "mbv2" and r["ops"]["CONV_2D"] >= 30
