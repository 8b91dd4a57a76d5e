"""Keras (zoo, saved, or tfmot QAT) model -> TFLite flatbuffer bytes in four modes.

    float    float32 weights and activations
    fp16     float16 weights (dequantized to float32 at load time), float activations
    dynamic  int8 weights, float activations (weights quantized on the fly per op)
    int8     full-integer: per-channel int8 weights, int8 activations, int8 (or uint8/float) I/O;
             calibrated on real images (the embedded Fashion-MNIST subset by default)

The conversion itself is TensorFlow's TFLiteConverter (``from_keras_model``); nothing here runs a
.tflite (that is ai-edge-litert's job, see ``verify``).
"""
import contextlib
import os
import sys
import warnings

import numpy as np

import tfmobile  # noqa: F401  (legacy Keras before TensorFlow)
from tfmobile.convert import flatbuffer
from tfmobile.errors import UserError

MODES = ("float", "fp16", "dynamic", "int8")
IO_TYPES = ("int8", "uint8", "float")
DEFAULT_NUM_CALIBRATION = 100


def input_shape_of(model):
    shape = model.input_shape
    if isinstance(shape, list):
        if len(shape) != 1:
            raise UserError(f"model has {len(shape)} inputs; only single-input image models are supported")
        shape = shape[0]
    hwc = tuple(shape[1:])
    if len(hwc) != 3 or any(v is None for v in hwc):
        raise UserError(f"model input must be a fixed (height, width, channels) image, got {shape}")
    return hwc


def representative_images(model, representative_data=None, num=DEFAULT_NUM_CALIBRATION,
                          calibration_dir=None, seed=0):
    """float32 [N,h,w,c] images in [-1, 1] for calibration.

    representative_data: None -> ``num`` real images (``calibration_dir`` of class-subfolder image
    files if given, else the embedded Fashion-MNIST); an array [N,h,w,c]; or the string "random"
    (uniform noise in [-1, 1], with a warning: calibration ranges from noise are not the ranges of
    real inputs, so accuracy suffers).
    """
    shape = input_shape_of(model)
    if isinstance(representative_data, str):
        if representative_data != "random":
            raise UserError(f"representative_data must be an array, None or 'random', "
                            f"got {representative_data!r}")
        warnings.warn("calibrating int8 on RANDOM data: quantization ranges will not match real "
                      "images and accuracy will suffer", stacklevel=2)
        sys.stderr.write("warning: calibrating on random data (asked for); int8 accuracy will suffer\n")
        rng = np.random.default_rng(seed)
        return rng.uniform(-1, 1, size=(num, *shape)).astype(np.float32)
    if representative_data is None:
        if calibration_dir:
            from tfmobile.data import image_dir_sample
            return image_dir_sample(calibration_dir, shape, num, seed=seed)
        from tfmobile.data import calibration_images
        return calibration_images(shape, n=num, seed=seed)
    x = np.asarray(representative_data, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != shape:
        raise UserError(f"representative data must be [N,{shape[0]},{shape[1]},{shape[2]}], got {list(x.shape)}")
    if len(x) == 0:
        raise UserError("representative data is empty")
    return x


@contextlib.contextmanager
def _quiet_fd2():
    """Silence the converter's C++ logging on fd 2 unless TFMOBILE_VERBOSE is set (errors re-raised)."""
    if os.environ.get("TFMOBILE_VERBOSE"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _converter(model):
    """A TFLiteConverter for ``model`` traced at batch 1 and frozen (no SavedModel round trip).

    ``from_keras_model`` first exports the model as a SavedModel, which re-traces every layer's
    call: measured 76 s of an int8 MobileNetV3Small 224 conversion on this machine. Converting the
    model's batch-1 concrete function through the frozen-graph path (``experimental_lower_to_saved_model
    = False``) skips that export and gives the same int8 graph, with static shapes (no
    SHAPE/STRIDED_SLICE/PACK ops in front of the classifier's Reshape).
    """
    import tensorflow as tf

    shape = input_shape_of(model)
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, *shape], tf.float32, name="input"))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.experimental_lower_to_saved_model = False
    return converter


def to_tflite(model, mode="float", representative_data=None, io="int8",
              num_calibration=DEFAULT_NUM_CALIBRATION, calibration_dir=None):
    """Convert a tf_keras model to .tflite bytes.

    mode: float | fp16 | dynamic | int8.  io (int8 only): int8 | uint8 | float input/output type.
    representative_data (int8 only): see ``representative_images``; None means real images.
    QAT models (tfmot quantize_model) go through the same path; TF 2.21 still wants a
    representative dataset for them when the I/O is integer, so one is always given.
    """
    import tensorflow as tf

    if mode not in MODES:
        raise UserError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if io not in IO_TYPES:
        raise UserError(f"unknown io type {io!r}; choose one of {', '.join(IO_TYPES)}")
    converter = _converter(model)
    if mode == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        images = representative_images(model, representative_data, num_calibration, calibration_dir)

        def gen():
            for i in range(len(images)):
                yield [images[i:i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = {"int8": tf.int8, "uint8": tf.uint8, "float": tf.float32}[io]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    try:
        with _quiet_fd2(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            data = converter.convert()
    except Exception as e:  # ConverterError and friends: one line naming the cause
        msg = " ".join(str(e).split())
        for marker in ("error: ", "Error: "):
            if marker in msg:
                msg = msg[msg.index(marker) + len(marker):]
                break
        raise UserError(f"TFLite conversion ({mode}) failed: {msg[:400]}") from None
    return bytes(data)


def tflite_ops(tflite_bytes):
    """Sorted unique builtin op names of a .tflite (custom ops as ``CUSTOM:<code>``)."""
    info = flatbuffer.parse(tflite_bytes)
    return sorted({op.name for op in info.ops})


def tflite_op_counts(tflite_bytes):
    """{op name: number of operators} for a .tflite."""
    counts = {}
    for op in flatbuffer.parse(tflite_bytes).ops:
        counts[op.name] = counts.get(op.name, 0) + 1
    return dict(sorted(counts.items()))


def tflite_io(tflite_bytes):
    """{"inputs": [...], "outputs": [...]} with dtype, shape, scale and zero_point per tensor."""
    info = flatbuffer.parse(tflite_bytes)
    return {"inputs": flatbuffer.io_details(info, "inputs"),
            "outputs": flatbuffer.io_details(info, "outputs")}
