"""Per-layer latency LUT: build (one-op models), cache reuse across models, device keys, predict, CLI."""
import json

import pytest

import tfmobile  # noqa: F401
from tfmobile.errors import UserError

from test_bench import tiny_tflite


@pytest.fixture(scope="module")
def tiny():
    return tiny_tflite()


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    from tfmobile.bench import lut as L
    path = str(tmp_path_factory.mktemp("lut") / "lut.json")
    stats = L.build_lut([tiny], path, runs=20, rounds=2, verbose=False)
    return path, stats


def test_build_measures_each_distinct_config_once(tiny, built):
    from tfmobile.bench import graph
    path, stats = built
    layers = graph.layers(open(tiny, "rb").read())
    keys = {graph.config_key(ly["config"]) for ly in layers}
    assert stats["layers"] == len(layers) and stats["measured"] == len(keys) == stats["entries"]
    lut = json.load(open(path))
    (dkey, dev), = lut["devices"].items()
    assert dev["device"]["backend"] == "litert" and dev["device"]["threads"] == 1 and dev["device"]["cpu"]
    assert dkey == stats["device_key"] and 0 < dev["overhead_ms"] < 1.0
    assert set(dev["entries"]) == keys
    assert all(e["ms"] > 0 and e["runs"] == 20 for e in dev["entries"].values())
    ops = {e["op"] for e in dev["entries"].values()}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH", "ADD", "MEAN", "FULLY_CONNECTED"} <= ops


def test_cache_is_reused(tiny, built):
    from tfmobile.bench import lut as L
    path, _ = built
    again = L.build_lut([tiny], path, runs=20, rounds=2, verbose=False)
    assert again["measured"] == 0 and again["reused"] == again["distinct_configs"]


def test_predict_sums_layers_plus_overhead(tiny, built):
    from tfmobile.bench import lut as L
    path, _ = built
    d = L.predict_detail(tiny, path)
    assert d["predicted_ms"] == pytest.approx(d["overhead_ms"] + sum(r["ms"] for r in d["layers"]))
    assert len(d["layers"]) == d["num_ops"] and all(r["ms"] >= 0 for r in d["layers"])
    assert L.predict(tiny, path) == pytest.approx(d["predicted_ms"])
    assert L.predict(open(tiny, "rb").read(), L.load_lut(path)) == pytest.approx(d["predicted_ms"])


def test_wall_and_cpu_clocks(tiny, built):
    from tfmobile.bench import lut as L
    path, _ = built
    wall = L.predict_detail(tiny, path, clock="wall")
    cpu = L.predict_detail(tiny, path, clock="cpu")
    assert wall["clock"] == "wall" and cpu["clock"] == "cpu" and wall["predicted_ms"] > 0 and cpu["predicted_ms"] > 0
    assert L.predict_detail(tiny, path)["clock"] == "cpu"       # default at 1 thread
    entries = next(iter(L.load_lut(path)["devices"].values()))["entries"].values()
    assert all(e["cpu_ms"] > 0 for e in entries)
    with pytest.raises(UserError, match="1-thread"):
        L.predict(tiny, path, threads=2, clock="cpu")
    with pytest.raises(UserError, match="clock must be"):
        L.predict(tiny, path, clock="sundial")


def test_predict_tracks_measured_latency(tiny, built):
    """The LUT prediction is within a loose factor of a direct measurement (shared, noisy CPU)."""
    from tfmobile.bench import lut as L
    from tfmobile.bench import measure
    path, _ = built
    pred = L.predict(tiny, path)                                   # 1 thread: CPU-time clock
    meas = measure(tiny, runs=60, warmup=5, warn=False)["cpu_median_ms"]
    assert 0.33 < pred / meas < 3.0


def test_other_device_key_is_separate(tiny, built):
    from tfmobile.bench import lut as L
    path, _ = built
    with pytest.raises(UserError, match="LUT lacks"):
        L.predict(tiny, path, threads=2)          # threads are part of the device key
    with pytest.raises(UserError, match="litert backend only"):
        L.build_lut([tiny], path, backend="android")


def test_predict_measure_missing(tiny, tmp_path):
    from tfmobile.bench import lut as L
    path = str(tmp_path / "empty.json")
    with pytest.raises(UserError, match="LUT lacks"):
        L.predict(tiny, path)
    ms = L.predict(tiny, path, measure_missing=True)
    assert ms > 0 and L.load_lut(path)["devices"]


def test_bad_lut_files(tmp_path, tiny):
    from tfmobile.bench import lut as L
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        L.load_lut(str(bad))
    bad.write_text(json.dumps({"something": 1}))
    with pytest.raises(UserError, match="not a tfmobile latency LUT"):
        L.predict(tiny, str(bad))
    with pytest.raises(UserError, match="cannot predict"):
        L.predict(12345, str(tmp_path / "fresh.json"))


def test_trivial_model_is_valid():
    from tfmobile.bench import graph
    from tfmobile.bench.lut import trivial_model
    assert graph.op_names(trivial_model()) == ["ADD"]


def test_cli_build_and_predict(cli, tiny, tmp_path):
    lut = str(tmp_path / "cli_lut.json")
    p = cli("pipelines.lut", "build", "--tflite", tiny, "--lut", lut, "--runs", "10", "--json")
    assert p.returncode == 0, p.stderr
    b = json.loads(p.stdout)
    assert b["command"] == "build" and b["measured"] == b["entries"] > 0
    p = cli("pipelines.lut", "predict", "--tflite", tiny, "--lut", lut, "--layers", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["predicted_ms"] > 0 and len(r["layers"]) == r["num_ops"]


@pytest.mark.parametrize("args,needle", [
    (["nonsense"], "usage"),
    (["predict", "--tflite", "/nonexistent.tflite", "--lut", "x.json"], "no such .tflite"),
    (["predict", "--lut", "x.json"], "give the model"),
    (["build", "--tflite", "{tiny}"], "--lut"),
    (["build", "--tflite", "{tiny}", "--calibrate", "/nonexistent.tflite", "--lut", "x.json"], "--calibrate"),
])
def test_cli_errors(cli, tiny, args, needle):
    p = cli("pipelines.lut", *[a.replace("{tiny}", tiny) for a in args])
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr


def test_cli_build_with_calibration_stores_the_scale_predict_applies(cli, tiny, tmp_path):
    from tfmobile.bench import lut as L
    lut = str(tmp_path / "cal_lut.json")
    p = cli("pipelines.lut", "build", "--tflite", tiny, "--calibrate", tiny, "--lut", lut, "--runs", "10", "--json")
    assert p.returncode == 0, p.stderr
    b = json.loads(p.stdout)
    dev = next(iter(L.load_lut(lut)["devices"].values()))
    assert b["scale_cpu"] == dev["scale_cpu"] > 0 and dev["scale_models"] == ["tiny_v2.tflite"]
    d = L.predict_detail(tiny, lut)
    assert d["scale"] == dev["scale_cpu"]


def test_cli_predict_missing_entries(cli, tiny, tmp_path):
    p = cli("pipelines.lut", "predict", "--tflite", tiny, "--lut", str(tmp_path / "none.json"), "--json")
    assert p.returncode == 2 and "LUT lacks" in p.stderr and p.stdout == ""


@pytest.mark.slow
def test_predict_spec_converts_once_and_caches(tmp_path):
    import glob
    import os

    from tfmobile import models
    from tfmobile.bench import lut as L
    from tfmobile.bench.zoo import DEFAULT_WORK_DIR
    spec = models.get_spec("mbv2", alpha=0.35, input_shape=(32, 32, 3), classes=10)
    lut = str(tmp_path / "lut.json")
    ms = L.predict(spec, lut, measure_missing=True)
    assert ms > 0
    assert glob.glob(os.path.join(DEFAULT_WORK_DIR, "specs", f"{spec.name}_*.tflite"))
    assert L.predict(spec, lut) == pytest.approx(ms)          # from the cached conversion
    wider = spec.with_block(spec.blocks[3].name, expanded=spec.blocks[3].expanded * 2)
    assert L.predict(wider, lut, measure_missing=True) != pytest.approx(ms)


def test_companions_and_calibration_scale(tiny, tmp_path):
    """Whole models timed in the build's worker (companions); calibrate= stores a context scale that
    predict applies to the per-op sum (scale 1 when the LUT has none)."""
    from tfmobile.bench import lut as L
    path = str(tmp_path / "lut.json")
    stats = L.build_lut([], path, runs=10, rounds=2, verbose=False, calibrate=[tiny], evict_bytes=1 << 16)
    comp = stats["companions"]
    assert len(comp) == 1 and len(comp[0]["times_ms"]) == 10 and len(comp[0]["cpu_times_ms"]) == 10
    dev = next(iter(L.load_lut(path)["devices"].values()))
    assert dev["scale_cpu"] > 0 and dev["scale_wall"] > 0 and dev["scale_models"]
    d = L.predict_detail(tiny, path)
    assert d["scale"] == dev["scale_cpu"]
    assert d["predicted_ms"] == pytest.approx(d["overhead_ms"] + sum(r["ms"] for r in d["layers"]))
