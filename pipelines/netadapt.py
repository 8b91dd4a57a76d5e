"""NetAdapt: shrink a trained model until its measured latency (or memory) meets a target.

    python -m pipelines.netadapt --model mbv2 --alpha 1.0 --resolution 32 --epochs 10 --target 0.5 --output_dir runs/na
    python -m pipelines.netadapt --checkpoint runs/mbv2/checkpoint --target_ms 0.06 --workers 2 --output_dir runs/na
    python -m pipelines.netadapt --checkpoint C --resource peak_sram --target 256KB --output_dir runs/na_sram
    python -m pipelines.netadapt ... --ray_address auto          # proposals as Ray tasks
    python -m pipelines.netadapt ... --resume                     # after a kill: continues, redoes nothing

Writes OUTPUT_DIR/history.jsonl, iterations/NNN/ (plan, proposals, chosen checkpoint, measurement),
final/ (spec.json, checkpoints, int8 .tflite, TFLM files), report.md, report.json, netadapt.png.
Exit 2 with one line on bad input, or when the target could not be met (the report is written).
"""
from absl import flags

from pipelines import _cli

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "start from this float checkpoint (from pipelines.train).")
flags.DEFINE_string("model", "mbv2", "zoo model trained first when no --checkpoint.")
flags.DEFINE_float("alpha", 1.0, "width multiplier of --model.")
flags.DEFINE_integer("resolution", 32, "input resolution of --model.")
flags.DEFINE_integer("epochs", 10, "training epochs of --model before the loop.")
flags.DEFINE_float("bn_momentum", 0.9, "BatchNorm momentum of --model (Keras' 0.999 lags in short runs).")
flags.DEFINE_float("lr", None, "peak learning rate of the start training and the baselines (default train's).")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX dir or class-subfolder image dir (default: the "
                    "Debian package, else the shipped subset).")
flags.DEFINE_boolean("subset", False, "use the Fashion-MNIST subset shipped in the repo.")
flags.DEFINE_integer("limit", None, "use only this many training images (stratified).")
flags.DEFINE_float("val_fraction", 0.1, "fraction of the training images held out for proposal selection.")
flags.DEFINE_enum("resource", "latency", ["latency", "macs", "params", "peak_sram", "flash"], "what to reduce.")
flags.DEFINE_string("target", None, "fraction of the start (0.5), or a value with a unit (256KB, 0.4ms).")
flags.DEFINE_float("target_ms", None, "latency target in ms (instead of --target).")
flags.DEFINE_float("delta0", 0.06, "first step, as a fraction of the start (delta_i = delta0 * decay^(i-1)).")
flags.DEFINE_float("decay", 0.96, "step decay per iteration.")
flags.DEFINE_integer("max_iterations", 100, "stop after this many iterations.")
flags.DEFINE_enum("select", "ratio", ["ratio", "accuracy"], "ratio: max dAcc/|dLatency| (MobileNetV3); "
                  "accuracy: max accuracy (NetAdapt).")
flags.DEFINE_integer("short_steps", 200, "short-term fine-tune steps per proposal (T).")
flags.DEFINE_float("short_lr", 5e-4, "short-term fine-tune peak learning rate.")
flags.DEFINE_integer("batch_size", 64, "batch size of every training step.")
flags.DEFINE_integer("seed", 0, "seed: data split, order, initialisation.")
flags.DEFINE_integer("worker_threads", 1, "TensorFlow threads per proposal worker (same in every mode, so the "
                     "chosen sequence does not depend on --workers / Ray).")
flags.DEFINE_enum("backend", "litert", ["litert", "benchmark_litert", "benchmark_model", "android"],
                  "latency backend (as pipelines.benchmark).")
flags.DEFINE_integer("threads", 1, "interpreter threads of the measurement.")
flags.DEFINE_integer("bench_runs", 300, "timed runs per measurement.")
flags.DEFINE_integer("bench_warmup", 30, "warm-up runs per measurement.")
flags.DEFINE_string("binary", None, "benchmark_model binary (backend benchmark_model / android binary mode).")
flags.DEFINE_string("serial", None, "android: adb serial.")
flags.DEFINE_string("lut", None, "latency LUT JSON (built/extended as needed; must be this device's).")
flags.DEFINE_integer("long_epochs", 5, "long-term fine-tune epochs after the loop.")
flags.DEFINE_float("long_lr", 5e-4, "long-term fine-tune peak learning rate.")
flags.DEFINE_enum("final", "fine_tune", ["fine_tune", "from_scratch"], "final stage: fine-tune the loop's weights "
                  "(--long_epochs), or train the found architecture from scratch with the baselines' budget.")
flags.DEFINE_integer("qat_epochs", 1, "QAT epochs of the final model (0: post-training int8).")
flags.DEFINE_boolean("tflm", True, "export the final int8 model for TFLite-Micro (arena measured).")
flags.DEFINE_list("baselines", [], "width multipliers trained with the same budget and measured with the "
                  "NetAdapt model, e.g. 0.35,0.5,0.75.")
flags.DEFINE_string("baselines_dir", None, "train the baselines here, shared with other runs (once per "
                    "training setting); default OUTPUT_DIR/baselines.")
flags.DEFINE_integer("workers", 1, "local proposal worker processes.")
flags.DEFINE_string("ray_address", None, "run proposals as Ray tasks: auto, HOST:PORT, or local (start one).")
flags.DEFINE_float("proposal_timeout", None, "seconds after which a proposal's worker counts as hung.")
flags.DEFINE_string("output_dir", None, "run directory (required).")
flags.DEFINE_boolean("resume", False, "continue the run in --output_dir.")
flags.DEFINE_boolean("json", False, "print exactly one JSON object on stdout.")


def config_from_flags():
    from tfmobile.errors import UserError
    from tfmobile.netadapt.loop import LoopConfig, parse_target

    if not FLAGS.output_dir:
        raise UserError("--output_dir is required")
    if (FLAGS.target is None) == (FLAGS.target_ms is None):
        raise UserError("give one of --target (0.5, 256KB, ...) or --target_ms")
    if FLAGS.target_ms is not None:
        if FLAGS.resource != "latency":
            raise UserError("--target_ms goes with --resource latency")
        fraction, value = None, FLAGS.target_ms
    else:
        fraction, value = parse_target(FLAGS.target, FLAGS.resource)
    try:
        baselines = tuple(float(a) for a in FLAGS.baselines)
    except ValueError:
        raise UserError(f"--baselines must be width multipliers, got {','.join(FLAGS.baselines)}") from None
    opts = {}
    if FLAGS.binary:
        opts["binary"] = FLAGS.binary
    if FLAGS.serial:
        opts["serial"] = FLAGS.serial
    return LoopConfig(
        checkpoint=FLAGS.checkpoint, model=FLAGS.model, alpha=FLAGS.alpha, resolution=FLAGS.resolution,
        epochs=FLAGS.epochs, lr=FLAGS.lr, bn_momentum=FLAGS.bn_momentum, data_dir=FLAGS.data_dir, subset=FLAGS.subset,
        limit=FLAGS.limit,
        val_fraction=FLAGS.val_fraction, resource=FLAGS.resource, target=fraction, target_value=value,
        delta0=FLAGS.delta0, decay=FLAGS.decay, max_iterations=FLAGS.max_iterations, select=FLAGS.select,
        short_steps=FLAGS.short_steps, short_lr=FLAGS.short_lr, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
        worker_threads=FLAGS.worker_threads, backend=FLAGS.backend, threads=FLAGS.threads,
        bench_runs=FLAGS.bench_runs, bench_warmup=FLAGS.bench_warmup, backend_opts=opts, lut=FLAGS.lut,
        long_epochs=FLAGS.long_epochs, long_lr=FLAGS.long_lr, final=FLAGS.final, qat_epochs=FLAGS.qat_epochs,
        tflm=FLAGS.tflm,
        baselines=baselines, baselines_dir=FLAGS.baselines_dir, workers=FLAGS.workers, ray_address=FLAGS.ray_address,
        proposal_timeout=FLAGS.proposal_timeout)


def render(rep):
    from tfmobile.netadapt.report import markdown

    return markdown(rep) + f"\nreport: {rep['report_md']}\n"


def main(argv):
    from tfmobile.netadapt import loop

    rep = loop.run(config_from_flags(), FLAGS.output_dir, resume=FLAGS.resume)
    _cli.emit(rep, FLAGS.json, render)
    return 0


if __name__ == "__main__":
    _cli.run(main)
