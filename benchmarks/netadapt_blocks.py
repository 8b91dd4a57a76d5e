"""NetAdapt building blocks: latency of a spec from the LUT without converting it, and how fast that is.

    python benchmarks/netadapt_blocks.py [--only mbv2,mbv1] [--runs 60] [--model_runs 100] [--json]
    python benchmarks/netadapt_blocks.py --lut /tmp/lut.json --repeat 6 --json   # stable from run to run?

For the models of benchmarks/lut_accuracy.py (same flags, same LUT file, same calibration models for the
context scale): builds the LUT from the converted models and times the whole models in the same worker
and interleaved rounds (bench.lut.build_lut companions), then compares per model
  - spec:       tfmobile.netadapt.resource(spec, "latency") (ops and keys derived from the spec; keys the
                LUT lacks are timed on synthesized one-op models: a converted random-init Dense has no bias,
                the spec's (a trained model's) has one),
  - conversion: bench.lut.predict(converted .tflite),
  - measured:   the median of the whole-model times,
with the mean absolute percentage error of each prediction against the measurement, and the time of a
warm-LUT spec prediction (median over --timing_reps calls; a LUT dict in memory) next to the time of
building the Keras model (what a build-based estimate would pay before converting).
"""
import os
import statistics
import sys
import time

import tfmobile  # noqa: F401
from absl import flags

import lut_accuracy  # the model list and LUT flags (benchmarks/ is on sys.path when run as a script)
from pipelines import _cli
from tfmobile.errors import UserError

flags.DEFINE_integer("timing_reps", 20, "warm-LUT spec predictions timed per model")
flags.DEFINE_integer("repeat", 1, "runs, each with a fresh LUT (LUT.1, LUT.2, ...; emptied first): is the error "
                     "stable from run to run? Adds a per-model summary (median, range, runs within --within_pct).")
flags.DEFINE_float("within_pct", 5.0, "the error bound the --repeat summary counts runs within.")
FLAGS = flags.FLAGS


def _mape(rows, key):
    return round(sum(abs(r[key]) for r in rows) / len(rows), 2)


def main(argv):
    from tfmobile.bench import zoo

    if FLAGS.repeat < 1:
        raise UserError(f"--repeat must be >= 1, got {FLAGS.repeat}")
    work = FLAGS.work_dir or zoo.DEFAULT_WORK_DIR
    lut_path = FLAGS.lut or os.path.join(work, f"lut_t{FLAGS.threads}.json")
    if FLAGS.repeat == 1:
        return one_run(work, lut_path)
    runs = []
    for k in range(1, FLAGS.repeat + 1):
        fresh = f"{lut_path}.{k}"
        if os.path.exists(fresh):
            os.remove(fresh)
        runs.append(one_run(work, fresh))
        sys.stderr.write(f"[netadapt_blocks] run {k}/{FLAGS.repeat}: MAPE {runs[-1]['mape_spec_pct']} %\n")
    return {"repeat": FLAGS.repeat, "within_pct": FLAGS.within_pct, "summary": repeat_summary(runs, FLAGS.within_pct),
            "mape_spec_pct": [r["mape_spec_pct"] for r in runs], "runs": runs}


def repeat_summary(runs, within_pct):
    """Per model over the runs: its spec errors, their median and range, and how many runs were within the bound."""
    out = []
    for row in runs[0]["rows"]:
        errors = [next(r["spec_error_pct"] for r in run["rows"] if r["model"] == row["model"]) for run in runs]
        out.append({"model": row["model"], "spec_error_pct": errors, "median_pct": round(statistics.median(errors), 2),
                    "min_pct": min(errors), "max_pct": max(errors),
                    "runs_within": sum(abs(e) <= within_pct for e in errors)})
    return out


def one_run(work, lut_path):
    from tfmobile import models
    from tfmobile.bench import lut as L
    from tfmobile.bench import zoo
    from tfmobile.bench.stats import summarize
    from tfmobile.netadapt.resource import ensure_lut, int8_ops, latency

    chosen = [m for m in lut_accuracy.MODELS if not FLAGS.only or m[0] in FLAGS.only]
    paths = [zoo.zoo_tflite(n, r, a, work_dir=work, **o) for n, r, a, o in chosen]
    cal = [zoo.zoo_tflite(n, r, a, work_dir=work, **o) for n, r, a, o in lut_accuracy.CALIBRATION] \
        if FLAGS.calibrate else None
    built = L.build_lut(paths, lut_path, threads=FLAGS.threads, runs=FLAGS.runs, rounds=FLAGS.rounds,
                        batch=10 ** 6, companions=paths, calibrate=cal)
    table = L.load_lut(lut_path)
    clock = L.latency_clock("litert", FLAGS.threads)
    field = "cpu_times_ms" if clock == "cpu" else "times_ms"
    rows = []
    for (name, res, alpha, opts), path in zip(chosen, paths):
        spec = models.get_spec(name, input_shape=(res, res, 3), alpha=alpha, classes=1000, **opts)
        entries_before = sum(len(d["entries"]) for d in table["devices"].values())
        ensure_lut([spec], table, threads=FLAGS.threads)   # measures what it lacks (synthesized one-op models)
        spec_ms = latency(spec, table, threads=FLAGS.threads, clock=clock)
        synthesized = sum(len(d["entries"]) for d in table["devices"].values()) - entries_before
        times = []
        for _ in range(FLAGS.timing_reps):
            t0 = time.perf_counter()
            latency(spec, table, threads=FLAGS.threads, clock=clock)
            times.append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        int8_ops(spec)
        derive_ms = 1000 * (time.perf_counter() - t0)
        t0 = time.perf_counter()
        models.build(spec)
        keras_ms = 1000 * (time.perf_counter() - t0)
        conv_ms = L.predict(path, table, threads=FLAGS.threads, clock=clock)
        comp = next(x for x in built["companions"] if x["path"] == os.fspath(path))
        measured = summarize(comp[field])["median_ms"]
        rows.append({
            "model": f"{name} {res}px a{alpha}" + "".join(f" {k}" for k in opts),
            "ops": len(int8_ops(spec)["ops"]), "synthesized_entries": synthesized,
            "spec_predicted_ms": round(spec_ms, 4), "conversion_predicted_ms": round(conv_ms, 4),
            "measured_ms": round(measured, 4),
            "spec_error_pct": round(100 * (spec_ms - measured) / measured, 2),
            "conversion_error_pct": round(100 * (conv_ms - measured) / measured, 2),
            "spec_vs_conversion_pct": round(100 * (spec_ms - conv_ms) / conv_ms, 3),
            "warm_prediction_ms": round(statistics.median(times), 3), "derive_ops_ms": round(derive_ms, 3),
            "keras_build_ms": round(keras_ms, 1)})
    L.save_lut(table, lut_path)
    worst = max(r["warm_prediction_ms"] for r in rows)
    return {"backend": "litert", "threads": FLAGS.threads, "clock": clock, "models": len(rows),
            "mape_spec_pct": _mape(rows, "spec_error_pct"), "mape_conversion_pct": _mape(rows, "conversion_error_pct"),
            "max_warm_prediction_ms": worst, "target_warm_prediction_ms": 50.0, "pass_speed": worst <= 50.0,
            "median_keras_build_ms": round(statistics.median(r["keras_build_ms"] for r in rows), 1),
            "rows": rows, "lut": {"path": lut_path, "entries": built["entries"], "scale_cpu": built.get("scale_cpu"),
                                  "scale_wall": built.get("scale_wall")},
            "device": built["device_key"], "loadavg": os.getloadavg()}


COLUMNS = [("model", "model", "{}"), ("ops", "ops", "{}"), ("spec ms", "spec_predicted_ms", "{:.3f}"),
           ("conversion ms", "conversion_predicted_ms", "{:.3f}"), ("measured ms", "measured_ms", "{:.3f}"),
           ("spec err", "spec_error_pct", "{:+.1f}%"), ("conv err", "conversion_error_pct", "{:+.1f}%"),
           ("warm predict ms", "warm_prediction_ms", "{:.2f}"), ("Keras build ms", "keras_build_ms", "{:.0f}")]


def _render(r):
    if "summary" in r:
        lines = [f"| model | median error | range | runs within {r['within_pct']:g} % of {r['repeat']} |",
                 "|---|---|---|---|"]
        lines += [f"| {x['model']} | {x['median_pct']:+.1f} % | {x['min_pct']:+.1f} .. {x['max_pct']:+.1f} | "
                  f"{x['runs_within']} |" for x in r["summary"]]
        return "\n".join(lines + [f"MAPE per run: {r['mape_spec_pct']}"])
    lines = ["| " + " | ".join(c[0] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt.format(x[key]) for _, key, fmt in COLUMNS) + " |" for x in r["rows"]]
    lines.append(f"MAPE spec {r['mape_spec_pct']:.2f}%, conversion {r['mape_conversion_pct']:.2f}%; "
                 f"slowest warm prediction {r['max_warm_prediction_ms']:.2f} ms; device: {r['device']}")
    return "\n".join(lines)


if __name__ == "__main__":
    _cli.run_and_emit(main, _render)
