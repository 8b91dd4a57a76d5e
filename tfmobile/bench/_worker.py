"""Child process that times .tflite models with the LiteRT interpreter (XNNPACK, num_threads).

Run as ``python -m tfmobile.bench._worker`` with a JSON job on stdin; prints one JSON object on
stdout. It imports only ai_edge_litert and numpy (no TensorFlow), dies with its parent
(``tfmobile.process.die_with_parent``, also on ``kill -9`` of the parent), pins itself to the requested CPUs
before loading anything, and times each ``invoke()`` with ``perf_counter_ns``.

Job: ``{"models": [path, ...], "threads": 1, "warmup": 10, "runs": 50, "rounds": 1, "cpus": [1]}``.
With ``rounds > 1`` the models are interleaved: every round runs ``runs // rounds`` invokes of each
model in turn, so slow drifts of a shared machine's load hit all models alike. With
``"evict_first": n, "evict_bytes": b`` a buffer of b bytes is overwritten (untimed) before every
invoke of the first n models (cold L1/L2).
Result: ``{"cpus": [...], "results": [{"path", "init_ms", "warmup_ms", "times_ms", "cpu_times_ms"} |
{"path", "error"}]}``.
"""
import json
import os
import sys
import time


def _load(path, threads):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    t0 = time.perf_counter_ns()
    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        dt = np.dtype(d["dtype"])
        shape = d["shape"]
        if np.issubdtype(dt, np.floating):
            x = rng.uniform(-1, 1, shape).astype(dt)
        elif np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            x = rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dt)
        else:
            x = np.zeros(shape, dt)
        interp.set_tensor(d["index"], x)
    return interp, init_ms


def _time(interp, n, cpu=None, evict=None):
    """Wall-clock ms of ``n`` invokes; with a list ``cpu``, also this thread's CPU ms per invoke.

    With one interpreter thread, XNNPACK runs in the calling thread, so the thread CPU time is the
    compute time without the time spent waiting for a CPU that other processes hold.
    """
    out = []
    invoke = interp.invoke
    clock = time.perf_counter_ns
    tclock = time.thread_time_ns
    for _ in range(n):
        if evict is not None:  # overwrite a buffer larger than L2 first (untimed): cold caches, as in a model
            evict += 1
        c0 = tclock()
        t0 = clock()
        invoke()
        t1 = clock()
        c1 = tclock()
        out.append((t1 - t0) / 1e6)
        if cpu is not None:
            cpu.append((c1 - c0) / 1e6)
    return out


def run(job):
    cpus = job.get("cpus")
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))
    threads = int(job.get("threads", 1))
    warmup = int(job.get("warmup", 10))
    runs = int(job.get("runs", 50))
    rounds = max(1, int(job.get("rounds", 1)))
    results = []
    live = []
    for path in job["models"]:
        try:
            interp, init_ms = _load(path, threads)
        except Exception as e:  # corrupt model, unsupported op, ...
            msg = " ".join(str(e).split()) or type(e).__name__
            results.append({"path": path, "error": msg[:300]})
            live.append(None)
            continue
        results.append({"path": path, "init_ms": init_ms, "warmup_ms": [], "times_ms": [], "cpu_times_ms": []})
        live.append(interp)
    evict_n = int(job.get("evict_first", 0))
    evict_buf = None
    if evict_n and int(job.get("evict_bytes", 0)) > 0:
        import numpy as np
        evict_buf = np.zeros(int(job["evict_bytes"]), np.uint8)

    def timed(k, n, cpu=None):
        try:
            return _time(live[k], n, cpu, evict_buf if k < evict_n else None)
        except Exception as e:  # an op that fails at invoke time: report it, keep timing the others
            msg = " ".join(str(e).split()) or type(e).__name__
            results[k] = {"path": results[k]["path"], "error": msg[:300]}
            live[k] = None
            return []

    for k in range(len(live)):
        if live[k] is not None:
            w = timed(k, warmup)
            if live[k] is not None:
                results[k]["warmup_ms"] = w
    per_round = [runs // rounds + (1 if k < runs % rounds else 0) for k in range(rounds)]
    for n in per_round:
        for k in range(len(live)):
            if live[k] is not None and n:
                cpu = []
                t = timed(k, n, cpu)
                if live[k] is not None:
                    results[k]["times_ms"].extend(t)
                    results[k]["cpu_times_ms"].extend(cpu)
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpus": affinity, "results": results}


def main():
    from tfmobile.process import die_with_parent

    die_with_parent()   # never left spinning on a pinned core when the parent is killed
    job = json.loads(sys.stdin.read())
    out = run(job)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
