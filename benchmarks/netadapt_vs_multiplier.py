"""NetAdapt vs the width multiplier: the issue-13 benchmark (resumable; hours at full size).

    # the full run (an idle machine; full Fashion-MNIST from the Debian package or --data_dir)
    python benchmarks/netadapt_vs_multiplier.py --work_dir /work/runs/na_vs_mult
    # a smoke run at a tiny size (minutes): writes nothing under docs/
    python benchmarks/netadapt_vs_multiplier.py --work_dir /tmp/na_smoke --smoke

Runs, each resumable (started again after a kill, it continues where it stopped):
1. ``--resource latency --target 0.5`` from mbv2 alpha 1.0 at 32x32 trained ``--epochs``, with the
   width-multiplier baselines (``--baselines``, trained with the same total budget: start training +
   long-term fine-tune) exported int8 and measured interleaved with the NetAdapt model (LiteRT,
   1 thread, the CPU-time clock, ``--bench_runs`` runs; each measurement's spread is kept);
2. the same with ``--resource peak_sram --target 0.5`` (TFLM arena measured);
3. the architecture NetAdapt found, trained from scratch with the same budget (the NatGr
   reimplementation found that to beat fine-tuning).
Writes ``--out`` (JSON: start, final, baselines, ratios at equal accuracy / accuracy at equal latency,
per-iteration predicted vs measured, wall and CPU time) and ``--plot`` (accuracy vs measured latency).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfmobile  # noqa: E402,F401
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", None, "where the runs go (required).")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX dir (default: the Debian package, else the subset).")
flags.DEFINE_string("model", "mbv2", "start model.")
flags.DEFINE_float("alpha", 1.0, "start width multiplier.")
flags.DEFINE_integer("resolution", 32, "input resolution.")
flags.DEFINE_integer("epochs", 15, "start training epochs (the baselines get epochs + long_epochs).")
flags.DEFINE_float("target", 0.5, "target, as a fraction of the start's measured value.")
flags.DEFINE_list("baselines", ["0.35", "0.5", "0.75", "1.0"], "width multipliers to compare with.")
flags.DEFINE_list("resources", ["latency", "peak_sram"], "NetAdapt runs to do.")
flags.DEFINE_integer("short_steps", 500, "short-term fine-tune steps per proposal.")
flags.DEFINE_integer("long_epochs", 10, "long-term fine-tune epochs.")
flags.DEFINE_integer("qat_epochs", 1, "QAT epochs (every model).")
flags.DEFINE_string("select", "ratio", "ratio | accuracy.")
flags.DEFINE_integer("workers", 2, "local proposal workers.")
flags.DEFINE_integer("bench_runs", 1000, "timed runs per latency measurement.")
flags.DEFINE_boolean("scratch", True, "also train the found latency architecture from scratch.")
flags.DEFINE_boolean("smoke", False, "tiny settings (mbv1 0.25, 300 subset images, a few steps).")
flags.DEFINE_string("out", "docs/benchmark_data/netadapt_vs_multiplier.json", "result JSON.")
flags.DEFINE_string("plot", "docs/benchmark_data/netadapt_vs_multiplier.png", "plot (the latency run).")


def _config(resource):
    from tfmobile.netadapt.config import LoopConfig

    cfg = LoopConfig.of(model=FLAGS.model, alpha=FLAGS.alpha, resolution=FLAGS.resolution, epochs=FLAGS.epochs,
                     data_dir=FLAGS.data_dir, resource=resource, target=FLAGS.target, select=FLAGS.select,
                     short_steps=FLAGS.short_steps, long_epochs=FLAGS.long_epochs, qat_epochs=FLAGS.qat_epochs,
                     bench_runs=FLAGS.bench_runs, baselines=tuple(float(a) for a in FLAGS.baselines),
                     workers=FLAGS.workers, lut=os.path.join(FLAGS.work_dir, "lut.json"),
                     baselines_dir=os.path.join(FLAGS.work_dir, "baselines"))
    if FLAGS.smoke:
        cfg = cfg.replace(model="mbv1", alpha=0.25, epochs=1, subset=True, limit=300, short_steps=3, short_lr=1e-2,
                          batch_size=32, long_epochs=0, qat_epochs=0, bench_runs=100, bench_warmup=10, tflm=True,
                          target=0.93, baselines=(0.25, 0.5))
    return cfg


def _netadapt(resource):
    from tfmobile.errors import UserError
    from tfmobile.netadapt import loop

    out = os.path.join(FLAGS.work_dir, resource)
    t, status = time.time(), None
    try:
        rep = loop.run(_config(resource), out, resume=os.path.isfile(os.path.join(out, "run.json")))
    except loop.TargetNotMet as e:
        status = str(e)
        with open(os.path.join(out, "report.json")) as f:
            rep = json.load(f)
    except UserError:
        raise
    rep["benchmark_invocation_seconds"] = round(time.time() - t, 1)
    rep["stopped"] = status
    return rep


def _scratch(rep):
    """Train the found architecture from scratch with the baselines' budget; LiteRT int8 test accuracy, and its
    latency measured interleaved with the fine-tuned NetAdapt model and the baselines (cached in scratch/result.json)."""
    from tfmobile import convert, data, evaluation, models, train
    from tfmobile.io import write_bytes, write_json
    from tfmobile.netadapt.final import compare
    from tfmobile.netadapt.measure import LocalMeasurer
    from tfmobile.netadapt.workers import load_splits

    cfg = _config("latency")
    d = os.path.join(FLAGS.work_dir, "scratch")
    if os.path.isfile(os.path.join(d, "result.json")):
        with open(os.path.join(d, "result.json")) as f:
            return json.load(f)
    spec = models.ModelSpec.from_dict(rep["final"]["spec"])
    splits = load_splits(cfg.data_config(spec.input_shape))
    epochs = int(rep["start"]["train_epochs"]) + cfg.final.long_epochs
    t = time.time()
    model, _ = train.fit(models.build(spec), splits, os.path.join(d, "float"), epochs=epochs, batch_size=cfg.fine_tune.batch_size,
                         seed=cfg.fine_tune.seed, resume=True, verbose=2)
    if cfg.final.qat_epochs:
        model, _ = train.fit(model, splits, os.path.join(d, "qat"), epochs=cfg.final.qat_epochs, compression="qat",
                             batch_size=cfg.fine_tune.batch_size, seed=cfg.fine_tune.seed, resume=True, verbose=2)
    tfl = convert.to_tflite(model, "int8", representative_data=data.sample_images(splits.x_train, spec.input_shape))
    write_bytes(os.path.join(d, "scratch_int8.tflite"), tfl)
    acc = evaluation.evaluate_tflite(tfl, splits.x_test, splits.y_test)["accuracy"]
    seconds = round(time.time() - t, 1)
    tflites = {"scratch": tfl}
    for key, row in [("netadapt", rep["final"])] + [(f"a{b['alpha']:g}", b) for b in rep["baselines"]]:
        with open(row["path"], "rb") as f:
            tflites[key] = f.read()
    meas = LocalMeasurer(cfg.measurement.bench_settings()).measure_many(tflites, cfg.final.baseline_rounds)
    baselines = [dict(b, measured=meas[f"a{b['alpha']:g}"]["value"]) for b in rep["baselines"]]
    out = {"epochs": epochs, "qat_epochs": cfg.final.qat_epochs, "accuracy": acc, "seconds": seconds,
           "netadapt_fine_tuned_accuracy": rep["final"]["accuracy"],
           "measured_interleaved": {k: m["value"] for k, m in meas.items()},
           "cpu_cv": {k: m.get("cpu_cv", m.get("cv")) for k, m in meas.items()},
           "comparison": compare({"accuracy": acc, "measured": meas["scratch"]["value"]}, baselines, "latency",
                                 rep["target_value"]),
           "comparison_fine_tuned": compare({"accuracy": rep["final"]["accuracy"],
                                             "measured": meas["netadapt"]["value"]}, baselines, "latency",
                                            rep["target_value"])}
    write_json(os.path.join(d, "result.json"), out)
    return out


def _summary(rep):
    keep = ("status", "stopped", "resource", "unit", "target_value", "select", "start", "start_measurement",
            "reached", "comparison", "final_meets_target", "timings", "prediction_error", "workers",
            "benchmark_invocation_seconds")
    out = {k: rep.get(k) for k in keep}
    if rep.get("final"):
        out["final"] = {k: rep["final"].get(k) for k in ("accuracy", "measured", "measurement", "size_bytes",
                                                         "quantization", "tflm", "val_accuracy_keras")}
        out["final"]["blocks"] = rep["final"]["spec"]["blocks"]
    out["baselines"] = [{k: b.get(k) for k in ("alpha", "epochs", "accuracy", "measured", "measurement", "size_bytes",
                                               "tflm")} for b in rep.get("baselines") or []]
    out["iterations"] = [{k: h.get(k) for k in ("iteration", "budget", "chosen", "width", "predicted", "measured",
                                                "prediction_error", "val_accuracy", "seconds", "cpu_seconds")}
                         for h in rep.get("iterations") or []]
    return out


def main(argv):
    from tfmobile.bench import host_device
    from tfmobile.io import write_bytes, write_json

    if not FLAGS.work_dir:
        raise app.UsageError("--work_dir is required")
    t0, c0 = time.time(), time.process_time()
    result = {"host": host_device("litert", 1), "smoke": FLAGS.smoke, "runs": {}}
    reports = {}
    for resource in FLAGS.resources:
        reports[resource] = _netadapt(resource)
        result["runs"][resource] = _summary(reports[resource])
    if FLAGS.scratch and (reports.get("latency") or {}).get("final"):
        result["scratch"] = _scratch(reports["latency"])
    result["settings"] = _config("latency").fingerprint()
    result["wall_seconds_this_invocation"] = round(time.time() - t0, 1)
    result["driver_cpu_seconds_this_invocation"] = round(time.process_time() - c0, 1)
    out, plot = FLAGS.out, FLAGS.plot
    if FLAGS.smoke and out.startswith("docs/"):
        out, plot = os.path.join(FLAGS.work_dir, "result.json"), os.path.join(FLAGS.work_dir, "result.png")
    write_json(out, result)
    if "latency" in reports and os.path.isfile(os.path.join(FLAGS.work_dir, "latency", "netadapt.png")):
        with open(os.path.join(FLAGS.work_dir, "latency", "netadapt.png"), "rb") as f:
            write_bytes(plot, f.read())
    print(json.dumps({k: result["runs"][k].get("comparison") for k in result["runs"]} | {"out": out}))


if __name__ == "__main__":
    app.run(main)
