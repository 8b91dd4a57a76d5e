"""Per-layer latency lookup table (NetAdapt-style): measure each distinct op configuration once, reuse it.

A "layer" here is an op the TFLite interpreter runs in the int8 model (conv+BN+activation fused into
one CONV_2D, HARD_SWISH separate, MEAN, ADD, MUL, CONCATENATION, RESHAPE/TRANSPOSE, pools, FULLY_CONNECTED,
SOFTMAX, ...). Each is cut out of the converted model as a one-op .tflite with the same tensors and
quantization (``graph.op_model``) and timed on the backend; the JSON cache is keyed by

    device key  = cpu model string | machine | backend | threads | runtime version
    config key  = op type + input/output shapes+dtypes + weight shapes + builtin options

so entries are reused across models (a MobileNetV2 block measured once serves every model that has
that block at that resolution and width).

Prediction: ``c + s * sum_i (t_i - c)`` where ``t_i`` is the median latency of op i's one-op model,
``c`` the measured latency of a trivial one-op model (a 1x1x1x8 int8 ADD): each one-op timing carries
the fixed per-invoke cost once, the whole model carries it once; and ``s`` the device's context
scale measured on calibration models (``build_lut(calibrate=)``; 1 when the LUT has none): ops cost
more inside a whole model than alone (docs/benchmark.md, "LUT accuracy"). Entries keep two
medians: wall clock (``ms``) and the invoking thread's CPU time (``cpu_ms``; at 1 thread XNNPACK runs in that
thread, so it is the compute time without waits for a CPU held by other processes). ``predict``
uses CPU time at 1 thread and wall clock otherwise, unless ``clock=`` says which.

    build_lut(["a.tflite", ...], "lut.json")          # measure what is missing, save
    predict(model | spec | "m.tflite" | bytes, "lut.json")   -> ms
"""
import datetime
import json
import os
import sys
import tempfile

from tfmobile.bench import graph
from tfmobile.bench.stats import median
from tfmobile.convert import flatbuffer
from tfmobile.errors import UserError
from tfmobile.io import write_json

LUT_VERSION = 1
DEFAULT_RUNS = 60
DEFAULT_ROUNDS = 6


def device_key(device):
    return " | ".join(str(device[k]) for k in ("cpu", "machine", "backend", "threads", "runtime"))


def new_lut():
    return {"lut_version": LUT_VERSION, "devices": {}}


def load_lut(path_or_lut):
    """A LUT dict from a path (a missing file is an empty LUT) or a dict (returned as is)."""
    if isinstance(path_or_lut, dict):
        return path_or_lut
    if path_or_lut is None or not os.path.exists(path_or_lut):
        return new_lut()
    try:
        with open(path_or_lut, encoding="utf-8") as f:
            lut = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"LUT {path_or_lut} is not valid JSON: {e.msg} (line {e.lineno})") from None
    except OSError as e:
        raise UserError(f"cannot read LUT {path_or_lut}: {e.strerror}") from None
    if not isinstance(lut, dict) or lut.get("lut_version") != LUT_VERSION or not isinstance(lut.get("devices"), dict):
        raise UserError(f"{path_or_lut} is not a tfmobile latency LUT (version {LUT_VERSION})")
    _check_values(lut, path_or_lut)
    return lut


_DEVICE_NUMBERS = ("overhead_ms", "overhead_cpu_ms", "scale_cpu", "scale_wall")
_ENTRY_NUMBERS = ("ms", "min_ms", "cpu_ms")


def _check_values(lut, path):
    """Every number predict/build reads is a finite number >= 0 (a hand-edited LUT fails here, in one line)."""
    def bad(where, value):
        raise UserError(f"corrupt LUT {path}: {where} must be a number >= 0, got {value!r}")

    def number(where, value, optional):
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
                or value == float("inf"):
            bad(where, value)

    for dkey, dev in lut["devices"].items():
        if not isinstance(dev, dict) or not isinstance(dev.get("entries"), dict):
            raise UserError(f"corrupt LUT {path}: device '{dkey}' has no entries table")
        for field in _DEVICE_NUMBERS:
            number(f"device '{dkey}' {field}", dev.get(field), optional=True)
        for key, entry in dev["entries"].items():
            if not isinstance(entry, dict):
                raise UserError(f"corrupt LUT {path}: entry {key!r} of device '{dkey}' is not an object")
            for field in _ENTRY_NUMBERS:
                number(f"{field} of entry {key!r}", entry.get(field), optional=field != "ms")


def save_lut(lut, path):
    write_json(path, lut)


def _device(backend, threads):
    if backend != "litert":
        raise UserError(f"the LUT measures on the litert backend only (got {backend!r}); "
                        "benchmark_model / android LUTs need per-op runs on that device")
    from tfmobile.bench import host_device
    return host_device(backend, threads)


def trivial_model():
    """A one-op int8 model that does almost nothing (ADD of two [1,1,1,8] tensors): the fixed cost."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    from tfmobile.convert.flatbuffer import serialize

    m = schema.ModelT()
    m.version = 3
    m.buffers = [schema.BufferT()]
    oc = schema.OperatorCodeT()
    oc.builtinCode = schema.BuiltinOperator.ADD
    oc.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    oc.version = 2
    m.operatorCodes = [oc]
    sg = schema.SubGraphT()
    sg.tensors = []
    for name in (b"a", b"b", b"out"):
        t = schema.TensorT()
        t.shape = [1, 1, 1, 8]
        t.type = schema.TensorType.INT8
        t.name = name
        t.buffer = 0
        q = schema.QuantizationParametersT()
        q.scale = np.array([0.05], np.float32)
        q.zeroPoint = np.array([0], np.int64)
        t.quantization = q
        sg.tensors.append(t)
    op = schema.OperatorT()
    op.opcodeIndex = 0
    op.inputs = [0, 1]
    op.outputs = [2]
    op.builtinOptionsType = schema.BuiltinOptions.AddOptions
    op.builtinOptions = schema.AddOptionsT()
    sg.operators = [op]
    sg.inputs = [0, 1]
    sg.outputs = [2]
    m.subgraphs = [sg]
    return serialize(m)


# ---------------------------------------------------------------------------------------------------
# model -> tflite bytes

def to_int8_tflite(model_or_spec, cache_dir=None):
    """int8 .tflite bytes (int8 I/O) of a tf_keras model or ModelSpec, via tfmobile.convert.

    Calibration uses 8 real images: latency depends on the graph, not on the calibrated ranges.
    Conversions are cached in ``cache_dir`` (default $TMPDIR/tfmobile_bench/specs) by the SHA-1 of
    a ModelSpec's JSON, so NetAdapt asking again for the same proposal does not convert twice.
    """
    import hashlib

    from tfmobile.models.spec import ModelSpec

    # Only specs are cached: a Keras model may carry its spec yet be changed since (QAT, pruning).
    spec = model_or_spec if isinstance(model_or_spec, ModelSpec) else None
    path = None
    if spec is not None:
        from tfmobile.bench.zoo import DEFAULT_WORK_DIR
        digest = hashlib.sha1(spec.to_json(indent=None).encode()).hexdigest()[:16]
        path = os.path.join(cache_dir or os.path.join(DEFAULT_WORK_DIR, "specs"), f"{spec.name}_{digest}.tflite")
        if os.path.exists(path):
            return flatbuffer.read_tflite(path)
    model = model_or_spec
    if isinstance(model_or_spec, ModelSpec):
        from tfmobile import models
        model = models.build(model_or_spec)
    from tfmobile.convert import to_tflite
    data = to_tflite(model, "int8", io="int8", num_calibration=8)
    if path:
        from tfmobile.io import write_bytes
        write_bytes(path, data)
    return data


def _as_tflite(model):
    """bytes of a .tflite from a path, bytes, tf_keras model or ModelSpec."""
    if isinstance(model, (bytes, bytearray)):
        flatbuffer.check_tflite_bytes(model)
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        p = os.fspath(model)
        if p.endswith(".json"):
            from tfmobile.models.spec import ModelSpec
            return to_int8_tflite(ModelSpec.load(p))
        return flatbuffer.read_tflite(p)
    if hasattr(model, "layers") or hasattr(model, "blocks"):
        return to_int8_tflite(model)
    raise UserError(f"cannot predict the latency of a {type(model).__name__}: pass a .tflite path or bytes, "
                    "a spec .json, a ModelSpec or a tf_keras model")


def lut_layers(model):
    """The executed ops of ``model`` with their LUT config keys (list of dicts)."""
    data = _as_tflite(model)
    out = graph.layers(data)
    for layer in out:
        layer["key"] = graph.config_key(layer["config"])
    return out, data


# ---------------------------------------------------------------------------------------------------
# build

def _log(msg, verbose):
    if verbose:
        sys.stderr.write(f"[tfmobile.lut] {msg}\n")
        sys.stderr.flush()


def device_entries(table, backend="litert", threads=1):
    """The entries dict of this host's device in LUT ``table`` (None when it has none yet)."""
    dev = table["devices"].get(device_key(_device(backend, threads)))
    return None if dev is None else dev["entries"]


def has_overhead(table, backend="litert", threads=1):
    """Whether ``table`` holds this device's fixed overhead (both clocks)."""
    dev = table["devices"].get(device_key(_device(backend, threads)))
    return dev is not None and dev.get("overhead_ms") is not None and dev.get("overhead_cpu_ms") is not None


def _update_overhead(dev, wall_ms, cpu_ms, keep):
    """Keep the smallest overhead seen (the least disturbed by other load), or the first with ``keep``."""
    for field, value in (("overhead_ms", wall_ms), ("overhead_cpu_ms", cpu_ms)):
        old = dev.get(field)
        dev[field] = value if old is None else (old if keep else min(old, value))


def build_lut(models, lut=None, backend="litert", threads=1, runs=DEFAULT_RUNS, rounds=DEFAULT_ROUNDS, warmup=5,
              remeasure=False, cpus=None, verbose=True, batch=200, companions=None, evict_bytes=0,
              calibrate=None, one_op_models=None, keep_overhead=False):
    """Measure every op configuration of ``models`` that the LUT lacks for this device; save; return stats.

    models: .tflite paths / bytes / ModelSpecs / tf_keras models (int8-converted first).
    lut: path of the JSON cache (read if it exists, written atomically) or a dict (updated in place).
    Each one-op model runs ``runs`` timed invokes split over ``rounds`` interleaved rounds (all models
    of a batch take turns, so load changes on a shared CPU spread evenly); the entry is the median.
    companions: optional whole-model .tflite paths timed in the same worker and the same interleaved
    rounds as the one-op models (every batch), so they see the same machine state; their raw times
    are returned under ``"companions"`` (list of {"path", "times_ms", "cpu_times_ms"} per model).
    On a shared machine the speed of a core drifts by tens of percent over seconds even on the
    CPU-time clock (docs/benchmark.md), so a whole-model time taken at another moment is not
    comparable with the LUT entries to better than that drift.
    evict_bytes: overwrite a buffer of that size (untimed) before every one-op invoke (cold L1/L2).
    calibrate: whole-model .tflite paths (calibration models, not the ones to be predicted): their
    ops are added to the LUT and they are timed as companions; the median over them of
    (measured - c) / (sum of their ops' (t_i - c)) is stored per clock as the device's "context
    scale" (``scale_cpu`` / ``scale_wall``), which ``predict`` applies: ops cost more inside a
    whole model (weights of many ops do not stay in L2, partitions between delegated and
    non-delegated ops) than measured alone back-to-back. Needs one batch (``batch`` >= configs).
    one_op_models: {config key: (op name, function returning the one-op .tflite bytes)} measured like the
    ops cut out of ``models`` (netadapt synthesizes them for configurations derived from a spec).
    keep_overhead: an overhead already in the LUT stays (otherwise the smallest seen is kept), so
    entries added for one model never move the prediction of another.
    """
    calibrate = [os.fspath(p) for p in (calibrate or [])]
    if calibrate:
        models = list(models if isinstance(models, (list, tuple)) else [models]) + calibrate
        companions = list(companions or []) + [p for p in calibrate if p not in (companions or [])]
    from tfmobile.bench.litert import run_worker

    path = None if isinstance(lut, dict) else lut
    table = load_lut(lut)
    device = _device(backend, threads)
    dkey = device_key(device)
    dev = table["devices"].setdefault(dkey, {"device": device, "overhead_ms": None, "entries": {}})
    entries = dev["entries"]
    todo = {}   # key -> (op name, function returning the one-op model bytes)
    seen = set()
    sources = []
    n_layers = 0
    for m in (models if isinstance(models, (list, tuple)) else [models]):
        layers_, data = lut_layers(m)
        sources.append(flatbuffer.load_model(data))
        n_layers += len(layers_)
        for layer in layers_:
            k = layer["key"]
            seen.add(k)
            if (remeasure or k not in entries) and k not in todo:
                todo[k] = (layer["op"], lambda m=sources[-1], i=layer["index"]: graph.op_model(m, i))
    for k, (op, make) in (one_op_models or {}).items():
        seen.add(k)
        if (remeasure or k not in entries) and k not in todo:
            todo[k] = (op, make)
    _log(f"{n_layers} ops in {len(sources)} model(s): {len(todo)} configuration(s) to measure on {dkey}", verbose)
    measured = 0
    keys = list(todo)
    if calibrate and len(keys) > batch:
        raise UserError("calibrate= needs every configuration measured in one batch (raise batch=)")
    comp_paths = [os.fspath(p) for p in (companions or [])]
    comp = [{"path": p, "times_ms": [], "cpu_times_ms": []} for p in comp_paths]
    with tempfile.TemporaryDirectory(prefix="tfmobile_lut_") as tmp:
        trivial = os.path.join(tmp, "trivial.tflite")
        with open(trivial, "wb") as f:
            f.write(trivial_model())
        for start in range(0, max(len(keys), 1), batch):
            chunk = keys[start:start + batch]
            paths = [trivial]
            for j, k in enumerate(chunk):
                p = os.path.join(tmp, f"op{start + j}.tflite")
                with open(p, "wb") as f:
                    f.write(todo[k][1]())
                paths.append(p)
            if not chunk and dev["overhead_ms"] is not None and not comp_paths:
                break
            ev = evict_bytes or 0
            out = run_worker(paths + comp_paths, threads=threads, runs=runs, warmup=warmup, rounds=rounds, cpus=cpus,
                             evict_first=len(paths) if ev else 0, evict_bytes=ev)
            res = out["results"]
            if comp_paths:
                for cr, r in zip(comp, res[len(paths):]):
                    if "error" in r:
                        raise UserError(f"LiteRT cannot run {cr['path']}: {r['error']}")
                    cr["times_ms"].extend(r["times_ms"])
                    cr["cpu_times_ms"].extend(r["cpu_times_ms"])
                res = res[:len(paths)]
            now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            if "error" in res[0]:
                raise UserError(f"cannot time the overhead model: {res[0]['error']}")
            ov, ovc = median(res[0]["times_ms"]), median(res[0]["cpu_times_ms"])
            _update_overhead(dev, ov, ovc, keep_overhead)
            for k, r in zip(chunk, res[1:]):
                if "error" in r:
                    raise UserError(f"LiteRT cannot run the one-op model of {todo[k][0]}: {r['error']}")
                entries[k] = {"op": todo[k][0], "ms": median(r["times_ms"]), "min_ms": min(r["times_ms"]),
                              "cpu_ms": median(r["cpu_times_ms"]), "runs": len(r["times_ms"]), "measured": now}
                measured += 1
            if path:  # keep what is measured even if a later batch fails
                save_lut(table, path)
            _log(f"measured {measured}/{len(keys)}", verbose)
    if calibrate:
        ratios = {"cpu": [], "wall": []}
        for cr in comp:
            if cr["path"] not in calibrate:
                continue
            for clock, field, cfield, ovk in (("cpu", "cpu_ms", "cpu_times_ms", "overhead_cpu_ms"),
                                              ("wall", "ms", "times_ms", "overhead_ms")):
                c = dev[ovk]
                layers_, _ = lut_layers(cr["path"])
                s = sum(max(entries[ly["key"]][field] - c, 0.0) for ly in layers_)
                ratios[clock].append((median(cr[cfield]) - c) / s)
        dev["scale_cpu"] = median(ratios["cpu"])
        dev["scale_wall"] = median(ratios["wall"])
        dev["scale_models"] = [os.path.basename(p) for p in calibrate]
        dev["scale_ratios"] = {k: [round(x, 4) for x in v] for k, v in ratios.items()}
        _log(f"context scale cpu {dev['scale_cpu']:.3f} wall {dev['scale_wall']:.3f} from {len(calibrate)} "
             f"calibration model(s)", verbose)
    dev["updated"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if path:
        save_lut(table, path)
    return {"device_key": dkey, "layers": n_layers, "models": len(sources), "measured": measured,
            "distinct_configs": len(seen), "reused": len(seen) - len(todo),
            "entries": len(entries), "overhead_ms": dev["overhead_ms"], "lut": path,
            "scale_cpu": dev.get("scale_cpu"), "scale_wall": dev.get("scale_wall"),
            **({"companions": comp} if comp_paths else {})}


# ---------------------------------------------------------------------------------------------------
# predict

def latency_clock(backend, threads):
    """The clock a latency is read on: the invoking thread's CPU time for LiteRT at 1 thread (compute
    without the waits for a CPU another process holds), the wall clock otherwise."""
    return "cpu" if backend == "litert" and threads == 1 else "wall"


def check_device(lut, backend, threads, source="LUT"):
    """A LUT measured on another device / backend / thread count would rank wrongly: refuse it
    (UserError). An empty LUT, or one that holds this device, passes."""
    table = load_lut(lut)
    mine = device_key(_device(backend, threads))
    if table["devices"] and mine not in table["devices"]:
        theirs = "; ".join(sorted(table["devices"]))[:300]
        raise UserError(f"{source} lacks this device: it was measured on another device or thread count "
                        f"({theirs}), not this one ({mine}); device, backend and thread count must match "
                        f"(use a LUT of this device)")
    return table


def predict_detail(model, lut, backend="litert", threads=1, measure_missing=False, verbose=False, clock=None):
    """Per-op breakdown and total: {"predicted_ms", "overhead_ms", "layers": [...], "missing": n}.

    Ops whose configuration is not in the LUT are measured first when ``measure_missing`` (and the
    LUT saved, when it is a path); otherwise UserError names how many are missing.
    clock: "wall" (median wall-clock of each one-op model) or "cpu" (median thread CPU time: the
    compute time without waiting for a CPU held by other processes; valid for 1 thread, where
    XNNPACK runs in the calling thread). Default: "cpu" at 1 thread, else "wall".
    """
    layers_, data = lut_layers(model)
    return predict_ops(layers_, lut, backend, threads, clock=clock,
                       measure=(lambda table, missing: build_lut([data], table, backend, threads, verbose=verbose))
                       if measure_missing else None)


def predict_ops(layers_, lut, backend="litert", threads=1, clock=None, measure=None):
    """The prediction of ``predict_detail`` for ops already keyed (dicts with key, op, name, index, macs, config).

    Shared by predict_detail (ops read from a .tflite) and tfmobile.netadapt.resource (ops derived from a
    spec). measure: None (missing entries are a UserError) or ``measure(table, missing_layers)``, which adds
    them to the LUT dict ``table``; the LUT is saved afterwards when ``lut`` is a path.
    """
    clock = clock or latency_clock(backend, threads)
    if clock not in ("wall", "cpu"):
        raise UserError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    if clock == "cpu" and threads != 1:
        raise UserError("clock='cpu' predicts 1-thread latency only (other threads' CPU time is not latency)")
    if not isinstance(lut, dict) and measure is None and not os.path.isfile(os.fspath(lut)):
        raise UserError(f"LUT file not found: {os.fspath(lut)}")
    table = load_lut(lut)
    device = _device(backend, threads)
    dkey = device_key(device)
    dev = table["devices"].get(dkey)
    missing = [ly for ly in layers_ if dev is None or ly["key"] not in dev["entries"]]
    if missing or dev is None or dev.get("overhead_ms") is None:
        if measure is None:
            check_device(table, backend, threads)
            raise UserError(f"LUT lacks {len(missing)} of {len(layers_)} op configuration(s) for device "
                            f"'{dkey}': run `python -m pipelines.lut build` on this model first "
                            "(or predict with --measure_missing)")
        measure(table, missing)
        if not isinstance(lut, dict):
            save_lut(table, lut)
        dev = table["devices"][dkey]
    field = "ms" if clock == "wall" else "cpu_ms"
    c = dev["overhead_ms"] if clock == "wall" else dev.get("overhead_cpu_ms")
    if c is None or any(field not in dev["entries"][ly["key"]] for ly in layers_):
        raise UserError(f"LUT entries for '{dkey}' have no {clock}-clock times: rebuild with --remeasure")
    scale = dev.get("scale_cpu" if clock == "cpu" else "scale_wall") or 1.0
    rows = []
    total = c
    for ly in layers_:
        e = dev["entries"][ly["key"]]
        t = scale * max(e[field] - c, 0.0)
        total += t
        rows.append({"index": ly["index"], "op": ly["op"], "name": ly["name"], "ms": t, "macs": ly["macs"],
                     "output_shape": ly["config"]["outputs"][0]["shape"] if ly["config"]["outputs"] else None})
    return {"predicted_ms": total, "overhead_ms": c, "clock": clock, "scale": scale, "num_ops": len(layers_),
            "device_key": dkey,
            "layers": rows, "measured_missing": len(missing)}


def predict(model, lut, backend="litert", threads=1, measure_missing=False, clock=None):
    """Predicted whole-model latency (ms) on the LUT's device: sum over executed ops + fixed overhead."""
    return predict_detail(model, lut, backend, threads, measure_missing, clock=clock)["predicted_ms"]
