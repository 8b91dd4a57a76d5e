"""Per-layer latency LUT: build (one-op models), cache reuse across models, device keys, predict, CLI."""
import json
import os

import numpy as np
import pytest

import tfmobile  # noqa: F401
from tfmobile.errors import UserError

from test_bench import TINY_OPS, tiny_tflite


@pytest.fixture(scope="module")
def tiny():
    return tiny_tflite()


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    from tfmobile.bench import lut as L
    path = str(tmp_path_factory.mktemp("lut") / "lut.json")
    stats = L.build_lut([tiny], path, runs=20, rounds=2, verbose=False)
    return path, stats


def test_build_measures_each_distinct_config_once(tiny, built, tmp_path):
    from tfmobile.bench import graph
    from tfmobile.bench import lut as L
    path, stats = built
    # tiny's 8 ops all differ (its two CONV_2Ds have other shapes): 8 configurations, each measured
    assert stats["layers"] == len(TINY_OPS) == 8 and stats["measured"] == 8 == stats["entries"]
    # the same model twice: 16 ops, still 8 configurations measured
    twice = L.build_lut([tiny, tiny], str(tmp_path / "twice.json"), runs=4, rounds=1, verbose=False)
    assert twice["layers"] == 16 and twice["measured"] == 8 == twice["distinct_configs"] == twice["entries"]
    keys = {graph.config_key(ly["config"]) for ly in graph.layers(open(tiny, "rb").read())}
    lut = json.load(open(path))
    (dkey, dev), = lut["devices"].items()
    assert dev["device"]["backend"] == "litert" and dev["device"]["threads"] == 1 and dev["device"]["cpu"]
    assert dkey == stats["device_key"] and 0 < dev["overhead_ms"] < 1.0
    assert set(dev["entries"]) == keys
    assert all(e["ms"] > 0 and e["runs"] == 20 for e in dev["entries"].values())
    assert sorted(e["op"] for e in dev["entries"].values()) == sorted(TINY_OPS)


def test_cache_is_reused(tiny, built):
    from tfmobile.bench import lut as L
    path, _ = built
    again = L.build_lut([tiny], path, runs=20, rounds=2, verbose=False)
    assert again["measured"] == 0 and again["reused"] == again["distinct_configs"]


def _with_times(path, overhead, ms_of_op, scale=None):
    """The built LUT with hand-set times: overhead ``overhead``, each entry ``ms_of_op[its op]``."""
    import copy

    from tfmobile.bench import lut as L
    table = copy.deepcopy(L.load_lut(path))
    (dev,) = table["devices"].values()
    dev["overhead_ms"] = dev["overhead_cpu_ms"] = overhead
    for e in dev["entries"].values():
        e["ms"] = e["cpu_ms"] = ms_of_op[e["op"]]
    dev.pop("scale_wall", None)
    dev.pop("scale_cpu", None)
    if scale is not None:
        dev["scale_cpu"] = dev["scale_wall"] = scale
    return table


def test_predict_is_overhead_plus_scaled_op_times_above_it(tiny, built):
    """c + s * sum(max(t_i - c, 0)) on hand-set times, worked out by hand for tiny's 8 ops."""
    from tfmobile.bench import lut as L
    path, _ = built
    times = {op: 1.5 for op in TINY_OPS}
    times["CONV_2D"] = 3.5
    # c = 0.5: CONV_2D 3.0, DEPTHWISE_CONV_2D 1.0, CONV_2D 3.0, ADD 1.0, HARD_SWISH 1.0, MEAN 1.0,
    # FULLY_CONNECTED 1.0, SOFTMAX 1.0 -> 0.5 + 12
    for clock in ("cpu", "wall"):
        d = L.predict_detail(tiny, _with_times(path, 0.5, times), clock=clock)
        assert d["predicted_ms"] == pytest.approx(12.5) and d["overhead_ms"] == 0.5 and d["scale"] == 1.0
        assert [r["op"] for r in d["layers"]] == TINY_OPS
        assert [r["ms"] for r in d["layers"]] == pytest.approx([3.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # an op faster alone than the trivial model costs nothing (not a negative time); scale 2 doubles the rest
    times["SOFTMAX"] = 0.2
    assert L.predict(tiny, _with_times(path, 0.5, times)) == pytest.approx(11.5)
    d = L.predict_detail(open(tiny, "rb").read(), _with_times(path, 0.5, times, scale=2.0))
    assert d["predicted_ms"] == pytest.approx(22.5)
    assert [r["ms"] for r in d["layers"]] == pytest.approx([6.0, 2.0, 6.0, 2.0, 2.0, 2.0, 2.0, 0.0])
    # the path, bytes and dict forms of the real LUT agree
    real = L.predict(tiny, path)
    assert real > 0 and L.predict(open(tiny, "rb").read(), L.load_lut(path)) == pytest.approx(real)


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
    with pytest.raises(UserError, match="LUT file not found"):
        L.predict(tiny, path)
    L.save_lut(L.new_lut(), path)
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
    # the clock it predicts, beside the number: 1 thread = the invoking thread's CPU time, the clock of
    # pipelines.benchmark's clock_median_ms
    assert (r["clock"], r["threads"]) == ("cpu", 1) and "CPU time" in r["clock_text"]
    assert "clock_median_ms" in r["compare_with"]


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
    (tmp_path / "none.json").write_text(json.dumps({"lut_version": 1, "devices": {}}))
    p = cli("pipelines.lut", "predict", "--tflite", tiny, "--lut", str(tmp_path / "none.json"), "--json")
    assert p.returncode == 2 and "LUT lacks" in p.stderr and p.stdout == ""


@pytest.mark.slow
def test_predict_spec_converts_once_and_caches(tmp_path, monkeypatch):
    from tfmobile import convert, models
    from tfmobile.bench import lut as L
    from tfmobile.bench import zoo

    conversions = []
    real_to_tflite = convert.to_tflite

    def counting_to_tflite(*args, **kwargs):
        conversions.append(args[0])
        return real_to_tflite(*args, **kwargs)
    monkeypatch.setattr(convert, "to_tflite", counting_to_tflite)
    monkeypatch.setattr(zoo, "DEFAULT_WORK_DIR", str(tmp_path / "work"))   # a cold cache
    cache = tmp_path / "work" / "specs"
    spec = models.get_spec("mbv2", alpha=0.35, input_shape=(32, 32, 3), classes=10)
    lut = str(tmp_path / "lut.json")
    ms = L.predict(spec, lut, measure_missing=True)
    assert ms > 0 and len(conversions) == 1
    (cached,) = cache.glob(f"{spec.name}_*.tflite")
    assert L.predict(spec, lut) == pytest.approx(ms)          # from the cached conversion
    assert len(conversions) == 1 and list(cache.iterdir()) == [cached]
    wider = spec.with_block(spec.blocks[3].name, expanded=spec.blocks[3].expanded * 2)
    assert L.predict(wider, lut, measure_missing=True) != pytest.approx(ms)
    assert len(conversions) == 2 and len(list(cache.iterdir())) == 2


def test_companions_and_calibration_scale(tiny, tmp_path):
    """Whole models timed in the build's worker (companions); calibrate= stores a context scale that
    predict applies to the per-op sum (scale 1 when the LUT has none)."""
    from tfmobile.bench import lut as L
    path = str(tmp_path / "lut.json")
    stats = L.build_lut([], path, runs=10, rounds=2, verbose=False, calibrate=[tiny], evict_bytes=1 << 16)
    comp = stats["companions"]
    assert len(comp) == 1 and len(comp[0]["times_ms"]) == 10 and len(comp[0]["cpu_times_ms"]) == 10
    dev = next(iter(L.load_lut(path)["devices"].values()))
    assert dev["scale_models"] == [os.path.basename(tiny)]
    # scale = (whole-model median - c) / sum(max(t_i - c, 0)), recomputed here with numpy from the
    # companion's raw times and the LUT's entries (tiny's 8 ops are 8 distinct entries, each used once)
    for clock, times, field, overhead in (("cpu", "cpu_times_ms", "cpu_ms", "overhead_cpu_ms"),
                                          ("wall", "times_ms", "ms", "overhead_ms")):
        c = dev[overhead]
        ops_above = sum(max(e[field] - c, 0.0) for e in dev["entries"].values())
        assert dev["scale_" + clock] == pytest.approx((float(np.median(comp[0][times])) - c) / ops_above)
    d = L.predict_detail(tiny, path)
    assert d["scale"] == dev["scale_cpu"]
    # predict applies it: with the scale, the part above the overhead is scale times the unscaled one
    no_scale = L.load_lut(path)
    for unset in no_scale["devices"].values():
        del unset["scale_cpu"], unset["scale_wall"]
    unscaled = L.predict_detail(tiny, no_scale)
    assert d["predicted_ms"] - d["overhead_ms"] == pytest.approx(
        dev["scale_cpu"] * (unscaled["predicted_ms"] - d["overhead_ms"]))
