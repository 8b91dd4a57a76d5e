"""int8 .tflite files of zoo models (and keras.applications references) for benchmarks, cached on disk.

Every model is converted the same way: ``tfmobile.convert.to_tflite(model, "int8", io="int8")`` with
8 real calibration images (latency depends on the graph, not on calibrated ranges), random weights.
"""
import os
import re
import sys

from tfmobile.errors import UserError
from tfmobile.io import write_bytes

DEFAULT_WORK_DIR = os.path.join(os.environ.get("TMPDIR", "/tmp"), "tfmobile_bench")


def _tag(name, res, alpha, extra):
    opts = "".join(f"_{k}{v}" for k, v in sorted(extra.items()))
    return re.sub(r"[^A-Za-z0-9_.-]", "", f"{name}_{res}_a{alpha}{opts}")


def convert_int8(model):
    from tfmobile.convert import to_tflite
    return to_tflite(model, "int8", io="int8", num_calibration=8)


def zoo_tflite(name, res=224, alpha=1.0, work_dir=None, classes=1000, verbose=True, **options):
    """Path of the int8 .tflite of zoo model ``name`` at ``res``x``res`` (built + converted if not cached)."""
    work_dir = work_dir or DEFAULT_WORK_DIR
    path = os.path.join(work_dir, _tag(name, res, alpha, dict(options, c=classes)) + ".tflite")
    if os.path.exists(path):
        return path
    from tfmobile import models
    if verbose:
        sys.stderr.write(f"[tfmobile.bench] converting {name} {res}x{res} alpha={alpha} to int8\n")
    model = models.build(name, input_shape=(res, res, 3), alpha=alpha, classes=classes, **options)
    write_bytes(path, convert_int8(model))
    return path


KERAS_APPS = {"keras_mbv2": "MobileNetV2", "keras_mbv3_small": "MobileNetV3Small",
              "keras_mbv3_large": "MobileNetV3Large", "keras_mbv1": "MobileNet"}


def keras_app_tflite(name, res=224, alpha=1.0, work_dir=None, classes=1000, verbose=True):
    """Same for tf_keras.applications (random weights; MobileNetV3 without its [0,255] Rescaling so it
    takes [-1,1] inputs like the zoo)."""
    if name not in KERAS_APPS:
        raise UserError(f"unknown keras.applications reference {name!r}; one of {', '.join(KERAS_APPS)}")
    work_dir = work_dir or DEFAULT_WORK_DIR
    path = os.path.join(work_dir, _tag(name, res, alpha, {"c": classes}) + ".tflite")
    if os.path.exists(path):
        return path
    import tfmobile  # noqa: F401
    import tf_keras as keras
    if verbose:
        sys.stderr.write(f"[tfmobile.bench] converting keras.applications.{KERAS_APPS[name]} {res}x{res} "
                         f"alpha={alpha} to int8\n")
    fn = getattr(keras.applications, KERAS_APPS[name])
    kw = dict(input_shape=(res, res, 3), alpha=alpha, weights=None, classes=classes)
    if "V3" in KERAS_APPS[name]:
        kw["include_preprocessing"] = False
    write_bytes(path, convert_int8(fn(**kw)))
    return path
