"""The accuracy that counts: exported .tflite models run in LiteRT on labelled images, and the
measurements of one exported variant (accuracy, sizes, sparsity, float ops, latency, TFLM arena).
"""
import os
import time

import numpy as np

from tfmobile import convert, quiet_startup
from tfmobile.bench import measure
from tfmobile.data import preprocess
from tfmobile.errors import UserError
from tfmobile.io import write_bytes


def evaluate_tflite(tflite, images, labels, batch_size=250, num_threads=None):
    """Top-1 accuracy of a .tflite (path or bytes) run in LiteRT on uint8 images.

    Inputs are preprocessed to [-1, 1] and, for int8/uint8 inputs, quantized with the input
    tensor's own scale / zero point; outputs are argmax'ed (dequantized order is the same).
    Returns {"accuracy", "n", "seconds", "input_dtype"}.
    """
    out = predict_tflite(tflite, images, batch_size, num_threads)
    correct = int((out["predictions"] == np.asarray(labels)).sum())
    return {"accuracy": correct / len(out["predictions"]), "n": int(len(out["predictions"])),
            "seconds": out["seconds"], "input_dtype": out["input_dtype"]}


def predict_tflite(tflite, images, batch_size=250, num_threads=None):
    """The top-1 class of every image (``evaluate_tflite``'s inference; per-image answers let a benchmark
    resample the test set). Returns {"predictions": int array, "seconds", "input_dtype"}."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(tflite, (str, os.PathLike)):
        with open(tflite, "rb") as f:
            tflite = f.read()
    interp = Interpreter(model_content=bytes(tflite), num_threads=num_threads or os.cpu_count())
    inp = interp.get_input_details()[0]
    shape = tuple(int(v) for v in inp["shape"][1:])
    x_all = preprocess(images, shape)
    bs = batch_size
    try:
        interp.resize_tensor_input(inp["index"], [bs, *shape])
        with quiet_startup():  # LiteRT announces its XNNPACK delegate on stderr here
            interp.allocate_tensors()
    except (RuntimeError, ValueError):
        bs = 1
        interp = Interpreter(model_content=bytes(tflite), num_threads=num_threads or os.cpu_count())
        interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    scale, zp = inp["quantization"]
    t0 = time.time()
    predictions = []
    for s in range(0, len(x_all), bs):
        xb = x_all[s:s + bs]
        n = len(xb)
        if n < bs:
            xb = np.concatenate([xb, np.zeros((bs - n, *shape), np.float32)])
        if inp["dtype"] in (np.int8, np.uint8):
            info = np.iinfo(inp["dtype"])
            xb = np.clip(np.round(xb / scale + zp), info.min, info.max).astype(inp["dtype"])
        else:
            xb = xb.astype(inp["dtype"])
        interp.set_tensor(inp["index"], xb)
        interp.invoke()
        predictions.append(interp.get_tensor(out["index"]).reshape(bs, -1)[:n].argmax(-1))
    return {"predictions": np.concatenate(predictions) if predictions else np.zeros(0, np.int64),
            "seconds": round(time.time() - t0, 2), "input_dtype": np.dtype(inp["dtype"]).name}


def measure_variant(name, tflite_bytes, output_dir, x_test, y_test, bench_runs=50, threads=1,
                    tflm=False, bench=True, keras_model=None):
    """Write OUTPUT_DIR/tflite/NAME.tflite; LiteRT test accuracy, sizes, sparsity, latency, TFLM."""
    path = os.path.join(output_dir, "tflite", f"{name}.tflite")
    write_bytes(path, tflite_bytes)
    acc = evaluate_tflite(tflite_bytes, x_test, y_test)
    ops = convert.tflite_ops(tflite_bytes)
    sp = convert.tflite_sparsity(tflite_bytes)
    row = {"variant": name, "path": os.path.abspath(path), "accuracy": acc["accuracy"],
           "test_images": acc["n"], "input_dtype": acc["input_dtype"],
           "size_bytes": len(tflite_bytes), "gzip_bytes": convert.gzip_size(tflite_bytes),
           "weight_sparsity": sp["sparsity"], "conv_fc_sparsity": sp["conv_fc_sparsity"],
           "float_ops": convert.float_ops(tflite_bytes) if acc["input_dtype"] != "float32" else None,
           "ops": ops}
    if bench:
        # noisy timings are the report's note, not a console line per variant of every default run
        m = measure(path, backend="litert", threads=threads, runs=bench_runs, warmup=min(10, bench_runs),
                    warn=False)
        row["latency_ms"] = {k: m.get(k) for k in ("mean_ms", "median_ms", "p90_ms", "std_ms", "min_ms", "cv")}
        row["latency_warnings"] = list(m.get("warnings") or [])
        row["latency_backend"] = {"backend": m.get("backend"), "threads": threads, "runs": bench_runs,
                                  "device": m.get("device")}
    if tflm:
        try:
            t = convert.to_tflm(tflite_bytes, name, os.path.join(output_dir, "tflm"))
        except UserError as e:  # e.g. TFLM-vs-LiteRT check failed: report it, keep the other results
            row["tflm"] = {"error": str(e)}
        else:
            row["tflm"] = {"arena_bytes": t["arena_bytes"], "files": t.get("files"),
                           "tflm_vs_litert_max_lsb": t.get("tflm_vs_litert_max_lsb")}
    return row
