"""Latency measurement: backends with one result schema, and the per-layer latency lookup table.

    from tfmobile import bench
    r = bench.measure("tflite_models/mbv2.tflite", backend="litert", threads=1, runs=50, warmup=10)
    r["median_ms"], r["cv"], r["warnings"]

    lut = bench.load_lut("lut.json")
    bench.build_lut(["a.tflite", "b.tflite"], "lut.json")      # measures every new op config
    bench.predict(model_or_spec_or_tflite, "lut.json")         # ms = sum over ops + fixed overhead

Backends (``measure(backend=...)``):
  litert            ai_edge_litert Interpreter + XNNPACK, child process pinned to ``threads`` CPUs
  benchmark_litert  LiteRT's Python tool ``ai_edge_litert.tools.benchmark_litert_model`` (CompiledModel)
  benchmark_model   the TFLite C++ benchmark_model binary (``binary=`` or $TFMOBILE_BENCHMARK_MODEL)
  android           adb to a device (``serial=``): our app (``mode="app"``) or a pushed benchmark_model

Every result has backend, threads, runs, init_ms, mean_ms, median_ms, p90_ms, std_ms, min_ms, cv (a
value the tool does not report is null, with a note), plus model_bytes, ops, num_ops, device, warnings,
and ``clock`` / ``clock_median_ms``: the median on the clock the latency LUT predicts ("cpu" for litert
at 1 thread, where it equals ``cpu_median_ms``; "wall" otherwise, equal to ``median_ms``).
This module imports no TensorFlow (the LUT's ``predict`` of a Keras model converts it, and imports it
then).
"""
import collections
import os
import platform
import sys

from tfmobile.errors import UserError

BACKENDS = ("litert", "benchmark_litert", "benchmark_model", "android")


def cpu_model():
    """The CPU's model string (``/proc/cpuinfo`` model name, else platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def runtime_version():
    try:
        from importlib.metadata import version
        return "ai-edge-litert " + version("ai-edge-litert")
    except Exception:
        return "ai-edge-litert unknown"


def host_device(backend="litert", threads=1):
    """Description of the host as a measuring device (also the LUT's device key fields)."""
    return {"cpu": cpu_model(), "machine": platform.machine(), "logical_cpus": os.cpu_count(),
            "threads": int(threads), "backend": backend, "runtime": runtime_version()}


def model_facts(path):
    """Size and op list of a .tflite (UserError for a missing or corrupt file)."""
    from tfmobile.convert import flatbuffer   # not bench.graph: its op tables import TensorFlow (5 s)

    data = flatbuffer.read_tflite(path)
    names = flatbuffer.op_names(data)
    return {"model": os.fspath(path), "model_bytes": len(data), "num_ops": len(names),
            "ops": dict(collections.Counter(names))}


def _check_counts(threads, runs, warmup):
    for name, v, lo in (("threads", threads, 1), ("runs", runs, 1), ("warmup", warmup, 0)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise UserError(f"{name} must be an integer >= {lo}, got {v!r}")


def check_cpus(cpus):
    """UserError unless ``cpus`` (CPU ids to pin to) is a non-empty list of CPUs this process may use."""
    if cpus is None:
        return None
    if not isinstance(cpus, (list, tuple, set)) or not cpus or \
            not all(isinstance(c, int) and not isinstance(c, bool) for c in cpus):
        raise UserError(f"cpus must be a non-empty list of CPU ids, got {cpus!r}")
    if hasattr(os, "sched_getaffinity"):
        allowed = os.sched_getaffinity(0)
        bad = sorted(set(cpus) - allowed)
        if bad:
            raise UserError(f"cpus {','.join(map(str, cpus))}: CPU {','.join(map(str, bad))} is not available "
                            f"to this process (available: {','.join(map(str, sorted(allowed)))})")
    return list(cpus)


def measure(tflite_path, backend="litert", threads=1, runs=50, warmup=10, warn=True, **backend_opts):
    """Benchmark one .tflite on ``backend``; the common result dict (see module docstring).

    backend_opts: ``cpus`` (list of CPU ids to pin to; litert, benchmark_litert, benchmark_model),
    ``binary`` and ``op_profiling`` (benchmark_model), and for ``android``: ``serial``, ``mode``
    ("app" | "binary"), ``binary``, ``delegate``, ``adb``, ``timeout``, ``apk``.
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    _check_counts(threads, runs, warmup)
    check_cpus(backend_opts.get("cpus"))
    facts = model_facts(tflite_path)
    if backend == "litert":
        from tfmobile.bench.litert import measure_litert
        res = measure_litert(tflite_path, threads, runs, warmup, cpus=backend_opts.pop("cpus", None))
        device = host_device("litert", threads)
    elif backend == "benchmark_litert":
        from tfmobile.bench.litert import measure_benchmark_litert
        res = measure_benchmark_litert(tflite_path, threads, runs, warmup, cpus=backend_opts.pop("cpus", None))
        device = host_device("benchmark_litert", threads)
    elif backend == "benchmark_model":
        from tfmobile.bench.benchmark_model import measure_benchmark_model
        res = measure_benchmark_model(tflite_path, threads=threads, runs=runs, warmup=warmup, **backend_opts)
        device = host_device("benchmark_model", threads)
        backend_opts = {}
    else:
        from tfmobile.bench.android import measure_android
        res = measure_android(tflite_path, threads=threads, runs=runs, warmup=warmup, **backend_opts)
        device = res.pop("device", None) or {"backend": "android"}
        backend_opts = {}
    if backend_opts:
        raise UserError(f"backend {backend} takes no option(s) {', '.join(sorted(backend_opts))}")
    res.setdefault("device", device)
    res.update(facts)
    res["backend"] = backend
    res.update(clock_median(res, backend, threads))
    warnings_ = list(res.get("warnings", []))
    from tfmobile.bench.stats import cv_warning
    w = cv_warning(res)
    if w:
        warnings_.append(w)
    if warn:
        for w in warnings_:
            sys.stderr.write(f"warning: {w}\n")
        sys.stderr.flush()
    res["warnings"] = warnings_
    return res


def clock_median(res, backend, threads):
    """{"clock", "clock_median_ms"}: the median on the clock the latency LUT predicts for this backend and
    thread count (``lut.latency_clock``: the invoking thread's CPU time for LiteRT at 1 thread, else the
    wall clock), so that ``pipelines.lut predict``'s ``predicted_ms`` (same ``clock``) compares like with
    like."""
    from tfmobile.bench.lut import latency_clock

    clock = latency_clock(backend, threads)
    return {"clock": clock, "clock_median_ms": res.get("cpu_median_ms") if clock == "cpu" else res.get("median_ms")}


def __getattr__(name):  # lazy LUT API: keeps ``import tfmobile.bench`` free of heavy imports
    if name in ("build_lut", "predict", "predict_detail", "load_lut", "save_lut", "lut_layers"):
        from tfmobile.bench import lut
        return getattr(lut, name)
    raise AttributeError(name)
