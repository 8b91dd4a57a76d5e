"""LiteRT backends: the in-process interpreter (in a pinned child process) and LiteRT's Python tool.

``litert``: ai_edge_litert's Interpreter with its default XNNPACK delegate and ``num_threads``, timed
in a child process (``tfmobile.bench._worker``) pinned with ``sched_setaffinity`` to ``threads`` CPUs,
so the parent's TensorFlow threads and imports do not share the measured cores.

``benchmark_litert``: ``python -m ai_edge_litert.tools.benchmark_litert_model`` (the CompiledModel
API) run for real; its ``--result_json`` is parsed into the common schema.
"""
import json
import os
import subprocess
import sys
import tempfile

from tfmobile.bench.stats import summarize
from tfmobile.errors import UserError

WORKER_TIMEOUT_S = 1800


def default_cpus(threads):
    """The last ``threads`` CPUs this process may run on (CPU 0 takes most interrupts)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[-threads:] if threads <= len(cpus) else cpus


def run_worker(paths, threads=1, runs=50, warmup=10, rounds=1, cpus=None, timeout=WORKER_TIMEOUT_S,
               evict_first=0, evict_bytes=0):
    """Time each .tflite in ``paths`` in one pinned child process; list of per-model raw results."""
    if cpus is None:
        cpus = default_cpus(threads)
    job = {"models": [os.fspath(p) for p in paths], "threads": int(threads), "runs": int(runs),
           "warmup": int(warmup), "rounds": int(rounds), "cpus": cpus}
    if evict_first and evict_bytes:
        job.update(evict_first=int(evict_first), evict_bytes=int(evict_bytes))
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        proc = subprocess.run([sys.executable, "-m", "tfmobile.bench._worker"], input=json.dumps(job),
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise UserError(f"LiteRT benchmark worker timed out after {timeout} s") from None
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        why = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        raise UserError(f"LiteRT benchmark worker failed ({why}): {tail[-1] if tail else 'no output'}")
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise UserError("LiteRT benchmark worker printed no result") from None
    return out


def measure_litert(path, threads=1, runs=50, warmup=10, cpus=None):
    """Common-schema result of one model on the ``litert`` backend."""
    out = run_worker([path], threads=threads, runs=runs, warmup=warmup, cpus=cpus)
    r = out["results"][0]
    if "error" in r:
        raise UserError(f"LiteRT cannot run {path}: {r['error']}")
    res = {"backend": "litert", "threads": threads, "runs": len(r["times_ms"]), "warmup": warmup,
           "init_ms": r["init_ms"]}
    res.update(summarize(r["times_ms"]))
    res["first_ms"] = r["warmup_ms"][0] if r["warmup_ms"] else r["times_ms"][0]
    res["cpus"] = out.get("cpus")
    res["delegate"] = "XNNPACK (LiteRT default)"
    if threads == 1 and r.get("cpu_times_ms"):
        c = summarize(r["cpu_times_ms"])
        res["cpu_median_ms"], res["cpu_mean_ms"], res["cpu_min_ms"] = c["median_ms"], c["mean_ms"], c["min_ms"]
        # one thread: wall = CPU time + time spent waiting for a CPU that other processes hold
        if res["median_ms"] > 1.2 * c["median_ms"] and res["median_ms"] - c["median_ms"] > 0.05:
            res.setdefault("warnings", []).append(
                f"median wall-clock {res['median_ms']:.3f} ms vs CPU time {c['median_ms']:.3f} ms: other processes "
                "compete for this CPU, the wall-clock latency includes waiting; cpu_median_ms is the compute time")
    return res


def measure_benchmark_litert(path, threads=1, runs=50, warmup=10, cpus=None, timeout=WORKER_TIMEOUT_S):
    """Run LiteRT's own Python benchmark tool on ``path`` and parse its --result_json."""
    if cpus is None:
        cpus = default_cpus(threads)
    with tempfile.TemporaryDirectory(prefix="tfmobile_bl_") as tmp:
        result_json = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model", "--model", os.fspath(path),
               "--num_threads", str(threads), "--num_runs", str(runs), "--warmup_runs", str(warmup),
               "--result_json", result_json]
        pre = (lambda: os.sched_setaffinity(0, set(cpus))) if cpus and hasattr(os, "sched_setaffinity") else None
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=pre)
        except subprocess.TimeoutExpired:
            raise UserError(f"benchmark_litert_model timed out after {timeout} s") from None
        if proc.returncode != 0 or not os.path.exists(result_json):
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            errs = [ln for ln in lines if "error" in ln.lower()]
            raise UserError(f"benchmark_litert_model failed on {path}: "
                            f"{(errs or lines or ['no output'])[-1].strip()}")
        with open(result_json) as f:
            raw = json.load(f)
    res = parse_benchmark_litert_json(raw)
    res["cpus"] = cpus
    res["stdout_summary"] = [ln for ln in proc.stdout.splitlines() if ":" in ln and "ms" in ln]
    return res


def parse_benchmark_litert_json(raw):
    """Map benchmark_litert_model's result JSON onto the common result schema."""
    try:
        lat = raw["latency"]
        res = {"backend": "benchmark_litert", "threads": raw.get("num_threads"), "runs": lat["num_runs"],
               "warmup": lat.get("num_warmup_runs"), "init_ms": lat["init_ms"], "mean_ms": lat["avg_ms"],
               "median_ms": lat["median_ms"], "p90_ms": None, "std_ms": lat["std_ms"], "min_ms": lat["min_ms"],
               "max_ms": lat["max_ms"], "p5_ms": lat.get("p5_ms"), "p95_ms": lat.get("p95_ms"),
               "first_ms": lat.get("warmup_first_ms")}
    except (KeyError, TypeError) as e:
        raise UserError(f"unexpected benchmark_litert_model result JSON (missing {e})") from None
    res["cv"] = res["std_ms"] / res["mean_ms"] if res["mean_ms"] else 0.0
    res["accelerators"] = raw.get("accelerators")
    res["fully_accelerated"] = raw.get("fully_accelerated")
    res["notes"] = ["p90 is not reported by benchmark_litert_model (it reports p5/median/p95); "
                    "its values are rounded to 0.01 ms"]
    return res
