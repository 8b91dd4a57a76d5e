"""What a converted model weighs: bytes after gzip (how well its weights compress) and the zero
weights inside the .tflite (does pruning's sparsity survive conversion to int8?)."""
import gzip
import os

import numpy as np

from tfmobile.convert import flatbuffer
from tfmobile.convert.verification import interpreter
from tfmobile.errors import UserError

# op -> position of its weight tensor among the op's inputs
WEIGHT_INPUT = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1}


def gzip_size(path_or_bytes):
    """Bytes after gzip -9 of a file or a bytes object: how well its weights would compress."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
    else:
        path = os.fspath(path_or_bytes)
        if not os.path.isfile(path):
            raise UserError(f"no such file: {path}")
        with open(path, "rb") as f:
            data = f.read()
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def tflite_sparsity(tflite):
    """Sparsity of the weight tensors inside a .tflite (bytes or path), read back through the
    LiteRT interpreter: per weight tensor and totals, with their dtype (int8 after QAT)."""
    data = tflite if isinstance(tflite, (bytes, bytearray)) else flatbuffer.read_tflite(os.fspath(tflite))
    info = flatbuffer.parse(data)
    it = interpreter(data)
    details = {t["index"]: t for t in it.get_tensor_details()}
    tensors = {}
    for op in info.ops:
        pos = WEIGHT_INPUT.get(op.name)
        if pos is None or len(op.inputs) <= pos:
            continue
        idx = int(op.inputs[pos])
        if idx < 0 or idx in tensors:
            continue
        try:
            w = it.get_tensor(idx)
        except ValueError:
            continue
        d = details[idx]
        zp = d["quantization_parameters"]["zero_points"]
        zero = int(zp[0]) if len(zp) == 1 else 0      # per-channel weights are symmetric (zp 0)
        n, z = int(w.size), int(np.sum(w == zero))
        tensors[d["name"]] = {"op": op.name, "dtype": np.dtype(w.dtype).name,
                              "shape": list(w.shape), "params": n, "zeros": z,
                              "sparsity": round(z / n, 4) if n else 0.0}
    total = sum(t["params"] for t in tensors.values())
    zeros = sum(t["zeros"] for t in tensors.values())
    conv_fc = [t for t in tensors.values() if t["op"] != "DEPTHWISE_CONV_2D"]
    ct = sum(t["params"] for t in conv_fc)
    cz = sum(t["zeros"] for t in conv_fc)
    return {"tensors": tensors, "params": total, "zeros": zeros,
            "sparsity": round(zeros / total, 4) if total else 0.0,
            "conv_fc_params": ct, "conv_fc_sparsity": round(cz / ct, 4) if ct else 0.0}
