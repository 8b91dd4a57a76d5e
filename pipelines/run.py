"""The main job: train a small model, compress it, export int8 TFLite + TFLM, measure, report.

    python -m pipelines.run                             # shipped subset, mbv2 0.35 @ 48x48 -> runs/run-<time>/
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
The stages are tfmobile.main_job's; this module only reads the flags.
"""
from absl import flags

from pipelines import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "mbv2", "zoo model name.")
flags.DEFINE_float("alpha", 0.35, "width multiplier.")
flags.DEFINE_integer("resolution", None, "input resolution, square (default tfmobile.main_job."
                     "MAIN_JOB_RESOLUTION = 48: at 32 MobileNetV2's last stages see 1x1 features).",
                     upper_bound=_cli.MAX_RESOLUTION)
flags.DEFINE_integer("epochs", None, "float training epochs (default: enough optimizer steps for the "
                     "amount of data, tfmobile.data.default_schedule; the report says how many ran).")
flags.DEFINE_integer("qat_epochs", None, "QAT (and PQAT) fine-tuning epochs (default: at least 2 passes "
                     "and 200 steps, tfmobile.data.STAGE_FLOORS).")
flags.DEFINE_integer("prune_epochs", None, "pruning fine-tuning epochs (with --prune; default: at least 3 "
                     "passes and 300 steps).")
flags.DEFINE_float("prune", None, "also make a pruned (+ PQAT int8) variant at this sparsity, e.g. 0.5.")
flags.DEFINE_boolean("structured_2_4", False, "2:4 structured sparsity for --prune 0.5.")
flags.DEFINE_integer("batch_size", None, "batch size (default: chosen for the amount of data, 16-128).")
flags.DEFINE_string("augment", None, "training augmentations, comma-separated: flip, shift, or none "
                    "(default: shift, plus flip for the built-in Fashion-MNIST only: flips change the "
                    "label of digits, letters, arrows).")
flags.DEFINE_float("lr", None, "peak learning rate of the float run (cosine, Adam; default "
                   "tfmobile.main_job.main_job_lr: 5e-3 at batch 32 and above, scaled down for smaller batches).")
flags.DEFINE_float("clipnorm", None, "clip the float run's global gradient norm to this (0: no clipping; "
                   "default tfmobile.main_job.MAIN_JOB_CLIPNORM = 1.0).")
flags.DEFINE_float("shift", None, "random shift augmentation, fraction of the side (default "
                   "tfmobile.main_job.MAIN_JOB_SHIFT = 1/16).")
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


def main(argv):
    _cli.check_output(FLAGS.output_dir, directory=True, flag="output_dir")   # before the slow imports
    from tfmobile import data

    data.check_output_outside_data(FLAGS.output_dir, FLAGS.data_dir)
    from tfmobile import main_job

    report = main_job.run(
        model=FLAGS.model, alpha=FLAGS.alpha, resolution=FLAGS.resolution, epochs=FLAGS.epochs,
        qat_epochs=FLAGS.qat_epochs, prune_epochs=FLAGS.prune_epochs, prune=FLAGS.prune,
        structured_2_4=FLAGS.structured_2_4, batch_size=FLAGS.batch_size, lr=FLAGS.lr,
        augment=FLAGS.augment, shift=FLAGS.shift, clipnorm=FLAGS.clipnorm,
        full_data=FLAGS.full_data, data_dir=FLAGS.data_dir, limit=FLAGS.limit, bn_momentum=FLAGS.bn_momentum,
        bench_runs=FLAGS.bench_runs, bench_threads=FLAGS.bench_threads, tflm=FLAGS.tflm,
        steps_per_epoch=FLAGS.steps_per_epoch, output_dir=FLAGS.output_dir, progress=_cli.progress)
    _cli.emit(report, FLAGS.json, lambda r: main_job.render_markdown(r) + f"\nreport: {r['report_md']}\n")
    return 0


if __name__ == "__main__":
    _cli.run(main)
