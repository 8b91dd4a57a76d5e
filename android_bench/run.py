"""Host runner for the Android benchmark app: ``python -m android_bench.run --tflite PATH --serial S``.

Installs the app if needed (``--apk``, default android_bench/app/build/outputs/apk/release/app-release.apk),
pushes the model, starts BenchmarkActivity with intent extras, waits (``--timeout``) for the app's JSON
line in logcat (tag TfmobileBench), and prints the result in the same schema as every other backend
(``--json``: one JSON object). ``--mode binary`` pushes and runs an Android ``benchmark_model`` instead.
No adb, no device, a device that disconnects, a missing APK/binary, a corrupt .tflite, an app error or
a timeout: one line ``error: ...`` on stderr, exit status 2.
"""
import tfmobile  # noqa: F401
from absl import flags

from pipelines import _cli

flags.DEFINE_string("tflite", None, "model to benchmark (.tflite)")
flags.DEFINE_string("serial", None, "adb device serial (default: the only attached device)")
flags.DEFINE_enum("mode", "app", ["app", "binary"], "run our app, or a pushed benchmark_model binary")
flags.DEFINE_integer("threads", 1, "interpreter threads")
flags.DEFINE_integer("runs", 50, "timed runs")
flags.DEFINE_integer("warmup", 10, "warmup runs")
flags.DEFINE_enum("delegate", "XNNPACK", ["CPU", "XNNPACK", "GPU", "NNAPI"], "delegate (app mode; binary maps "
                  "GPU/NNAPI/CPU to --use_gpu / --use_nnapi / --use_xnnpack=false)")
flags.DEFINE_string("apk", None, "APK to install when the app is missing (env TFMOBILE_BENCH_APK)")
flags.DEFINE_string("binary", None, "Android benchmark_model binary (binary mode; env "
                    "TFMOBILE_BENCHMARK_MODEL_ANDROID)")
flags.DEFINE_string("adb", None, "adb executable (env TFMOBILE_ADB, else adb on PATH)")
flags.DEFINE_float("timeout", 300.0, "seconds to wait for the result")
flags.DEFINE_string("taskset", None, "CPU affinity mask for binary mode, e.g. f0 (big cores)")
flags.DEFINE_bool("op_profiling", False, "binary mode: --enable_op_profiling=true, parse the per-op table")
flags.DEFINE_string("out", None, "also write the result JSON here (atomically)")
flags.DEFINE_bool("json", False, "print one JSON object")
FLAGS = flags.FLAGS


def main(argv):
    from tfmobile import bench
    from tfmobile.errors import UserError
    from tfmobile.io import write_json

    if not FLAGS.tflite:
        raise UserError("--tflite is required")
    _cli.check_output(FLAGS.out, flag="out")
    opts = dict(serial=FLAGS.serial, mode=FLAGS.mode, delegate=FLAGS.delegate, apk=FLAGS.apk, binary=FLAGS.binary,
                adb=FLAGS.adb, timeout=FLAGS.timeout, taskset=FLAGS.taskset, op_profiling=FLAGS.op_profiling)
    _cli.progress(f"benchmarking {FLAGS.tflite} on Android ({FLAGS.mode}, {FLAGS.delegate}, {FLAGS.threads} thread(s))")
    res = bench.measure(FLAGS.tflite, backend="android", threads=FLAGS.threads, runs=FLAGS.runs,
                        warmup=FLAGS.warmup, **opts)
    if FLAGS.out:
        write_json(FLAGS.out, res)
    keys = ("backend", "serial", "threads", "runs", "init_ms", "mean_ms", "median_ms", "p90_ms", "std_ms", "min_ms",
            "cv", "model_bytes", "num_ops")
    _cli.emit(res, FLAGS.json, lambda r: "\n".join(f"{k}: {r.get(k)}" for k in keys))
    return 0


if __name__ == "__main__":
    _cli.run(main)
