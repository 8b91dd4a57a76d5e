"""Export a model to TFLite (float32 / float16 / dynamic-range / full-integer int8) and TFLite-Micro.

    python -m pipelines.export --model mbv3_small --int8
    python -m pipelines.export --model mbv3_small --int8 --tflm --mcu cortex_m7
    python -m pipelines.export --model mbv2 --weights runs/mbv2/checkpoint --int8 --tflm --json
    python -m pipelines.export --model path/to/saved_model.h5 --float16

Defaults: 224x224x3 input and alpha 1.0 (the papers' configuration, so op lists, sizes and arenas
are those of the published backbones) with a 10-class head (the embedded Fashion-MNIST, the data
pipelines.train trains on; --classes 1000 gives the papers' ImageNet head, +1.0 M parameters for
MobileNetV3-Small). A checkpoint given with --weights brings its own architecture (resolution,
width, classes) from its spec.json. With no mode flag the
export is float32. Calibration and verification use real Fashion-MNIST images (embedded subset),
resized and grey -> 3 channels, in [-1, 1]. Without --weights the model is randomly initialised,
and the output says so.

Artifacts (atomically, into --output_dir, default tflite_models/): NAME_MODE.tflite + NAME_MODE.json,
and with --tflm NAME_int8_tflm.{tflite,cc,h,json} + NAME_int8_tflm_op_resolver.h.
"""
import os

from absl import flags

from pipelines import _cli
from tfmobile.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "zoo model name (tfmobile.models.available()) or a saved Keras model "
                    "(.h5 / .keras file or SavedModel directory).")
flags.DEFINE_float("alpha", 1.0, "width multiplier (zoo models).")
flags.DEFINE_integer("resolution", 224, "input resolution, square (zoo models).", upper_bound=_cli.MAX_RESOLUTION)
flags.DEFINE_integer("classes", 10, "number of classes (zoo models); 10 = the embedded Fashion-MNIST "
                     "(what pipelines.train trains); 1000 = the papers' ImageNet head.")
flags.DEFINE_string("weights", None, "weights file (save_weights .h5 / TF checkpoint prefix) or a "
                    "checkpoint directory written by pipelines.train; default: random initialisation.")
flags.DEFINE_boolean("float16", False, "float16 weights.")
flags.DEFINE_boolean("dynamic", False, "dynamic-range quantization (int8 weights, float activations).")
flags.DEFINE_boolean("int8", False, "full-integer int8 (per-channel weights, int8 activations and I/O).")
flags.DEFINE_boolean("tflm", False, "also export for TFLite-Micro: C array, op resolver, measured arena "
                     "(int8; implies --int8).")
flags.DEFINE_string("mcu", None, "check the TFLM artifact against an MCU budget: "
                    "cortex_m7 (512 kB SRAM, 2 MB flash), cortex_m4, cortex_m0plus, cortex_m33, esp32s3, cortex_m55.")
flags.DEFINE_float("sram_kb", None, "SRAM budget in kB (overrides the --mcu preset).")
flags.DEFINE_float("flash_kb", None, "flash budget in kB (overrides the --mcu preset).")
flags.DEFINE_enum("io", "int8", ["int8", "uint8", "float"], "input/output type of int8 models.")
flags.DEFINE_string("calibration_dir", None, "calibrate on images in class subfolders of this "
                    "directory instead of the embedded Fashion-MNIST.")
flags.DEFINE_integer("num_calibration", 100, "calibration images for int8.")
flags.DEFINE_boolean("random_calibration", False, "calibrate int8 on random noise (warning: poor accuracy).")
flags.DEFINE_integer("num_verify", 100, "real images on which the .tflite is compared with Keras.")
flags.DEFINE_integer("seed", 0, "random seed of the initialisation when no --weights are given "
                     "(reproducible artifacts).")
flags.DEFINE_string("name", None, "artifact base name (default: the model name).")
flags.DEFINE_string("output_dir", "tflite_models", "where the artifacts go.")
flags.DEFINE_boolean("json", False, "print exactly one JSON object on stdout.")


def _modes():
    chosen = [m for m, on in (("fp16", FLAGS.float16), ("dynamic", FLAGS.dynamic), ("int8", FLAGS.int8)) if on]
    if len(chosen) > 1:
        names = {"fp16": "--float16", "dynamic": "--dynamic", "int8": "--int8"}
        raise UserError(f"contradicting flags: {' and '.join(names[m] for m in chosen)}; choose one mode per export")
    if FLAGS.tflm and chosen and chosen != ["int8"]:
        raise UserError(f"contradicting flags: --tflm is int8-only, not --{'float16' if chosen == ['fp16'] else chosen[0]}")
    if FLAGS.tflm:
        return ["int8"]
    return chosen or ["float"]


def _present(name):
    return FLAGS[name].present


def _load_model():
    """(keras model, default artifact name, weights description)."""
    from tfmobile import models

    model_arg = FLAGS.model
    if not model_arg:
        raise UserError(f"--model is required: one of {', '.join(models.available())} or a saved Keras model path")
    for key in ("resolution", "classes"):
        if getattr(FLAGS, key) < 1:
            raise UserError(f"--{key} must be a positive integer, got {getattr(FLAGS, key)}")
    if not FLAGS.alpha > 0:
        raise UserError(f"--alpha must be positive, got {FLAGS.alpha}")
    if model_arg in models.available():
        return _zoo_model(model_arg)
    if os.path.exists(model_arg):
        if FLAGS.weights:
            raise UserError("--weights goes with a zoo model; a saved Keras model file has its own weights")
        return _saved_model(model_arg)
    raise UserError(f"unknown model {model_arg!r}: not a zoo model ({', '.join(models.available())}) "
                    f"nor an existing saved-model path")


def _zoo_model(name):
    from tfmobile import models

    weights = FLAGS.weights
    if weights and os.path.isdir(weights):
        from tfmobile import train

        spec = train.checkpoint_spec(weights)
        if spec.family != name:
            raise UserError(f"checkpoint {weights} holds a {spec.name} ({spec.family}), not a {name}")
        expect = None
        if any(_present(k) for k in ("alpha", "resolution", "classes")):
            expect = models.get_spec(name, input_shape=(FLAGS.resolution, FLAGS.resolution, 3),
                                     alpha=FLAGS.alpha, classes=FLAGS.classes,
                                     **_momentum_of(spec))
        model = train.load_checkpoint(weights, expect=expect)
        info = train.checkpoint_info(weights)
        return model, name, {"checkpoint": os.path.abspath(info["path"]),
                             "compression": info.get("compression"), "epoch": info.get("epoch"),
                             "metrics": info.get("metrics")}
    if weights and not os.path.exists(weights) and not os.path.exists(weights + ".index"):
        raise UserError(f"weights file not found: {weights}")
    if not weights:
        import tf_keras as keras
        keras.utils.set_random_seed(FLAGS.seed)
    model = models.build(name, weights=weights,
                         input_shape=(FLAGS.resolution, FLAGS.resolution, 3),
                         alpha=FLAGS.alpha, classes=FLAGS.classes)
    return model, name, ({"file": os.path.abspath(weights)} if weights else None)


def _momentum_of(spec):
    m = spec.options.get("bn_momentum") if isinstance(spec.options, dict) else None
    return {"bn_momentum": m} if m is not None else {}


def _saved_model(path):
    import tf_keras as keras

    from tfmobile.models.layers import CUSTOM_OBJECTS

    try:
        model = keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False)
    except Exception as e:  # noqa: BLE001  (any load failure is the user's file)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load Keras model {path}: {first}") from None
    stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    return model, stem, {"saved_model": os.path.abspath(path)}


def _render(r):
    lines = []
    if r["randomly_initialized"]:
        lines.append("NOTE: no --weights given: the model is RANDOMLY INITIALISED (sizes, ops and arena are "
                     "real; accuracy is meaningless)")
    for a in r["artifacts"]:
        v = a["verification"]
        lines.append(f"{a['mode']:>7}: {a['path']}  {a['size_bytes'] / 1024:.1f} kB  "
                     f"io {a['inputs'][0]['dtype']}  ops {','.join(a['ops'])}")
        lines.append(f"         LiteRT vs Keras on {v['n']} real images: top-1 agreement {v['top1_agreement']:.3f}, "
                     f"mean abs error {v['mean_abs_error']:.3g}, float ops: {', '.join(v['float_ops']) or 'none'}")
    t = r.get("tflm")
    if t:
        lines.append(f"   tflm: {t['files']['tflite']}  {t['model_bytes'] / 1024:.1f} kB, arena {t['arena_bytes']} bytes "
                     f"(measured, {t['arena_probes']} probes); TFLM vs LiteRT max {t['tflm_vs_litert_max_lsb']} LSB (reference kernels), "
                     f"{t.get('tflm_vs_litert_optimized_max_lsb')} LSB (optimized kernels)")
        lines.append(f"         {t['files']['cc']}, {t['files']['h']}, {t['files']['resolver']}")
        lines.append(f"         firmware output: {t['firmware_output']}")
        if t.get("budget"):
            lines.append(f"         {t['budget']['summary']}")
    lines.append(f"time: {r['wall_s']:.1f} s wall, {r['cpu_total_s']:.1f} s CPU "
                 f"({', '.join(f'{k} {v}' for k, v in r['timings_s'].items())})")
    return "\n".join(lines)


def _cpu():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv):
    import time

    t0, c0 = time.perf_counter(), _cpu()
    if not FLAGS.model:
        raise UserError("--model is required: a zoo model name (e.g. mbv3_small) or a saved Keras model path")
    modes = _modes()
    if not FLAGS.tflm and (FLAGS.mcu or FLAGS.sram_kb is not None or FLAGS.flash_kb is not None):
        raise UserError("--mcu/--sram_kb/--flash_kb check the TFLite-Micro artifact: add --tflm")
    if _present("io") and "int8" not in modes:
        raise UserError(f"--io sets the input/output type of int8 models; it does not apply to {modes[0]}")
    if FLAGS.random_calibration and FLAGS.calibration_dir:
        raise UserError("contradicting flags: --random_calibration and --calibration_dir")
    if (FLAGS.random_calibration or FLAGS.calibration_dir) and "int8" not in modes:
        raise UserError("calibration flags apply to --int8/--tflm only")
    if FLAGS.num_calibration < 1 or FLAGS.num_verify < 1:
        raise UserError("--num_calibration and --num_verify must be >= 1")
    from tfmobile.convert import tflm as tflm_mod
    from tfmobile.convert.exporter import check_output_dir, export

    if FLAGS.tflm:
        tflm_mod.mcu_budget(FLAGS.mcu, FLAGS.sram_kb, FLAGS.flash_kb)
    if FLAGS.calibration_dir:
        from tfmobile.data import list_image_dir
        list_image_dir(FLAGS.calibration_dir)
    check_output_dir(FLAGS.output_dir, create=False)   # fail before the slow part, create nothing yet

    t, c = time.perf_counter(), _cpu()
    import tensorflow  # noqa: F401  (timed on its own: it is a large part of a cold run)
    import tf_keras  # noqa: F401
    t_import, c_import = time.perf_counter() - t, _cpu() - c
    _cli.progress("building the model")
    t, c = time.perf_counter(), _cpu()
    model, default_name, weights = _load_model()
    t_build, c_build = time.perf_counter() - t, _cpu() - c
    if weights is None:
        _cli.progress("no --weights: the model is randomly initialised")
    rep = "random" if FLAGS.random_calibration else None
    result = export(model, FLAGS.name or default_name, modes, FLAGS.output_dir, representative_data=rep,
                    io=FLAGS.io, tflm=FLAGS.tflm, mcu=FLAGS.mcu, sram_kb=FLAGS.sram_kb, flash_kb=FLAGS.flash_kb,
                    num_calibration=FLAGS.num_calibration, calibration_dir=FLAGS.calibration_dir,
                    num_verify=FLAGS.num_verify, weights=weights, progress=_cli.progress)
    result["timings_s"] = {"import_tf": round(t_import, 2), "build": round(t_build, 2), **result["timings_s"]}
    result["cpu_s"] = {"import_tf": round(c_import, 2), "build": round(c_build, 2), **result["cpu_s"]}
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    result["cpu_total_s"] = round(_cpu() - c0, 2)
    _cli.emit(result, FLAGS.json, _render)
    return 0


if __name__ == "__main__":
    _cli.run(main)
