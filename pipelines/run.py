"""The main job: train a small model, compress it, export int8 TFLite + TFLM, measure, report.

    python -m pipelines.run                             # shipped subset, mbv2 0.35 @ 32x32 -> runs/run-<time>/
    python -m pipelines.run --data_dir my_images        # class subfolders of PNG/JPEG images
    python -m pipelines.run --full_data --epochs 10 --prune 0.5 --output_dir out_full

Data: the Fashion-MNIST subset that ships in the repo (3000 train / 1000 test real images) so the
default run works on a fresh machine; ``--full_data`` reads the full set (``--data_dir`` or the
Debian package ``dataset-fashion-mnist``), ``--data_dir`` may also be a class-subfolder image tree.
Training length is in optimizer steps, chosen for the amount of data (``tfmobile.data.
default_schedule``; ``--epochs`` / ``--batch_size`` override), augmentation is label-safe (no
flips unless ``--augment flip,shift`` or the built-in Fashion-MNIST); the report says both, and
warns when validation accuracy ends near chance.

Variants (each exported to .tflite and run in LiteRT on the test set - the accuracy reported is
the exported model's, not Keras'): float32; PTQ int8 (post-training, calibrated on real training
images); QAT int8 (fine-tuned with tfmot fake-quant from the float model); with ``--prune S``:
pruned to S sparsity, then pruning-preserving QAT int8. The int8 variants are also exported for
TFLite-Micro (C array, op resolver, measured arena). Latency: tfmobile.bench (LiteRT, 1 thread on
this host). Writes OUTPUT_DIR/report.md, report.json, accuracy_latency_size.png, tflite/, tflm/.
"""
import os
import time

from absl import flags

from pipelines import _cli
from tfmobile.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "mbv2", "zoo model name.")
flags.DEFINE_float("alpha", 0.35, "width multiplier.")
flags.DEFINE_integer("resolution", 32, "input resolution (square).")
flags.DEFINE_integer("epochs", None, "float training epochs (default: enough optimizer steps for the "
                     "amount of data, tfmobile.data.default_schedule; the report says how many ran).")
flags.DEFINE_integer("qat_epochs", None, "QAT (and PQAT) fine-tuning epochs (default: at least 2 epochs "
                     "and 200 steps, tfmobile.data.STAGE_FLOORS).")
flags.DEFINE_integer("prune_epochs", None, "pruning fine-tuning epochs (with --prune; default: at least 3 "
                     "epochs and 300 steps).")
flags.DEFINE_float("prune", None, "also make a pruned (+ PQAT int8) variant at this sparsity, e.g. 0.5.")
flags.DEFINE_boolean("structured_2_4", False, "2:4 structured sparsity for --prune 0.5.")
flags.DEFINE_integer("batch_size", None, "batch size (default: chosen for the amount of data, 16-128).")
flags.DEFINE_string("augment", None, "training augmentations, comma-separated: flip, shift, or none "
                    "(default: shift, plus flip for the built-in Fashion-MNIST only: flips change the "
                    "label of digits, letters, arrows).")
flags.DEFINE_float("lr", 1e-2, "peak learning rate of the float run (cosine, Adam; 1e-2 reaches in the "
                   "default step budget what 2e-3 needs 1.5x the steps for).")
flags.DEFINE_float("shift", 0.0625, "random shift augmentation, fraction of the side (1/16: the main job's "
                   "short runs under-fit with pipelines.train's 1/8).")
flags.DEFINE_boolean("full_data", False, "full Fashion-MNIST (--data_dir or the Debian package).")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX dir or class-subfolder image dir.")
flags.DEFINE_integer("limit", None, "use only this many training images (stratified).")
flags.DEFINE_float("bn_momentum", 0.9, "BatchNorm momentum.")
flags.DEFINE_integer("bench_runs", 50, "timed LiteRT runs per variant.")
flags.DEFINE_integer("bench_threads", 1, "LiteRT threads for the latency measurement.")
flags.DEFINE_boolean("tflm", True, "export the int8 variants for TFLite-Micro (arena measured).")
flags.DEFINE_integer("steps_per_epoch", None, "cap steps per epoch (smoke runs).")
flags.DEFINE_string("output_dir", None, "where everything goes (default: runs/run-YYYYmmdd-HHMMSS).")
flags.DEFINE_boolean("json", False, "print exactly one JSON object on stdout.")


# --------------------------------------------------------------------------------------------
# measuring one exported variant: tfmobile.train.measure_variant
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# report: markdown + plot
# --------------------------------------------------------------------------------------------
def render_markdown(report):
    lines = [f"# tfmobile run: {report['model']}", "",
             f"Data: {report['data_source']} ({report['train_images']} train / {report['val_images']} "
             f"validation / {report['test_images']} test images). Accuracy is top-1 of the exported "
             f".tflite run in LiteRT on the test set; latency is tfmobile.bench ({report['latency_note']}).",
             "", "| variant | accuracy | size (bytes) | gzip (bytes) | weight sparsity | latency median (ms) "
             "| p90 (ms) | TFLM arena (bytes) |", "|---|---|---|---|---|---|---|---|"]
    for r in report["variants"]:
        lat = r.get("latency_ms") or {}
        arena = (r.get("tflm") or {}).get("arena_bytes", "-")
        lines.append(f"| {r['variant']} | {100 * r['accuracy']:.2f} % | {r['size_bytes']} | {r['gzip_bytes']} "
                     f"| {100 * r['weight_sparsity']:.1f} % | {_fmt(lat.get('median_ms'))} "
                     f"| {_fmt(lat.get('p90_ms'))} | {arena} |")
    lines += ["", f"Training length (augmentation: {', '.join(report['augment']) or 'none'}):", ""]
    lines += [f"- {k}: {t['text']}" for k, t in report["training"].items()]
    lines += ["", "Wall time on this host (seconds):", ""]
    for k, v in report["timings_s"].items():
        lines.append(f"- {k}: {v}")
    lines += ["", "![accuracy vs latency vs size](accuracy_latency_size.png)", ""]
    if report.get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


def _fmt(v):
    return "-" if v is None else f"{v:.3f}"


def plot(report, path):
    """Accuracy vs latency (x) with marker area proportional to the .tflite size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfmobile.io import atomic_path

    rows = report["variants"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    biggest = max(r["size_bytes"] for r in rows)
    for r in rows:
        lat = (r.get("latency_ms") or {}).get("median_ms")
        x = lat if lat is not None else 0.0
        ax.scatter([x], [100 * r["accuracy"]], s=60 + 900 * r["size_bytes"] / biggest, alpha=0.55,
                   label=f"{r['variant']}: {r['size_bytes'] / 1024:.0f} KiB (gzip {r['gzip_bytes'] / 1024:.0f} KiB)")
    ax.set_xlabel(f"median latency (ms), {report['latency_note']}")
    ax.set_ylabel("test accuracy (%) of the .tflite in LiteRT")
    ax.set_title(f"{report['model']}: accuracy vs latency (marker area ~ model size)", fontsize=10)
    ax.grid(True, alpha=0.3)
    leg = ax.legend(fontsize=7, loc="best", markerscale=0.4)
    for h in leg.legend_handles if hasattr(leg, "legend_handles") else leg.legendHandles:
        h.set_sizes([40])
    xs = [(r.get("latency_ms") or {}).get("median_ms") or 0.0 for r in rows]
    ax.set_xlim(0, max(xs) * 1.5 + 1e-3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# --------------------------------------------------------------------------------------------
def main(argv):
    import numpy as np

    import tfmobile  # noqa: F401
    from tfmobile import compress, convert, data, models, train
    from tfmobile.io import write_json, write_text

    if not FLAGS.output_dir:
        FLAGS.output_dir = os.path.join("runs", time.strftime("run-%Y%m%d-%H%M%S"))
    for name in ("epochs", "qat_epochs", "prune_epochs", "batch_size", "bench_runs", "bench_threads"):
        if getattr(FLAGS, name) is not None and getattr(FLAGS, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}")
    if FLAGS.prune is not None and not 0.0 < FLAGS.prune < 1.0:
        raise UserError(f"--prune must be in (0, 1), got {FLAGS.prune}")
    if FLAGS.structured_2_4 and FLAGS.prune != 0.5:
        raise UserError("--structured_2_4 goes with --prune 0.5")
    out = FLAGS.output_dir
    for sub in ("float", "qat", "prune", "pqat"):
        if os.path.isfile(os.path.join(out, "train", sub, "checkpoint", "checkpoint.json")):
            raise UserError(f"{out} already holds a run; choose a new --output_dir")
    if FLAGS.full_data and not FLAGS.data_dir and not os.path.isdir(data.DEBIAN_DIR):
        raise UserError(f"--full_data needs --data_dir or the Debian package dataset-fashion-mnist "
                        f"({data.DEBIAN_DIR}); without them the job runs on the shipped subset")
    t_start = time.time()
    res = (FLAGS.resolution, FLAGS.resolution, 3)
    dataset = data.load_dataset(FLAGS.data_dir, subset=not (FLAGS.full_data or FLAGS.data_dir),
                                image_size=res[:2], channels=3)
    splits = data.train_val_split(dataset, 0.1, limit=FLAGS.limit)
    spec = models.get_spec(FLAGS.model, input_shape=res, alpha=FLAGS.alpha, classes=dataset.num_classes,
                           bn_momentum=FLAGS.bn_momentum)
    _cli.progress(f"{spec.name} on {splits.source}: {len(splits.x_train)} train / {len(splits.x_val)} val / "
                  f"{len(splits.x_test)} test images")
    augment = data.parse_augment(FLAGS.augment, splits.source)
    common = dict(batch_size=FLAGS.batch_size, steps_per_epoch=FLAGS.steps_per_epoch, augment=augment,
                  shift=FLAGS.shift)
    timings = {}

    def stage(name, fn):
        _cli.progress(f"{name} ...")
        t = time.time()
        r = fn()
        timings[name] = round(time.time() - t, 1)
        return r

    fmodel, fmet = stage("float training", lambda: train.fit(
        models.build(spec), splits, os.path.join(out, "train", "float"), epochs=FLAGS.epochs, lr=FLAGS.lr,
        **common))
    calib = data.representative_dataset(splits.x_train, res, n=200)
    calib = np.concatenate([b[0] for b in calib()])
    variants, kmodels = [], {}
    tfl = stage("float export", lambda: convert.to_tflite(fmodel, "float"))
    variants.append(("float32", tfl, False))
    tfl = stage("PTQ int8 export", lambda: convert.to_tflite(fmodel, "int8", representative_data=calib))
    variants.append(("ptq_int8", tfl, True))
    qmodel, qmet = stage("QAT fine-tuning", lambda: train.fit(
        fmodel, splits, os.path.join(out, "train", "qat"), epochs=FLAGS.qat_epochs, compression="qat",
        **common))
    tfl = stage("QAT int8 export", lambda: convert.to_tflite(qmodel, "int8", representative_data=calib))
    variants.append(("qat_int8", tfl, True))
    pmet = ppmet = None
    if FLAGS.prune is not None:
        pmodel, pmet = stage("pruning", lambda: train.fit(
            fmodel, splits, os.path.join(out, "train", "prune"), epochs=FLAGS.prune_epochs,
            compression="prune", target_sparsity=FLAGS.prune, structured_2_4=FLAGS.structured_2_4,
            **common))
        stripped = train._tag_spec(compress.strip(pmodel), spec)
        ppmodel, ppmet = stage("PQAT fine-tuning", lambda: train.fit(
            stripped, splits, os.path.join(out, "train", "pqat"), epochs=FLAGS.qat_epochs,
            compression="pqat", **common))
        tfl = stage("pruned+QAT int8 export", lambda: convert.to_tflite(ppmodel, "int8", representative_data=calib))
        tag = "2:4" if FLAGS.structured_2_4 else f"{int(round(100 * FLAGS.prune))}"
        variants.append((f"pruned{tag.replace(':', '_')}_qat_int8", tfl, True))

    rows = []
    for name, tfl, is_int8 in variants:
        rows.append(stage(f"measure {name}", lambda: train.measure_variant(
            name, tfl, out, splits.x_test, splits.y_test, bench_runs=FLAGS.bench_runs,
            threads=FLAGS.bench_threads, tflm=FLAGS.tflm and is_int8 and name != "ptq_int8")))
    stages = {"float": fmet, "qat": qmet, "prune": pmet, "pqat": ppmet}
    training = {k: dict(m["schedule"], steps_run=m["steps"]) for k, m in stages.items() if m}
    notes = [w for m in stages.values() if m for w in m["warnings"]]
    for r in rows:
        if r.get("float_ops"):
            notes.append(f"{r['variant']}: ops left in float: {', '.join(r['float_ops'])}")
        if (r.get("tflm") or {}).get("error"):
            notes.append(f"{r['variant']}: TFLite-Micro export failed: {r['tflm']['error']}")
    latency_note = f"LiteRT, {FLAGS.bench_threads} thread(s), {FLAGS.bench_runs} runs, this host's CPU"
    report = {
        "model": spec.name, "family": spec.family, "input_shape": list(res), "alpha": FLAGS.alpha,
        "data_source": splits.source, "train_images": len(splits.x_train), "val_images": len(splits.x_val),
        "test_images": len(splits.x_test), "classes": dataset.num_classes, "epochs": fmet["epochs"],
        "qat_epochs": qmet["epochs"], "training": training, "augment": list(augment), "lr": FLAGS.lr,
        "shift": FLAGS.shift,
        "prune": FLAGS.prune, "structured_2_4": FLAGS.structured_2_4,
        "float_val_accuracy_keras": fmet["val_accuracy"], "qat_val_accuracy_keras": qmet["val_accuracy"],
        "prune_val_accuracy_keras": pmet["val_accuracy"] if pmet else None,
        "pqat_val_accuracy_keras": ppmet["val_accuracy"] if ppmet else None,
        "variants": rows, "timings_s": timings, "total_seconds": round(time.time() - t_start, 1),
        "latency_note": latency_note, "notes": notes, "cpu_count": os.cpu_count(),
    }
    write_json(os.path.join(out, "report.json"), report)
    plot(report, os.path.join(out, "accuracy_latency_size.png"))
    write_text(os.path.join(out, "report.md"), render_markdown(report))
    report["report_md"] = os.path.abspath(os.path.join(out, "report.md"))
    report["plot_png"] = os.path.abspath(os.path.join(out, "accuracy_latency_size.png"))
    _cli.emit(report, FLAGS.json, lambda r: render_markdown(r) + f"\nreport: {r['report_md']}\n")
    return 0


if __name__ == "__main__":
    _cli.run(main)
