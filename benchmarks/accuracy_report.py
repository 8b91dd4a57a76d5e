"""The accuracy table: float / PTQ int8 / QAT int8 / pruned + QAT int8, measured on exported .tflite.

    # 1. float checkpoints (long: full Fashion-MNIST, 32x32)
    python -m pipelines.train --model mbv2 --alpha 0.35 --epochs 10 --output_dir /work/runs/mbv2_float
    # 2. every variant from that checkpoint, each .tflite run in LiteRT on the full 10k test set
    python benchmarks/accuracy_report.py --float_dir /work/runs/mbv2_float --work_dir /work/runs/mbv2_report
    # 3. the Markdown table from one or more result files
    python benchmarks/accuracy_report.py --table /work/runs/mbv2_report/result.json,/work/runs/mbv3_report/result.json

Stages are resumable: a finished stage (its checkpoint's epoch == the asked epochs) is not re-run,
so a killed job is simply started again. Test data: the full 10k Fashion-MNIST test set (Debian
package or --data_dir); validation (for training choices) is carved from train as in training.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfmobile  # noqa: E402,F401
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("float_dir", None, "output_dir of a float pipelines.train run (or its checkpoint).")
flags.DEFINE_string("work_dir", None, "where the compression runs, .tflite files and result.json go.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX dir (default: Debian package).")
flags.DEFINE_integer("qat_epochs", 2, "QAT fine-tuning epochs.")
flags.DEFINE_integer("prune_epochs", 3, "pruning fine-tuning epochs (sparsity ramps over 70 %).")
flags.DEFINE_integer("pqat_epochs", 1, "pruning-preserving QAT epochs after pruning.")
flags.DEFINE_float("sparsity", 0.5, "pruning target.")
flags.DEFINE_integer("batch_size", 128, "batch size for fine-tuning.")
flags.DEFINE_list("stages", ["float", "ptq", "qat", "pruned_qat"], "variants to produce.")
flags.DEFINE_integer("bench_runs", 30, "LiteRT latency runs per variant (0: skip latency).")
flags.DEFINE_integer("finetune_steps", None, "cap steps per fine-tuning epoch (when CPU time is short).")
flags.DEFINE_float("shift", None, "fine-tuning shift augmentation (default: the float run's, from its metrics.json).")
flags.DEFINE_list("table", None, "print the Markdown table of these result.json files and exit.")


def run_report():
    from tfmobile import convert, data, main_job, models, train
    from tfmobile.evaluation import measure_variant
    from tfmobile.io import write_json

    wd = FLAGS.work_dir
    os.makedirs(wd, exist_ok=True)
    fm_path = os.path.join(FLAGS.float_dir, "metrics.json")
    fmet = json.load(open(fm_path)) if os.path.isfile(fm_path) else {}
    fmodel = train.load_checkpoint(FLAGS.float_dir)
    spec = models.spec_of(fmodel)
    res = tuple(spec.input_shape)
    ds = data.load_fashion_mnist(FLAGS.data_dir)
    if len(ds.x_test) != 10000:
        print(f"warning: test set has {len(ds.x_test)} images (not the full 10k)", file=sys.stderr)
    splits = data.train_val_split(ds, 0.1)
    job = main_job.Job(wd, splits, batch_size=FLAGS.batch_size, steps_per_epoch=FLAGS.finetune_steps)
    calib = job.calibration_images(res, n=200)
    result_path = os.path.join(wd, "result.json")
    result = json.load(open(result_path)) if os.path.isfile(result_path) else {}
    result.update({"model": spec.name, "input_shape": list(res), "data_source": ds.source,
                   "test_images": int(len(ds.x_test)), "cpu_count": os.cpu_count(),
                   "float_training": {"epochs": fmet.get("epochs"), "train_seconds": fmet.get("total_train_seconds"),
                                      "val_accuracy_keras": fmet.get("val_accuracy"),
                                      "params": fmet.get("params"), "batch_size": fmet.get("batch_size"),
                                      "lr": fmet.get("lr")}})
    # fine-tune with the float run's augmentation (older metrics files: the then-default shift)
    aug = {"augment": fmet.get("augment", True), "shift": fmet.get("shift", data.DEFAULT_SHIFT)}
    if FLAGS.shift is not None:
        aug["shift"] = FLAGS.shift
    result["float_training"].update(aug)
    result.setdefault("variants", {})
    result.setdefault("timings", {})

    def record(name, make_tflite):
        """Export, then measure the .tflite on the full test set: one timed stage."""
        row = job.stage(f"{name} export", lambda: measure_variant(
            name, make_tflite(), wd, ds.x_test, ds.y_test, bench_runs=max(1, FLAGS.bench_runs),
            bench=FLAGS.bench_runs > 0))
        row["export_and_eval_seconds"] = job.timings[f"{name} export"]
        result["variants"][name] = row
        write_json(result_path, result)
        print(f"{name}: LiteRT test accuracy {row['accuracy']:.4f}, {row['size_bytes']} B, "
              f"gzip {row['gzip_bytes']} B, sparsity {row['weight_sparsity']:.3f}", file=sys.stderr, flush=True)

    def finetune(name, make_model, epochs, compression, **kw):
        """A restartable fine-tuning stage in WORK_DIR/NAME (a finished one is loaded, not re-run)."""
        model, m = job.stage(name, lambda: train.fit_or_load(
            make_model, splits, os.path.join(wd, name), epochs, compression, **job.fit_options, **aug, **kw))
        result["timings"][name] = {"epochs": epochs, "steps_per_epoch": FLAGS.finetune_steps,
                                   "train_seconds": m.get("total_train_seconds"),
                                   "wall_seconds_this_call": job.timings[name],
                                   "val_accuracy_keras": m.get("val_accuracy")}
        return model

    if "float" in FLAGS.stages:
        record("float32", lambda: convert.to_tflite(fmodel, "float"))
    if "ptq" in FLAGS.stages:
        record("ptq_int8", lambda: convert.to_tflite(fmodel, "int8", representative_data=calib))
    if "qat" in FLAGS.stages:
        q = finetune("qat", lambda: fmodel, FLAGS.qat_epochs, "qat")
        record("qat_int8", lambda: convert.to_tflite(q, "int8", representative_data=calib))
    if "pruned_qat" in FLAGS.stages:
        p = finetune("prune", lambda: train.load_checkpoint(FLAGS.float_dir), FLAGS.prune_epochs, "prune",
                     target_sparsity=FLAGS.sparsity)
        pq = finetune("pqat", lambda: p, FLAGS.pqat_epochs, "pqat")
        record(f"pruned{int(round(100 * FLAGS.sparsity))}_qat_int8",
               lambda: convert.to_tflite(pq, "int8", representative_data=calib))
    write_json(result_path, result)
    print(json.dumps({"result": os.path.abspath(result_path)}))


def _ep(t):
    steps = t.get("steps_per_epoch")
    return f"{t.get('epochs')}" + (f" x {steps} steps" if steps else "")


def table(paths):
    lines = ["| model | variant | LiteRT test acc. (10k) | Δ vs float (points) | .tflite bytes | gzip bytes "
             "| weight sparsity | fine-tune epochs | train time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    merged = {}  # several result files of one model (stages run in parallel) are merged
    for p in paths:
        r = json.load(open(p))
        m = merged.setdefault(r["model"], {"model": r["model"], "variants": {}, "timings": {},
                                           "float_training": r.get("float_training", {})})
        m["variants"].update(r["variants"])
        m["timings"].update(r.get("timings", {}))
    for r in merged.values():
        v = r["variants"]
        f_acc = v.get("float32", {}).get("accuracy")
        ft = r.get("float_training", {})
        for name in ("float32", "ptq_int8", "qat_int8", "pruned50_qat_int8"):
            if name not in v:
                continue
            row = v[name]
            delta = "" if f_acc is None or name == "float32" else f"{100 * (row['accuracy'] - f_acc):+.2f}"
            if name == "float32":
                ep, secs = ft.get("epochs"), ft.get("train_seconds")
            elif name == "ptq_int8":
                ep, secs = 0, row.get("export_and_eval_seconds")
            elif name == "qat_int8":
                t = r["timings"].get("qat", {})
                ep, secs = _ep(t), t.get("train_seconds")
            else:
                t1, t2 = r["timings"].get("prune", {}), r["timings"].get("pqat", {})
                ep = f"{_ep(t1)} prune + {_ep(t2)} PQAT"
                secs = round((t1.get("train_seconds") or 0) + (t2.get("train_seconds") or 0), 1)
            lines.append(f"| {r['model']} | {name} | {100 * row['accuracy']:.2f} % | {delta} | {row['size_bytes']} "
                         f"| {row['gzip_bytes']} | {100 * row['weight_sparsity']:.1f} % | {ep} | {secs} |")
    print("\n".join(lines))


def main(argv):
    if FLAGS.table:
        table(FLAGS.table)
        return 0
    if not FLAGS.float_dir or not FLAGS.work_dir:
        print("error: --float_dir and --work_dir are required", file=sys.stderr)
        return 2
    run_report()
    return 0


if __name__ == "__main__":
    app.run(main)
