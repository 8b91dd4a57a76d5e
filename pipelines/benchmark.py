"""Benchmark a .tflite (or a zoo model, exported first) on a latency backend.

    python -m pipelines.benchmark --tflite m.tflite --backend litert --threads 1 --runs 50 --warmup 10 --json
    python -m pipelines.benchmark --model mbv2 --alpha 0.35 --resolution 96 --backend litert --json
    python -m pipelines.benchmark --tflite m.tflite --backend benchmark_model --binary ./benchmark_model --op_profiling
    python -m pipelines.benchmark --tflite m.tflite --backend benchmark_litert
    python -m pipelines.benchmark --tflite m.tflite --backend android --serial emulator-5554 [--mode binary]

Result (stdout; ``--json`` = one object): backend, threads, runs, init_ms, mean_ms, median_ms, p90_ms,
std_ms, min_ms, cv, model_bytes, ops, num_ops, device, warnings (coefficient of variation > 5 %), and
clock / clock_median_ms: the median on the clock ``pipelines.lut predict`` predicts (its ``clock`` beside
``predicted_ms``): at 1 thread on litert the invoking thread's CPU time (also ``cpu_median_ms``), else the
wall clock (``median_ms``). Compare a prediction with ``clock_median_ms``.
"""
import tfmobile  # noqa: F401
from absl import flags

from pipelines import _cli

flags.DEFINE_string("tflite", None, ".tflite model to benchmark")
flags.DEFINE_string("model", None, "zoo model name instead of --tflite (converted to int8 first)")
flags.DEFINE_float("alpha", 1.0, "--model width multiplier")
flags.DEFINE_integer("resolution", 224, "--model input resolution", upper_bound=_cli.MAX_RESOLUTION)
flags.DEFINE_integer("classes", 1000, "--model classes")
flags.DEFINE_string("work_dir", None, "where --model's .tflite is cached (default /tmp/tfmobile_bench)")
flags.DEFINE_enum("backend", "litert", ["litert", "benchmark_litert", "benchmark_model", "android"], "backend")
flags.DEFINE_integer("threads", 1, "interpreter threads")
flags.DEFINE_integer("runs", 50, "timed runs")
flags.DEFINE_integer("warmup", 10, "warmup runs")
flags.DEFINE_list("cpus", None, "CPU ids to pin to (litert / benchmark_litert / benchmark_model); "
                  "default: the last --threads CPUs")
flags.DEFINE_string("binary", None, "benchmark_model binary (env TFMOBILE_BENCHMARK_MODEL; android binary "
                    "mode: TFMOBILE_BENCHMARK_MODEL_ANDROID)")
flags.DEFINE_bool("op_profiling", False, "benchmark_model: --enable_op_profiling=true and parse the per-op table")
flags.DEFINE_string("serial", None, "android: adb serial")
flags.DEFINE_enum("mode", "app", ["app", "binary"], "android: our app or a pushed benchmark_model")
flags.DEFINE_enum("delegate", "XNNPACK", ["CPU", "XNNPACK", "GPU", "NNAPI"], "android: delegate")
flags.DEFINE_string("adb", None, "android: adb executable (env TFMOBILE_ADB)")
flags.DEFINE_string("apk", None, "android: APK to install if the app is missing")
flags.DEFINE_float("timeout", 300.0, "android: seconds to wait for a result")
flags.DEFINE_string("out", None, "also write the result JSON to this file (atomically)")
flags.DEFINE_bool("json", False, "print one JSON object")
FLAGS = flags.FLAGS

SUMMARY = ("backend", "threads", "runs", "init_ms", "mean_ms", "median_ms", "p90_ms", "std_ms", "min_ms", "cv",
           "clock", "clock_median_ms", "cpu_median_ms", "model_bytes", "num_ops", "ops", "warnings")


def main(argv):
    from tfmobile import bench
    from tfmobile.errors import UserError
    from tfmobile.io import write_json

    if bool(FLAGS.tflite) == bool(FLAGS.model):
        raise UserError("give exactly one of --tflite PATH or --model NAME")
    _cli.check_output(FLAGS.out, flag="out")
    path = FLAGS.tflite
    if FLAGS.model:
        from tfmobile.bench.zoo import zoo_tflite
        _cli.progress(f"exporting {FLAGS.model} {FLAGS.resolution}x{FLAGS.resolution} alpha={FLAGS.alpha} to int8")
        path = zoo_tflite(FLAGS.model, FLAGS.resolution, FLAGS.alpha, work_dir=FLAGS.work_dir,
                          classes=FLAGS.classes, verbose=False)
    from tfmobile.convert.flatbuffer import read_tflite
    read_tflite(path)  # a missing or corrupt model: one line, before any work
    opts = {}
    if FLAGS.cpus and FLAGS.backend != "android":
        try:
            opts["cpus"] = [int(c) for c in FLAGS.cpus]
        except ValueError:
            raise UserError(f"--cpus must be CPU ids, got {','.join(FLAGS.cpus)}") from None
    if FLAGS.backend == "benchmark_model":
        opts.update(binary=FLAGS.binary, op_profiling=FLAGS.op_profiling)
    elif FLAGS.backend == "android":
        opts.update(serial=FLAGS.serial, mode=FLAGS.mode, delegate=FLAGS.delegate, adb=FLAGS.adb, apk=FLAGS.apk,
                    binary=FLAGS.binary, timeout=FLAGS.timeout, op_profiling=FLAGS.op_profiling)
    elif FLAGS.binary or FLAGS.op_profiling:
        raise UserError("--binary / --op_profiling apply to --backend benchmark_model or android only")
    _cli.progress(f"benchmarking {path} on {FLAGS.backend} ({FLAGS.threads} thread(s), {FLAGS.runs} runs)")
    res = bench.measure(path, backend=FLAGS.backend, threads=FLAGS.threads, runs=FLAGS.runs, warmup=FLAGS.warmup,
                        **opts)
    if FLAGS.model:
        res["zoo_model"] = {"name": FLAGS.model, "alpha": FLAGS.alpha, "resolution": FLAGS.resolution,
                            "classes": FLAGS.classes}
    if FLAGS.out:
        write_json(FLAGS.out, res)
    _cli.emit(res, FLAGS.json, lambda r: "\n".join(f"{k}: {r.get(k)}" for k in SUMMARY if k in r))
    return 0


if __name__ == "__main__":
    _cli.run(main)
