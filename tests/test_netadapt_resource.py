"""netadapt.resource: a spec's int8 ops / LUT keys, latency, MACs, TFLM arena and flash without converting it."""
import collections
import json
import os

import numpy as np
import pytest

import tfmobile  # noqa: F401
from tfmobile import models
from tfmobile.bench import graph, synth
from tfmobile.errors import UserError
from tfmobile.netadapt import KINDS
from tfmobile.netadapt.resource import resource
from tfmobile.netadapt.resource import int8_ops

ZOO = [  # (name, alphas, options): every family, two widths each
    ("mbv1", (0.25, 0.5), {}),
    ("mbv2", (0.35, 1.0), {}),
    ("mbv3_small", (0.75, 1.0), {}),
    ("mbv3_large", (0.5, 1.0), {}),
    ("mbv3_small", (1.0,), {"minimalistic": True}),
    ("shufflenet_v1", (0.5, 1.0), {}),
    ("shufflenet_v2", (0.5, 1.0), {}),
    ("squeezenet1_0", (0.5, 1.0), {}),
    ("squeezenet1_1", (0.5, 1.0), {}),
]
ARENA_TABLE = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmark_data", "tflm_arenas.json")


def _cases(resolution):
    return [(n, resolution, a, o) for n, alphas, o in ZOO for a in alphas]


def trained_like(model, seed=0):
    """Non-zero biases and batch-norm statistics, as a trained model has: the converter shares an all-zero
    bias buffer between ops and drops a Dense layer's all-zero bias, which a fresh model has everywhere."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if type(layer).__name__ == "BatchNormalization":
            g, b, m, v = weights
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 1.5, v.shape)])
        elif getattr(layer, "use_bias", False) and weights:
            layer.set_weights(weights[:-1] + [rng.normal(0, 0.1, weights[-1].shape).astype(np.float32)])
    return model


_CONVERTED = {}


def converted(name, res, alpha, options):
    """(spec, int8 .tflite bytes) of a zoo model with trained-like weights; cached for the module."""
    key = (name, res, alpha, tuple(sorted(options.items())))
    if key not in _CONVERTED:
        from tfmobile.convert import to_tflite
        model = trained_like(models.build(name, input_shape=(res, res, 3), alpha=alpha, classes=10, **options))
        _CONVERTED[key] = (models.spec_of(model), to_tflite(model, "int8", io="int8", num_calibration=4))
    return _CONVERTED[key]


def _check_keys(case):
    spec, data = converted(*case)
    want = collections.Counter(graph.config_key(ly["config"]) for ly in graph.layers(data))
    got = collections.Counter(op["key"] for op in int8_ops(spec)["ops"])
    assert got == want, (f"{spec.name}: missing {list(want - got)[:2]}, extra {list(got - want)[:2]}")


@pytest.mark.parametrize("case", _cases(32), ids=lambda c: f"{c[0]}_{c[2]}{''.join(c[3])}")
def test_spec_keys_equal_converted_keys_32(case):
    _check_keys(case)


@pytest.mark.slow
@pytest.mark.parametrize("res", [64, 96])
def test_spec_keys_equal_converted_keys_larger(res):
    for case in _cases(res):
        _check_keys(case)


@pytest.mark.parametrize("case", _cases(32), ids=lambda c: f"{c[0]}_{c[2]}{''.join(c[3])}")
def test_flash_within_5_percent_of_int8_file(case):
    spec, data = converted(*case)
    flash = resource(spec, "flash")
    assert abs(flash - len(data)) <= 0.05 * len(data), (spec.name, flash, len(data))


def test_synthesized_one_op_models_have_the_requested_keys():
    """Every op of two converted models, rebuilt from its configuration alone, reads back with the same key."""
    from ai_edge_litert.interpreter import Interpreter
    ran = set()
    for case in (("mbv3_small", 32, 0.75, {}), ("shufflenet_v2", 32, 0.5, {})):
        spec, _ = converted(*case)
        for op in int8_ops(spec)["ops"]:
            data = synth.one_op_model(op["config"], op["const_values"])
            assert graph.config_key(graph.layers(data)[0]["config"]) == op["key"]
            if op["op"] not in ran:   # and LiteRT runs it
                it = Interpreter(model_content=data)
                it.allocate_tensors()
                it.invoke()
                ran.add(op["op"])
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH", "MEAN", "MUL", "STRIDED_SLICE", "TRANSPOSE"} <= ran


def test_macs_equal_analysis():
    from tfmobile import analysis
    for name, alpha in (("mbv3_small", 0.75), ("shufflenet_v1", 0.5), ("squeezenet1_1", 1.0)):
        spec = models.get_spec(name, input_shape=(32, 32, 3), alpha=alpha, classes=10)
        assert resource(spec, "macs") == analysis.profile(spec).macs > 0


def test_latency_equals_conversion_based_prediction(tmp_path):
    """Same keys, same entries, same overhead and scale: the spec prediction equals bench.lut.predict's."""
    from tfmobile.bench import lut as L
    spec, data = converted("mbv2", 32, 0.35, {})
    path = str(tmp_path / "lut.json")
    L.build_lut([data], path, runs=4, rounds=2, verbose=False)
    table = L.load_lut(path)
    dev = next(iter(table["devices"].values()))
    dev["scale_cpu"] = 1.25     # a context scale is applied the same way
    assert resource(spec, "latency", lut=table) == pytest.approx(
        L.predict(data, table), rel=1e-12)
    narrower = spec.copy()
    narrower.classes = 7
    with pytest.raises(UserError, match="LUT lacks"):
        resource(narrower, "latency", lut=table)


def test_prediction_is_pure_and_ensure_lut_is_the_one_step_that_measures(tmp_path):
    from tfmobile.bench import lut as L
    from tfmobile.netadapt.resource import ensure_lut
    spec = models.get_spec("mbv1", input_shape=(32, 32, 3), alpha=0.25, classes=10)
    path = str(tmp_path / "lut.json")
    with pytest.raises(UserError, match="LUT file not found"):
        resource(spec, "latency", lut=path)
    assert not os.path.exists(path)                     # predicting wrote nothing
    assert ensure_lut([spec], path) == len({op["key"] for op in int8_ops(spec)["ops"]})
    entries = next(iter(L.load_lut(path)["devices"].values()))["entries"]
    assert {op["key"] for op in int8_ops(spec)["ops"]} <= set(entries)
    first = resource(spec, "latency", lut=path)
    assert first > 0
    stamp = os.stat(path).st_mtime_ns
    assert ensure_lut([spec], path) == 0                # nothing lacking: nothing measured or written
    assert os.stat(path).st_mtime_ns == stamp
    assert resource(spec, "latency", lut=path) == first


def test_entries_added_for_another_spec_do_not_move_a_prediction(tmp_path):
    """The fixed overhead in the LUT stays when ensure_lut adds entries (it used to be re-minimised)."""
    from tfmobile.bench import lut as L
    from tfmobile.netadapt.resource import ensure_lut
    spec = models.get_spec("mbv1", input_shape=(32, 32, 3), alpha=0.25, classes=10)
    table = L.new_lut()
    ensure_lut([spec], table)
    dev = next(iter(table["devices"].values()))
    dev["overhead_ms"] = dev["overhead_cpu_ms"] = 1000.0    # far above what a new batch times
    before = resource(spec, "latency", lut=table)
    other = spec.with_block("block_1", filters=24)
    assert ensure_lut([other], table) > 0
    assert dev["overhead_ms"] == dev["overhead_cpu_ms"] == 1000.0
    assert resource(spec, "latency", lut=table) == before


def test_bad_input_is_one_line():
    spec = models.get_spec("mbv1", input_shape=(32, 32, 3), alpha=0.25, classes=10)
    with pytest.raises(UserError, match="latency, macs, params, peak_sram, flash"):
        resource(spec, "energy")
    with pytest.raises(UserError, match="needs a LUT"):
        resource(spec, "latency")
    foreign = spec.copy()
    foreign.family = "resnet50"
    with pytest.raises(UserError, match="does not build"):
        resource(foreign, "macs")
    with pytest.raises(UserError, match="ModelSpec"):
        resource({"blocks": []}, "macs")
    other_device = {"lut_version": 1, "devices": {"Other CPU | arm64 | litert | 4 | ai-edge-litert 0": {
        "device": {}, "overhead_ms": 0.01, "entries": {}}}}
    with pytest.raises(UserError, match="thread count must match"):
        resource(spec, "latency", lut=other_device)
    assert KINDS == ("latency", "macs", "params", "peak_sram", "flash")


# --- TFLM arena -------------------------------------------------------------------------------------
def _measured_arena(spec_and_data):
    from tfmobile.convert.flatbuffer import strip_final_softmax
    from tfmobile.convert.tflm import measure_arena
    return measure_arena(strip_final_softmax(spec_and_data[1]))["arena_bytes"]


@pytest.mark.parametrize("case", [("mbv2", 32, 0.35, {}), ("shufflenet_v2", 32, 0.5, {})],
                         ids=lambda c: c[0])
def test_peak_sram_within_10_percent_of_measured_arena(case):
    conv = converted(*case)
    measured = _measured_arena(conv)
    predicted = resource(conv[0], "peak_sram")
    assert abs(predicted - measured) <= 0.10 * measured, (conv[0].name, predicted, measured)


def test_peak_sram_within_10_percent_of_committed_measurements():
    """docs/benchmark_data/tflm_arenas.json: arenas measured by convert.measure_arena (refreshed by the slow
    test below) for every family at two sizes."""
    with open(ARENA_TABLE) as f:
        table = json.load(f)
    assert len(table["models"]) >= 2 * len(_cases(32))
    for row in table["models"]:
        spec = models.get_spec(row["model"], input_shape=(row["resolution"],) * 2 + (3,), alpha=row["alpha"],
                               classes=10, **row["options"])
        predicted = resource(spec, "peak_sram")
        assert abs(predicted - row["arena_bytes"]) <= 0.10 * row["arena_bytes"], (spec.name, predicted, row)


@pytest.mark.slow
def test_committed_arena_table_matches_fresh_measurements():
    with open(ARENA_TABLE) as f:
        table = json.load(f)
    for row in table["models"]:
        conv = converted(row["model"], row["resolution"], row["alpha"], row["options"])
        assert _measured_arena(conv) == pytest.approx(row["arena_bytes"], rel=0.01), row


def _fabricated_lut(specs, ms_of):
    """A LUT of this host's device holding every entry ``specs`` need, with times ``ms_of(op)``."""
    from tfmobile.bench import host_device
    from tfmobile.bench import lut as L
    device = host_device("litert", 1)
    entries = {}
    for spec in specs:
        for op in int8_ops(spec)["ops"]:
            t = ms_of(op)
            entries[op["key"]] = {"op": op["op"], "ms": t, "min_ms": t, "cpu_ms": t, "runs": 1, "measured": "-"}
    table = L.new_lut()
    table["devices"][L.device_key(device)] = {"device": device, "overhead_ms": 0.01, "overhead_cpu_ms": 0.01,
                                              "entries": entries}
    return table


def test_largest_width_finds_the_widest_step_within_budget():
    from tfmobile.netadapt import groups, largest_width, shrink
    spec = models.get_spec("mbv2", input_shape=(32, 32, 3), alpha=0.35, classes=10)
    group = max(groups(spec), key=lambda g: g.width)
    step = group.channel_step
    narrower = group.width - group.width % step - 2 * step
    for kind in ("macs", "flash", "peak_sram"):
        budget = resource(shrink(spec, group, narrower), kind)
        assert resource(shrink(spec, group, narrower + step), kind) > budget   # the next step up misses
        assert largest_width(spec, group, budget, kind) == narrower
        assert largest_width(spec, group.name, resource(spec, kind), kind) == group.width
    assert largest_width(spec, group, 1, "macs") is None
    with pytest.raises(UserError, match="no channel group"):
        largest_width(spec, "no_such_group", 1, "macs")
    with pytest.raises(UserError, match="finite number"):
        largest_width(spec, group, float("nan"), "macs")


def test_largest_width_on_latency_takes_the_first_fit_from_the_top_and_predicts_purely():
    """Latency is not monotone in the width: the search goes down from the top and stops at the first
    width within budget, even when a narrower one would be faster still. With every entry present
    it measures nothing and leaves the LUT as it was."""
    from tfmobile.netadapt import groups, largest_width, shrink
    spec = models.get_spec("mbv2", input_shape=(32, 32, 3), alpha=0.35, classes=10)
    group = max(groups(spec), key=lambda g: g.width)
    candidates = {w: (spec if w == group.width else shrink(spec, group, w)) for w in [group.width] + group.widths()}
    slow_width, fit_width = group.widths()[0], group.widths()[1]
    slow_keys = {op["key"] for op in int8_ops(candidates[slow_width])["ops"]} - \
        {op["key"] for op in int8_ops(candidates[fit_width])["ops"]} - \
        {op["key"] for op in int8_ops(spec)["ops"]}
    table = _fabricated_lut(candidates.values(), lambda op: 5.0 if op["key"] in slow_keys else
                            0.02 + graph.config_macs(op["config"]) / 1e6)
    snapshot = json.dumps(table, sort_keys=True)
    at = {w: resource(c, "latency", lut=table) for w, c in candidates.items()}
    assert at[slow_width] > at[group.width] > at[fit_width]      # one step down is slower
    assert largest_width(spec, group, at[fit_width], "latency", lut=table) == fit_width
    assert largest_width(spec, group, at[group.width], "latency", lut=table) == group.width
    assert json.dumps(table, sort_keys=True) == snapshot         # pure: nothing measured or added


def test_largest_width_fills_a_lut_path_per_candidate_and_saves_it_once(tmp_path, monkeypatch):
    """For latency the explicit step (ensure_lut) runs on every candidate tried, into one table read
    once; the path is written once at the end."""
    import sys

    from tfmobile.bench import lut as L
    from tfmobile.netadapt import groups, largest_width, shrink
    resource_module = sys.modules["tfmobile.netadapt.resource"]
    spec = models.get_spec("mbv2", input_shape=(32, 32, 3), alpha=0.35, classes=10)
    group = max(groups(spec), key=lambda g: g.width)
    full = _fabricated_lut([spec] + [shrink(spec, group, w) for w in group.widths()],
                           lambda op: 0.02 + graph.config_macs(op["config"]) / 1e6)
    full_entries = next(iter(full["devices"].values()))["entries"]
    ensured, saves = [], []

    def fake_ensure_lut(specs, table, threads=1, verbose=False, backend="litert"):
        """Copies the fabricated entries instead of timing them (what ensure_lut adds, without a CPU)."""
        ensured.extend(s.to_json() for s in specs)
        if not table["devices"]:
            table["devices"] = json.loads(json.dumps({k: dict(d, entries={}) for k, d in full["devices"].items()}))
        entries = next(iter(table["devices"].values()))["entries"]
        added = [op["key"] for s in specs for op in int8_ops(s)["ops"] if op["key"] not in entries]
        entries.update((k, full_entries[k]) for k in added)
        return len(set(added))

    monkeypatch.setattr(resource_module, "ensure_lut", fake_ensure_lut)
    real_save = L.save_lut
    monkeypatch.setattr(resource_module.lut_mod, "save_lut", lambda table, path: saves.append(path) or
                        real_save(table, path))
    target = shrink(spec, group, group.widths()[1])
    budget = resource(target, "latency", lut=full)
    path = str(tmp_path / "lut.json")
    assert largest_width(spec, group, budget, "latency", lut=path) == group.widths()[1]
    assert ensured == [c.to_json() for c in (spec, shrink(spec, group, group.widths()[0]), target)]
    assert saves == [path]
    assert resource(target, "latency", lut=path) == budget       # the saved LUT predicts the same


@pytest.mark.parametrize("name,alpha", [("mbv3_small", 0.75), ("shufflenet_v1", 0.5), ("shufflenet_v2", 0.5)])
def test_shrunk_spec_keys_equal_converted_keys(name, alpha):
    """NetAdapt's case: a spec edited by shrink (non-zoo widths) still gives the converter's keys."""
    import tfmobile.netadapt as netadapt
    from tfmobile.convert import to_tflite
    spec = models.get_spec(name, input_shape=(32, 32, 3), alpha=alpha, classes=10)
    shrunk = spec
    for group in netadapt.groups(spec)[::3]:     # every third group, one step each
        group = next(g for g in netadapt.groups(shrunk) if g.name == group.name)
        shrunk = netadapt.shrink(shrunk, group, group.widths()[0])
    assert shrunk.to_json() != spec.to_json()
    data = to_tflite(trained_like(models.build(shrunk)), "int8", io="int8", num_calibration=4)
    want = collections.Counter(graph.config_key(ly["config"]) for ly in graph.layers(data))
    assert collections.Counter(op["key"] for op in int8_ops(shrunk)["ops"]) == want
    assert abs(resource(shrunk, "flash") - len(data)) <= 0.05 * len(data)
    measured = _measured_arena((shrunk, data))
    assert abs(resource(shrunk, "peak_sram") - measured) <= 0.10 * measured, (resource(shrunk, "peak_sram"), measured)


def test_a_synthesized_rectifier_is_quantized_like_the_converters():
    """A standalone int8 RELU's time depends on its zero points (0.204 vs 0.104 ms for 16x16x120 at 1
    thread): the one-op model the LUT times carries the converter's output zero point (-128: a rectifier's
    range starts at 0) and a negative input zero point (bench.synth.RECTIFIER_INPUT_ZERO_POINT), not 0."""
    import numpy as np
    import tf_keras as keras

    from tfmobile import convert
    from tfmobile.bench import synth
    from tfmobile.convert import flatbuffer

    x = keras.Input((8, 8, 4))
    y = keras.layers.Concatenate()([keras.layers.AveragePooling2D(1)(keras.layers.ReLU()(x)),
                                    keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 1)(x))])
    model = keras.Model(x, keras.layers.Conv2D(4, 1)(keras.layers.ReLU()(y)))
    rng = np.random.default_rng(0)
    tflite = convert.to_tflite(model, "int8", representative_data=rng.normal(size=(16, 8, 8, 4)).astype("float32"))

    def rectifier_zero_points(blob):
        m = flatbuffer.load_model(blob)
        g = m.subgraphs[0]
        ops = [o for o in g.operators if flatbuffer.opcode_name(m.operatorCodes[o.opcodeIndex]) == "RELU"]
        assert ops, "no standalone RELU"
        return [(int(g.tensors[o.inputs[0]].quantization.zeroPoint[0]),
                 int(g.tensors[o.outputs[0]].quantization.zeroPoint[0])) for o in ops]

    _, converted_out = rectifier_zero_points(tflite)[-1]
    info = {"const": False, "dtype": "int8", "per_channel": False, "shape": [1, 8, 8, 8]}
    synth_in, synth_out = rectifier_zero_points(synth.one_op_model({"op": "RELU", "options": {}, "inputs": [info],
                                                                     "outputs": [info]}))[0]
    assert synth_out == converted_out == -128
    assert synth_in == synth.RECTIFIER_INPUT_ZERO_POINT < 0
