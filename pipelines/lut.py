"""Per-layer latency lookup table: build it from models, predict a model's latency from it.

    python -m pipelines.lut build --tflite a.tflite,b.tflite --lut lut.json [--threads 1] --json
    python -m pipelines.lut build --model mbv2 --alpha 0.35 --resolution 96 --lut lut.json --json
    python -m pipelines.lut predict --tflite a.tflite --lut lut.json [--measure_missing] [--layers] --json
    python -m pipelines.lut predict --spec spec.json --lut lut.json --json    (converted to int8 first)

predict's ``predicted_ms`` is on ``clock`` (given beside it with ``threads``): at 1 thread the invoking
thread's CPU time, else the wall clock; ``pipelines.benchmark``'s ``clock_median_ms`` is on the same one.

The LUT is a JSON cache keyed by device (CPU model string, machine, backend, threads, runtime) and by
op configuration (op type, input/output shapes and dtypes, weight shapes, strides, padding, fused
activation, ...); entries are reused across models. Backend: litert.
"""
import os
import sys

import tfmobile  # noqa: F401
from absl import flags

from pipelines import _cli

COMMANDS = ("build", "predict")
CLOCK_TEXT = {"cpu": "median CPU time of the invoking thread (1 thread: XNNPACK computes in it; no waiting for "
                     "a CPU another process holds)",
              "wall": "median wall-clock time"}

flags.DEFINE_list("tflite", None, ".tflite model(s)")
flags.DEFINE_string("spec", None, "model spec JSON (predict/build: converted to int8 first)")
flags.DEFINE_string("model", None, "zoo model name (converted to int8 first)")
flags.DEFINE_float("alpha", 1.0, "--model width multiplier")
flags.DEFINE_integer("resolution", 224, "--model input resolution", upper_bound=_cli.MAX_RESOLUTION)
flags.DEFINE_integer("classes", 1000, "--model classes")
flags.DEFINE_string("work_dir", None, "cache for --model conversions (default /tmp/tfmobile_bench)")
flags.DEFINE_string("lut", None, "LUT JSON file (created by build if missing)")
flags.DEFINE_integer("threads", 1, "interpreter threads (part of the device key)")
flags.DEFINE_integer("runs", 60, "build: timed invokes per one-op model")
flags.DEFINE_bool("remeasure", False, "build: measure configurations again even when cached")
flags.DEFINE_list("calibrate", None, "build: whole-model .tflite files (not the ones you will predict) "
                  "timed with the LUT to measure the context scale that predict applies")
flags.DEFINE_bool("measure_missing", False, "predict: measure configurations the LUT lacks (and save)")
flags.DEFINE_bool("layers", False, "predict: include the per-op breakdown")
flags.DEFINE_bool("json", False, "print one JSON object")
FLAGS = flags.FLAGS

_command = None


def _models():
    from tfmobile.errors import UserError
    out = list(FLAGS.tflite or [])
    if FLAGS.spec:
        out.append(FLAGS.spec)
    if FLAGS.model:
        from tfmobile.bench.zoo import zoo_tflite
        out.append(zoo_tflite(FLAGS.model, FLAGS.resolution, FLAGS.alpha, work_dir=FLAGS.work_dir,
                              classes=FLAGS.classes))
    if not out:
        raise UserError("give the model(s): --tflite PATH[,PATH...], --spec SPEC.json or --model NAME")
    return out


def main(argv):
    from tfmobile.bench import lut as L
    from tfmobile.errors import UserError

    if not FLAGS.lut:
        raise UserError("--lut PATH is required")
    if _command == "build" or FLAGS.measure_missing:   # these write the LUT
        _cli.check_output(FLAGS.lut, flag="lut")
    models = _models()
    if _command == "build":
        if FLAGS.runs < 5:
            raise UserError(f"--runs must be >= 5, got {FLAGS.runs}")
        calibrate = FLAGS.calibrate or []
        missing = [c for c in calibrate if not os.path.isfile(c)]
        if missing:
            raise UserError(f"no such .tflite for --calibrate: {', '.join(missing)}")
        # calibration needs every configuration measured in one worker batch (same machine state)
        res = L.build_lut(models, FLAGS.lut, threads=FLAGS.threads, runs=FLAGS.runs, remeasure=FLAGS.remeasure,
                          calibrate=calibrate or None, batch=10**6 if calibrate else 200)
        res["command"] = "build"
    else:
        if len(models) != 1:
            raise UserError(f"predict takes one model, got {len(models)}")
        d = L.predict_detail(models[0], FLAGS.lut, threads=FLAGS.threads, measure_missing=FLAGS.measure_missing,
                             verbose=True)
        # the clock it predicts, so that it is compared with pipelines.benchmark's clock_median_ms (same clock)
        res = {"command": "predict", "model": models[0], "predicted_ms": d["predicted_ms"], "clock": d["clock"],
               "clock_text": CLOCK_TEXT[d["clock"]], "threads": FLAGS.threads,
               "compare_with": "clock_median_ms of pipelines.benchmark --threads "
                               f"{FLAGS.threads} (clock {d['clock']})",
               "overhead_ms": d["overhead_ms"], "num_ops": d["num_ops"], "device_key": d["device_key"],
               "measured_missing": d["measured_missing"], "lut": FLAGS.lut}
        if FLAGS.layers:
            res["layers"] = d["layers"]
    _cli.emit(res, FLAGS.json)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        _cli.fail(f"usage: python -m pipelines.lut {{{'|'.join(COMMANDS)}}} [flags]; got "
                  f"{sys.argv[1] if len(sys.argv) > 1 else 'no command'}")
    _command = sys.argv.pop(1)
    _cli.run(main)
