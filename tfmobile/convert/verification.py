"""Check a conversion: the .tflite in ai-edge-litert vs the Keras model on the same real images.

Reports top-1 agreement, mean / max abs error of the dequantized outputs, and (for every mode) the
operators that compute in float, found from the tensor types in the flatbuffer.
"""
import numpy as np

import tfmobile  # noqa: F401
from tfmobile.convert import flatbuffer
from tfmobile.errors import UserError

DEFAULT_NUM_VERIFY = 100


def verification_images(input_shape, n=DEFAULT_NUM_VERIFY, data_dir=None, seed=1):
    """``n`` real Fashion-MNIST *test* images (disjoint from the training-split calibration images)
    preprocessed to float32 [-1, 1] for ``input_shape``, and their labels."""
    from tfmobile.data import load_fashion_mnist, preprocess

    data = load_fashion_mnist(data_dir, subset=data_dir is None)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(data.x_test), size=min(n, len(data.x_test)), replace=False))
    return preprocess(data.x_test[idx], input_shape), data.y_test[idx]


def interpreter(tflite_bytes, num_threads=1, reference_kernels=False):
    """A LiteRT interpreter, tensors allocated; ``reference_kernels`` selects LiteRT's reference (BUILTIN_REF) kernels,
    the ones TFLite-Micro's kernels are ported from, instead of the optimized / XNNPACK ones."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {"experimental_op_resolver_type": OpResolverType.BUILTIN_REF} if reference_kernels else {}
    try:
        it = Interpreter(model_content=bytes(tflite_bytes), num_threads=num_threads, **kwargs)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise UserError(f"LiteRT cannot load the model: {str(e).splitlines()[0]}") from None
    return it


def quantize(x, dtype, scale, zero_point):
    """float -> integer tensor with the given affine parameters (round half away, saturating)."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q, scale, zero_point):
    return ((np.asarray(q, np.float64) - zero_point) * scale).astype(np.float32)


def run_tflite(tflite_bytes, images, num_threads=1, return_raw=False):
    """Run a single-input .tflite on float images [N,h,w,c] one at a time in LiteRT.

    Returns float32 outputs [N, ...] (dequantized when the output is integer) and, with
    return_raw, also the raw output tensors and the raw (possibly quantized) inputs fed.
    """
    it = interpreter(tflite_bytes, num_threads)
    ind = it.get_input_details()
    outd = it.get_output_details()
    if len(ind) != 1:
        raise UserError(f"expected a single-input model, got {len(ind)} inputs")
    ind, outd = ind[0], outd[0]
    x = np.asarray(images, np.float32)
    want = tuple(ind["shape"][1:])
    if tuple(x.shape[1:]) != want:
        raise UserError(f"images are {list(x.shape[1:])}, the model input is {list(want)}")
    in_scale, in_zp = ind["quantization"]
    out_scale, out_zp = outd["quantization"]
    outs, raws, fed = [], [], []
    for i in range(len(x)):
        xi = x[i:i + 1]
        if np.issubdtype(ind["dtype"], np.integer):
            xi = quantize(xi, ind["dtype"], in_scale, in_zp)
        it.set_tensor(ind["index"], xi)
        it.invoke()
        raw = it.get_tensor(outd["index"]).copy()
        out = dequantize(raw, out_scale, out_zp) if np.issubdtype(outd["dtype"], np.integer) else raw
        outs.append(out[0].astype(np.float32))
        if return_raw:
            raws.append(raw[0])
            fed.append(xi[0])
    result = np.stack(outs)
    if return_raw:
        return result, np.stack(raws), np.stack(fed)
    return result


def keras_outputs(keras_model, images, batch_size=32):
    out = []
    for i in range(0, len(images), batch_size):
        out.append(np.asarray(keras_model(images[i:i + batch_size], training=False), np.float32))
    return np.concatenate(out).reshape(len(images), -1)


def float_ops(tflite_bytes):
    """Operators of a .tflite that compute in float, as ``INDEX:OP`` (see flatbuffer.float_ops)."""
    return flatbuffer.float_ops(flatbuffer.parse(tflite_bytes))


def verify(tflite_bytes, keras_model, images, labels=None, num_threads=1):
    """Compare a .tflite (LiteRT) with its Keras model on the same float images [N,h,w,c].

    Returns {n, top1_agreement, mean_abs_error, max_abs_error, output_range, float_ops,
    [keras_accuracy, tflite_accuracy when labels are given]}. The errors are on the outputs as the
    model defines them (probabilities after a softmax, logits otherwise), dequantized.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise UserError(f"verification images must be a non-empty [N,h,w,c] array, got {list(images.shape)}")
    lite = run_tflite(tflite_bytes, images, num_threads).reshape(len(images), -1)
    ref = keras_outputs(keras_model, images)
    if lite.shape != ref.shape:
        raise UserError(f"TFLite output {list(lite.shape)} does not match Keras output {list(ref.shape)}")
    err = np.abs(lite - ref)
    result = {
        "n": int(len(images)),
        "top1_agreement": float(np.mean(lite.argmax(1) == ref.argmax(1))),
        "mean_abs_error": float(err.mean()),
        "max_abs_error": float(err.max()),
        "keras_output_range": [float(ref.min()), float(ref.max())],
        "float_ops": float_ops(tflite_bytes),
    }
    if labels is not None and ref.shape[1] > int(np.max(labels)):
        labels = np.asarray(labels)
        result["keras_accuracy"] = float(np.mean(ref.argmax(1) == labels))
        result["tflite_accuracy"] = float(np.mean(lite.argmax(1) == labels))
    return result


def require_integer_only(tflite_bytes, what="int8 model"):
    """UserError listing the ops that run in float, if any (the --int8 guarantee)."""
    found = float_ops(tflite_bytes)
    if found:
        raise UserError(f"{what} is not integer-only: {len(found)} op(s) run in float: {', '.join(found)}")
    return found
