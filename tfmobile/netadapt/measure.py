"""Measuring the resource NetAdapt drives down, on one device, one model at a time.

Latency is measured exactly as ``pipelines.benchmark`` does (``tfmobile.bench.measure``: the int8
.tflite, the chosen backend and threads); at 1 thread on the litert backend the value used is the
median of the invoking thread's CPU time (the clock the LUT predicts with: compute time without
the waits for a CPU that other processes hold), at more threads the wall-clock median. Each
measurement keeps its spread (p90, std, cv, min, and the wall-clock median beside the CPU one).

The other resources are read from the int8 model: ``flash`` is the .tflite's size, ``peak_sram``
the TFLite-Micro arena measured by allocating the model in TFLM (``convert.measure_arena``),
``macs`` / ``params`` the exact counts of ``tfmobile.analysis``.

With Ray, one actor (``RayMeasurer``) does every measurement, so measurements never overlap and
always run on the same machine.
"""
import os
import tempfile

from tfmobile.bench.lut import latency_clock
from tfmobile.errors import UserError
from tfmobile.netadapt.config import COUNTED, KINDS


def measure_tflite(tflite_bytes, kind, settings, spec_json=None):
    """{"value", "kind", ...spread} of one int8 model; ``settings``: ``config.Measurement.bench_settings()``."""
    if kind == "latency":
        from tfmobile import bench

        with tempfile.TemporaryDirectory(prefix="tfmobile_na_measure_") as d:
            path = os.path.join(d, "model.tflite")
            with open(path, "wb") as f:
                f.write(tflite_bytes)
            r = bench.measure(path, backend=settings["backend"], threads=settings["threads"],
                              runs=settings["runs"], warmup=settings["warmup"], warn=False,
                              **dict(settings.get("backend_opts") or {}))
        clock = latency_clock(settings["backend"], settings["threads"])
        value = r.get("cpu_median_ms") if clock == "cpu" else r["median_ms"]
        if value is None:
            clock, value = "wall", r["median_ms"]
        keep = ("median_ms", "mean_ms", "p90_ms", "std_ms", "min_ms", "cv", "cpu_median_ms", "cpu_mean_ms",
                "cpu_min_ms", "runs", "backend", "threads", "warnings")
        return {"kind": kind, "value": float(value), "clock": clock, **{k: r.get(k) for k in keep}}
    if kind == "flash":
        return {"kind": kind, "value": len(tflite_bytes)}
    if kind == "peak_sram":
        from tfmobile import convert

        return {"kind": kind, "value": int(convert.measure_arena(tflite_bytes)["arena_bytes"])}
    if kind in COUNTED:
        from tfmobile import analysis
        from tfmobile.models import ModelSpec

        if spec_json is None:
            raise ValueError("macs / params are counted on the spec")
        return {"kind": kind, "value": int(getattr(analysis.profile(ModelSpec.from_json(spec_json)), kind))}
    raise UserError(f"unknown resource {kind!r}; one of {', '.join(KINDS)}")


class LocalMeasurer:
    """Measures in this process (the latency backends time in their own pinned child process)."""

    def __init__(self, settings):
        self.settings = settings

    def measure(self, tflite_bytes, kind, spec_json=None):
        return measure_tflite(tflite_bytes, kind, self.settings, spec_json)

    def measure_many(self, models, rounds):
        """Latency of several models interleaved: ``rounds`` rounds, each model in turn per round."""
        return interleaved(models, self.settings, rounds)


def interleaved(models, settings, rounds):
    """{name: latency result} for {name: tflite bytes}, measured in turns so load drifts hit all alike.

    litert: one pinned worker runs every model, ``runs // rounds`` invokes each per round (the LUT's
    method); other backends: ``rounds`` passes over the models, one ``bench.measure`` each with
    ``runs // rounds`` runs, and the median of the per-pass medians.
    """
    from tfmobile.bench.stats import summarize

    names = list(models)
    clock = latency_clock(settings["backend"], settings["threads"])
    with tempfile.TemporaryDirectory(prefix="tfmobile_na_inter_") as d:
        paths = []
        for i, n in enumerate(names):
            paths.append(os.path.join(d, f"m{i}.tflite"))
            with open(paths[-1], "wb") as f:
                f.write(models[n])
        out = {}
        if settings["backend"] == "litert":
            from tfmobile.bench.litert import run_worker

            res = run_worker(paths, threads=settings["threads"], runs=settings["runs"],
                             warmup=settings["warmup"], rounds=rounds)["results"]
            for n, r in zip(names, res):
                if "error" in r:
                    raise UserError(f"LiteRT cannot run {n}: {r['error']}")
                wall = summarize(r["times_ms"])
                row = {"kind": "latency", "clock": clock, "runs": len(r["times_ms"]), "rounds": rounds,
                       "backend": "litert", "threads": settings["threads"], **wall}
                if clock == "cpu":
                    cpu = summarize(r["cpu_times_ms"])
                    row.update(cpu_median_ms=cpu["median_ms"], cpu_mean_ms=cpu["mean_ms"], cpu_min_ms=cpu["min_ms"],
                               cpu_std_ms=cpu["std_ms"], cpu_p90_ms=cpu["p90_ms"], cpu_cv=cpu["cv"])
                row["value"] = row["cpu_median_ms"] if clock == "cpu" else row["median_ms"]
                out[n] = row
            return out
        per = {n: [] for n in names}
        sub = dict(settings, runs=max(1, settings["runs"] // rounds))
        for _ in range(rounds):
            for n, p in zip(names, paths):
                with open(p, "rb") as f:
                    per[n].append(measure_tflite(f.read(), "latency", sub))
        for n in names:
            medians = sorted(r["value"] for r in per[n])
            out[n] = {"kind": "latency", "clock": per[n][0]["clock"], "rounds": rounds,
                      "value": medians[len(medians) // 2], "pass_values": medians,
                      "backend": settings["backend"], "threads": settings["threads"]}
        return out


def cv_of(result):
    """A latency result's spread on its own clock (std / mean of its runs, or of its passes' medians on the
    backends timed pass by pass); None when it has none."""
    if result.get("clock") == "cpu" and result.get("cpu_cv") is not None:
        return result["cpu_cv"]
    if result.get("cv") is not None:
        return result["cv"]
    values = result.get("pass_values") or []
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return std / mean if mean > 0 else 0.0


class RayMeasurer:
    """One Ray actor that does every measurement (the measuring device is one machine)."""

    def __init__(self, ray, settings):
        # num_cpus=0: it must not hold a task slot for the whole run; the loop never measures while
        # proposals run, so measurements still do not overlap with other work of this run.
        actor_cls = ray.remote(num_cpus=0)(LocalMeasurer)
        self.ray = ray
        self.actor = actor_cls.remote(settings)

    def measure(self, tflite_bytes, kind, spec_json=None):
        return self.ray.get(self.actor.measure.remote(tflite_bytes, kind, spec_json))

    def measure_many(self, models, rounds):
        return self.ray.get(self.actor.measure_many.remote(models, rounds))
