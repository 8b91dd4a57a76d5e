"""LUT accuracy: predicted (sum of per-op LUT entries + overhead) vs measured whole-model latency.

    python benchmarks/lut_accuracy.py [--threads 1] [--runs 60] [--lut PATH] [--fresh] [--json]

For each zoo model below (several families, widths and resolutions; int8, random weights): convert it,
add its op configurations to the LUT (one-op models cut from the converted graph, litert backend,
pinned child process), measure the whole models in the same worker and interleaved rounds as the one-op
models (``--together``, default; the older separate second worker is kept as ``measured_separate_*``),
measure the LUT's context scale on the CALIBRATION models (disjoint from MODELS) and compare. Prints one
JSON object with per-model predicted / measured / error and the mean absolute percentage error (MAPE).
"""
import os
import time

import tfmobile  # noqa: F401
from absl import flags

from pipelines import _cli
from tfmobile.errors import UserError

MODELS = [  # name, resolution, alpha, options
    ("mbv1", 128, 0.25, {}),
    ("mbv1", 160, 0.5, {}),
    ("mbv2", 96, 0.35, {}),
    ("mbv2", 128, 0.5, {}),
    ("mbv2", 160, 1.0, {}),
    ("mbv3_small", 128, 0.75, {}),
    ("mbv3_small", 160, 1.0, {}),
    ("mbv3_large", 128, 0.5, {}),
    ("mbv3_large", 96, 1.0, {"minimalistic": True}),
    ("shufflenet_v1", 128, 0.5, {}),
    ("shufflenet_v2", 128, 1.0, {}),
    ("squeezenet1_0", 128, 1.0, {}),
    ("squeezenet1_1", 160, 1.0, {}),
]

# Calibration models for the LUT's context scale (tfmobile.bench.lut.build_lut(calibrate=)): the same
# families at other resolutions/widths, disjoint from MODELS, so the scale is not fitted on the models
# it is evaluated on.
CALIBRATION = [
    ("mbv1", 96, 0.75, {}),
    ("mbv2", 112, 0.75, {}),
    ("mbv3_small", 96, 0.5, {}),
    ("mbv3_large", 112, 0.75, {}),
    ("shufflenet_v1", 96, 1.0, {}),
    ("shufflenet_v2", 112, 0.5, {}),
    ("squeezenet1_1", 112, 1.0, {}),
]

flags.DEFINE_integer("threads", 1, "interpreter threads")
flags.DEFINE_integer("runs", 60, "timed invokes per one-op model (LUT build)")
flags.DEFINE_integer("model_runs", 100, "timed invokes per whole model")
flags.DEFINE_integer("rounds", 10, "interleaved rounds for the whole-model measurement")
flags.DEFINE_string("lut", None, "LUT JSON (default: <work_dir>/lut.json)")
flags.DEFINE_string("work_dir", None, "cache of converted models (default /tmp/tfmobile_bench)")
flags.DEFINE_bool("fresh", False, "start from an empty LUT (measure every configuration now)")
flags.DEFINE_list("only", None, "subset of model names")
flags.DEFINE_bool("json", False, "print one JSON object")
flags.DEFINE_bool("calibrate", True, "measure the LUT's context scale on the CALIBRATION models (else scale 1)")
flags.DEFINE_integer("evict_kb", 0, "overwrite this many KiB before every one-op invoke (cold L1/L2); 0: off")
flags.DEFINE_bool("together", True, "time the whole models in the same worker and interleaved rounds as the "
                  "one-op models (same machine state); the separate later measurement is kept as *_separate_*")
flags.DEFINE_string("markdown_from", None, "print the docs table from a saved --json output and exit")
FLAGS = flags.FLAGS


def markdown(r):
    lines = ["| model | ops | CPU-time: predicted ms | measured ms | error | wall-clock: predicted ms | measured ms "
             "(cv) | error |", "|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['model']} | {row['ops']} | {row.get('predicted_ms', float('nan')):.3f} | "
                     f"{row.get('measured_ms', float('nan')):.3f} | {row.get('error_pct', float('nan')):+.1f}% | "
                     f"{row['predicted_wall_ms']:.3f} | {row['measured_wall_ms']:.3f} "
                     f"({100 * row['measured_wall_cv']:.0f}%) | {row['error_wall_pct']:+.1f}% |")
    lines.append(f"| **MAPE over {r['models']} models** | | | | **{r.get('mape_pct', float('nan')):.2f}%** | | | "
                 f"**{r['mape_wall_pct']:.2f}%** |")
    return "\n".join(lines)


def main(argv):
    if FLAGS.markdown_from:
        import json
        with open(FLAGS.markdown_from) as f:
            print(markdown(json.load(f)))
        return 0
    from tfmobile.bench import lut as L
    from tfmobile.bench import zoo
    from tfmobile.bench.litert import run_worker
    from tfmobile.bench.stats import summarize

    work = FLAGS.work_dir or zoo.DEFAULT_WORK_DIR
    lut_path = FLAGS.lut or os.path.join(work, f"lut_t{FLAGS.threads}.json")
    if FLAGS.fresh and os.path.exists(lut_path):
        os.remove(lut_path)
    chosen = [m for m in MODELS if not FLAGS.only or m[0] in FLAGS.only]
    paths, labels = [], []
    for name, res, alpha, opts in chosen:
        paths.append(zoo.zoo_tflite(name, res, alpha, work_dir=work, **opts))
        labels.append(f"{name} {res}px a{alpha}" + "".join(f" {k}" for k in opts))
    cal = [zoo.zoo_tflite(n, r, a, work_dir=work, **o) for n, r, a, o in CALIBRATION] if FLAGS.calibrate else None
    assert not cal or not set(cal) & set(paths), "calibration and evaluation models must be disjoint"
    t0 = time.time()
    load_before = os.getloadavg()
    built = L.build_lut(paths, lut_path, threads=FLAGS.threads, runs=FLAGS.runs, rounds=FLAGS.rounds,
                        batch=10 ** 6 if FLAGS.together or cal else 200, companions=paths if FLAGS.together else None,
                        calibrate=cal, evict_bytes=1024 * FLAGS.evict_kb)
    build_s = time.time() - t0
    _cli.progress(f"LUT: {built['measured']} measured, {built['reused']} reused, {build_s:.0f} s; "
                  "measuring whole models")
    out = run_worker(paths, threads=FLAGS.threads, runs=FLAGS.model_runs, warmup=5, rounds=FLAGS.rounds)
    rows = []
    for label, path, r in zip(labels, paths, out["results"]):
        if "error" in r:
            raise UserError(f"{label}: {r['error']}")
        sep_s = summarize(r["times_ms"])
        sep_c = summarize(r["cpu_times_ms"]) if FLAGS.threads == 1 else None
        if FLAGS.together:
            comp = next(x for x in built["companions"] if x["path"] == os.fspath(path))
            s = summarize(comp["times_ms"])
            c = summarize(comp["cpu_times_ms"]) if FLAGS.threads == 1 else None
        else:
            s, c = sep_s, sep_c
        dw = L.predict_detail(path, lut_path, threads=FLAGS.threads, clock="wall")
        row = {"model": label, "tflite": os.path.basename(path), "ops": dw["num_ops"],
               "predicted_wall_ms": round(dw["predicted_ms"], 4), "measured_wall_ms": round(s["median_ms"], 4),
               "measured_wall_cv": round(s["cv"], 3),
               "error_wall_pct": round(100 * (dw["predicted_ms"] - s["median_ms"]) / s["median_ms"], 2),
               "measured_separate_wall_ms": round(sep_s["median_ms"], 4),
               "error_separate_wall_pct": round(100 * (dw["predicted_ms"] - sep_s["median_ms"])
                                                / sep_s["median_ms"], 2)}
        if c:
            dc = L.predict_detail(path, lut_path, threads=1, clock="cpu")
            row.update({"predicted_ms": round(dc["predicted_ms"], 4), "measured_ms": round(c["median_ms"], 4),
                        "measured_cv": round(c["cv"], 3),
                        "error_pct": round(100 * (dc["predicted_ms"] - c["median_ms"]) / c["median_ms"], 2),
                        "measured_separate_ms": round(sep_c["median_ms"], 4),
                        "error_separate_pct": round(100 * (dc["predicted_ms"] - sep_c["median_ms"])
                                                    / sep_c["median_ms"], 2)})
        rows.append(row)
    mape_wall = sum(abs(r["error_wall_pct"]) for r in rows) / len(rows)
    res = {"backend": "litert", "threads": FLAGS.threads, "models": len(rows), "mape_wall_pct": round(mape_wall, 2),
           "target_pct": 10.0, "rows": rows,
           "lut": {"path": lut_path, "entries": built["entries"], "measured_now": built["measured"],
                   "reused": built["reused"], "distinct_configs": built["distinct_configs"],
                   "overhead_ms": built["overhead_ms"], "build_s": round(build_s, 1),
                   "scale_cpu": built.get("scale_cpu"), "scale_wall": built.get("scale_wall"),
                   "calibration_models": [os.path.basename(p) for p in cal or []], "evict_kb": FLAGS.evict_kb},
           "device": built["device_key"], "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
           "cpus": out.get("cpus"),
           "clocks": "wall = median wall-clock per invoke; cpu = median thread CPU time per invoke (1 thread: "
                     "XNNPACK runs in the calling thread, so this is the compute time without waiting for a CPU "
                     "that other processes hold)"}
    res["together"] = FLAGS.together
    res["mape_separate_wall_pct"] = round(sum(abs(r["error_separate_wall_pct"]) for r in rows) / len(rows), 2)
    if FLAGS.threads == 1:
        res["mape_pct"] = round(sum(abs(r["error_pct"]) for r in rows) / len(rows), 2)
        res["mape_separate_pct"] = round(sum(abs(r["error_separate_pct"]) for r in rows) / len(rows), 2)
    res["pass_cpu"] = res.get("mape_pct", 1e9) <= 10.0
    res["pass_wall"] = mape_wall <= 10.0
    _cli.emit(res, FLAGS.json, _render)
    return 0


def _render(r):
    return markdown(r) + f"\ndevice: {r['device']}"


if __name__ == "__main__":
    _cli.run(main)
