"""The TFLite ``benchmark_model`` binary: run it (host x86 build, or Android via adb) and parse its output.

Output format (tensorflow/lite/tools/benchmark, README "Profiling model operators" and the tool's
log lines), with or without an ``INFO: `` / logcat prefix::

    count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 p5=1238753 median=1239807 p95=1247415
    Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06
    Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832
    Overall peak memory footprint (MB) via periodic monitoring: 112.5

and with ``--enable_op_profiling=true`` tab-separated "Run Order" / "Summary by node type" tables.
All times in the tool are microseconds; the result schema is milliseconds.
"""
import os
import re
import shutil
import subprocess

from tfmobile.errors import UserError

ENV_BINARY = "TFMOBILE_BENCHMARK_MODEL"

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_TIMINGS = re.compile(r"Inference timings in us: Init: " + _NUM + r", First inference: " + _NUM
                      + r", Warmup \(avg\): " + _NUM + r", Inference \(avg\): " + _NUM)
_COUNT = re.compile(r"(?:^|\s)count=(\d+)((?:\s+\w+=" + _NUM + r")*)")
_KV = re.compile(r"(\w+)=" + _NUM)
_MEM_DELTA = re.compile(r"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                        r"init=" + _NUM + r" overall=" + _NUM)
_MEM_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUM)
_MODEL_SIZE = re.compile(r"The input model file size \(MB\): " + _NUM)
_ROW = re.compile(r"^\s*(\S+)\s+" + _NUM + r"\s+" + _NUM + r"\s+" + _NUM + r"\s+" + _NUM + r"%\s+" + _NUM
                  + r"%\s+" + _NUM + r"\s+(\d+)\s+(.*?)\s*$")
_SUMMARY_ROW = re.compile(r"^\s*(\S+)\s+(\d+)\s+" + _NUM + r"\s+" + _NUM + r"%\s+" + _NUM + r"%\s+" + _NUM
                          + r"\s+(\d+)\s*$")
_SECTION = re.compile(r"=+\s*(.+?)\s*=+\s*$")


def _strip_prefix(line):
    # "INFO: x", "I tflite  : x", "11-23 10:00:00.000  123  123 I tflite  : x"
    m = re.match(r"^(?:.*?\b[VDIWEF] tflite\s*:\s|INFO:\s|WARNING:\s|ERROR:\s)(.*)$", line)
    return m.group(1) if m else line


def parse_output(text):
    """Parse benchmark_model stdout/stderr (or logcat) into milliseconds (UserError if no result)."""
    lines = [_strip_prefix(ln.rstrip("\r")) for ln in text.splitlines()]
    timings_at = None
    for i, ln in enumerate(lines):
        if _TIMINGS.search(ln):
            timings_at = i
    if timings_at is None:
        errors = [ln.strip() for ln in text.splitlines() if re.search(r"error|fail", ln, re.I)]
        raise UserError("benchmark_model printed no 'Inference timings' line"
                        + (f": {errors[-1]}" if errors else ""))
    init_us, first_us, warm_us, avg_us = (float(v) for v in _TIMINGS.search(lines[timings_at]).groups())
    res = {"init_ms": init_us / 1e3, "first_ms": first_us / 1e3, "warmup_avg_ms": warm_us / 1e3,
           "mean_ms": avg_us / 1e3}
    # The regular run's statistics line is the last "count=" line before the timings line.
    stats = None
    for ln in lines[:timings_at]:
        if "Timings (microseconds)" in ln or "Memory (bytes)" in ln:
            continue
        m = _COUNT.search(ln)
        if m and "avg=" in ln:
            stats = (int(m.group(1)), dict((k, float(v)) for k, v in _KV.findall(ln)))
    if stats:
        n, kv = stats
        res["runs"] = n
        for key, name in (("std", "std_ms"), ("min", "min_ms"), ("max", "max_ms"), ("median", "median_ms"),
                          ("p5", "p5_ms"), ("p95", "p95_ms")):
            if key in kv:
                res[name] = kv[key] / 1e3
    res.setdefault("median_ms", None)
    res["p90_ms"] = None
    for ln in lines:
        m = _MEM_DELTA.search(ln)
        if m:
            res["memory_init_mb"], res["memory_overall_mb"] = float(m.group(1)), float(m.group(2))
        m = _MEM_PEAK.search(ln)
        if m:
            res["memory_peak_mb"] = float(m.group(1))
        m = _MODEL_SIZE.search(ln)
        if m:
            res["model_size_mb"] = float(m.group(1))
    if res.get("std_ms") is not None and res["mean_ms"]:
        res["cv"] = res["std_ms"] / res["mean_ms"]
    prof = _parse_profile(lines)
    if prof:
        res.update(prof)
    return res


def _parse_profile(lines):
    """Per-op tables of --enable_op_profiling: the regular runs' Run Order and the node-type summary."""
    regular_from = 0
    for i, ln in enumerate(lines):
        if "Profiling Info for Regular Benchmark Runs" in ln:
            regular_from = i
    section = None
    run_order, summary, nodes = [], [], None
    for ln in lines[regular_from:]:
        m = _SECTION.match(ln.strip())
        if m:
            section = m.group(1)
            if section == "Run Order":
                run_order = []   # keep the last Run Order table (the regular runs, not init)
            continue
        if section == "Run Order":
            r = _ROW.match(ln)
            if r and r.group(1) != "[node":
                run_order.append({"node_type": r.group(1), "start_ms": float(r.group(2)),
                                  "first_ms": float(r.group(3)), "avg_ms": float(r.group(4)),
                                  "percent": float(r.group(5)), "mem_kb": float(r.group(7)),
                                  "times_called": int(r.group(8)), "name": r.group(9).strip("[]")})
        elif section == "Summary by node type":
            r = _SUMMARY_ROW.match(ln)
            if r:
                summary.append({"node_type": r.group(1), "count": int(r.group(2)), "avg_ms": float(r.group(3)),
                                "percent": float(r.group(4)), "times_called": int(r.group(7))})
        m = re.search(r"Number of nodes executed: (\d+)", ln)
        if m:
            nodes = int(m.group(1))
    run_order = [r for r in run_order if r["node_type"] != "AllocateTensors"]
    if not run_order and not summary:
        return None
    return {"op_profile": run_order, "op_summary": summary, "nodes_executed": nodes}


def resolve_binary(binary=None):
    """Path of the benchmark_model binary from ``binary`` or $TFMOBILE_BENCHMARK_MODEL (UserError if none)."""
    binary = binary or os.environ.get(ENV_BINARY)
    if not binary:
        raise UserError(f"no benchmark_model binary: pass --binary or set {ENV_BINARY} "
                        "(build it with bazel: //tensorflow/lite/tools/benchmark:benchmark_model)")
    path = binary if os.path.sep in binary else (shutil.which(binary) or binary)
    if not os.path.isfile(path):
        raise UserError(f"benchmark_model binary not found: {binary}")
    if not os.access(path, os.X_OK):
        raise UserError(f"benchmark_model binary is not executable: {binary}")
    return path


def command(graph, threads=1, runs=50, warmup=10, op_profiling=False, extra=()):
    cmd = [f"--graph={graph}", f"--num_threads={threads}", f"--num_runs={runs}", f"--warmup_runs={warmup}"]
    if op_profiling:
        cmd.append("--enable_op_profiling=true")
    return cmd + list(extra)


def measure_benchmark_model(path, binary=None, threads=1, runs=50, warmup=10, op_profiling=False, cpus=None,
                            timeout=1800, extra=()):
    """Run a host benchmark_model on ``path`` (pinned to ``cpus``) and parse it into the result schema."""
    exe = resolve_binary(binary)
    if cpus is None:
        from tfmobile.bench.litert import default_cpus
        cpus = default_cpus(threads)
    pre = (lambda: os.sched_setaffinity(0, set(cpus))) if cpus and hasattr(os, "sched_setaffinity") else None
    try:
        proc = subprocess.run([exe] + command(path, threads, runs, warmup, op_profiling, extra),
                              capture_output=True, text=True, timeout=timeout, preexec_fn=pre)
    except subprocess.TimeoutExpired:
        raise UserError(f"benchmark_model timed out after {timeout} s") from None
    except OSError as e:
        raise UserError(f"cannot run benchmark_model {exe}: {e.strerror}") from None
    text = proc.stdout + "\n" + proc.stderr
    if proc.returncode != 0:
        errs = [ln.strip() for ln in text.splitlines() if re.search(r"error|fail", ln, re.I)]
        last = errs[-1] if errs else (text.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"benchmark_model exited with status {proc.returncode}: {last}")
    res = parse_output(text)
    res.update({"backend": "benchmark_model", "threads": threads, "warmup": warmup, "binary": exe,
                "cpus": cpus})
    res.setdefault("runs", runs)
    return res
