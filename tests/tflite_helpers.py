"""Test helpers shared by the analysis and model tests: a random-calibrated int8 conversion and the
op count / peak activation bytes of a .tflite, computed with the same liveness rule as analysis."""
import numpy as np

import tfmobile  # noqa: F401
import tensorflow as tf


def to_int8(model, n=4):
    shape = model.input_shape[1:]
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, *shape], tf.float32))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    rng = np.random.default_rng(0)

    def gen():
        for _ in range(n):
            yield [rng.uniform(-1, 1, (1, *shape)).astype(np.float32)]

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def tflite_graph_stats(data):
    """(ops, peak activation bytes) of a .tflite with the same liveness rule as analysis."""
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=data)
    ops = it._get_ops_details()
    td = {t["index"]: t for t in it.get_tensor_details()}
    inputs = {d["index"] for d in it.get_input_details()}
    outputs = {d["index"] for d in it.get_output_details()}
    act = {o for op in ops for o in op["outputs"]} | inputs
    first = {i: -1 for i in inputs}
    last = {}
    for k, op in enumerate(ops):
        for o in op["outputs"]:
            first[o] = k
        for i in op["inputs"]:
            if i in act:
                last[i] = max(last.get(i, -1), k)
    for o in outputs:
        last[o] = len(ops)

    def size(i):
        return int(np.prod(td[i]["shape"])) * np.dtype(td[i]["dtype"]).itemsize

    peak = max(sum(size(t) for t in act if first[t] <= k <= last.get(t, first[t]))
               for k in range(len(ops)))
    return len(ops), peak
