"""TensorFlow Lite for Microcontrollers export: C array, op resolver, measured arena, MCU budget.

The tensor arena is *measured*: the int8 model is loaded into tflite-micro's Python interpreter with
a given arena and the smallest size that allocates is found by bisection (16-byte steps), then one
inference runs at that size and its output is compared with LiteRT's on the same int8 input. All
TFLM calls happen in a child process (``_tflm_child``) because the TFLM runtime aborts or crashes
the process on some inputs (see docs/export.md: int8 SOFTMAX with a tiny input scale or >= 2048
elements aborts; an arena of a few hundred bytes segfaults).
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile

import numpy as np

from tfmobile import io as tio
from tfmobile.convert import flatbuffer
from tfmobile.errors import UserError

# SRAM / flash of common MCU targets (kB). cortex_m7 is the issue's reference budget.
MCU_PRESETS = {
    "cortex_m7": {"sram_kb": 512, "flash_kb": 2048, "example": "reference budget of the issue (Cortex-M7 class, e.g. STM32F7/H7 parts)"},
    "cortex_m4": {"sram_kb": 256, "flash_kb": 1024, "example": "nRF52840 (Arduino Nano 33 BLE Sense)"},
    "cortex_m0plus": {"sram_kb": 264, "flash_kb": 2048, "example": "RP2040 (Raspberry Pi Pico, 2 MB QSPI flash)"},
    "cortex_m33": {"sram_kb": 256, "flash_kb": 1024, "example": "nRF5340 application core"},
    "esp32s3": {"sram_kb": 512, "flash_kb": 8192, "example": "ESP32-S3 internal SRAM, 8 MB flash module (no PSRAM)"},
    "cortex_m55": {"sram_kb": 1024, "flash_kb": 4096, "example": "Cortex-M55 class (e.g. Alif Ensemble HP core TCM budget)"},
}

# Budget-check overheads on top of what is measured (NOT measured here: no MCU on this machine).
# Flash: TFLM interpreter + reference kernels for a MobileNet-sized op set; SRAM: stack, the
# interpreter/resolver objects and I/O buffers outside the arena. Documented in docs/export.md.
RUNTIME_FLASH_OVERHEAD_KB = 128
RUNTIME_SRAM_OVERHEAD_KB = 16

# Builtin ops TFLM's MicroMutableOpResolver can register (op name -> Add* method).
_SPECIAL_METHODS = {
    "CUMSUM": "CumSum", "BATCH_MATMUL": "BatchMatMul", "PADV2": "PadV2", "SELECT_V2": "SelectV2",
    "SPLIT_V": "SplitV", "REVERSE_V2": "ReverseV2", "UNIDIRECTIONAL_SEQUENCE_LSTM": "UnidirectionalSequenceLSTM",
    "ADD_N": "AddN", "GATHER_ND": "GatherNd", "BATCH_TO_SPACE_ND": "BatchToSpaceNd",
    "SPACE_TO_BATCH_ND": "SpaceToBatchNd", "SVDF": "Svdf", "PRELU": "Prelu",
}
TFLM_BUILTINS = frozenset("""
ABS ADD ADD_N ARG_MAX ARG_MIN ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL BATCH_TO_SPACE_ND
BROADCAST_ARGS BROADCAST_TO CALL_ONCE CAST CEIL CONCATENATION CONV_2D COS CUMSUM DEPTH_TO_SPACE
DEPTHWISE_CONV_2D DEQUANTIZE DIV ELU EMBEDDING_LOOKUP EQUAL EXP EXPAND_DIMS FILL FLOOR FLOOR_DIV
FLOOR_MOD FULLY_CONNECTED GATHER GATHER_ND GREATER GREATER_EQUAL HARD_SWISH IF L2_NORMALIZATION
L2_POOL_2D LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGICAL_NOT LOGICAL_OR LOGISTIC LOG_SOFTMAX
MAXIMUM MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL PACK PAD PADV2 PRELU QUANTIZE
READ_VARIABLE REDUCE_MAX REDUCE_MIN RELU RELU6 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR
ROUND RSQRT SELECT_V2 SHAPE SIN SLICE SOFTMAX SPACE_TO_BATCH_ND SPACE_TO_DEPTH SPLIT SPLIT_V
SQRT SQUARE SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM SVDF TANH TRANSPOSE TRANSPOSE_CONV
UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK VAR_HANDLE WHILE ZEROS_LIKE
""".split())


def resolver_method(op):
    if op in _SPECIAL_METHODS:
        return "Add" + _SPECIAL_METHODS[op]
    parts = []
    for p in op.split("_"):
        parts.append(p.upper() if re.fullmatch(r"\d+D", p) else p.capitalize())
    return "Add" + "".join(parts)


def c_identifier(name):
    """A safe C identifier from any model name (``mbv3-small 0.75`` -> ``mbv3_small_0_75``)."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", str(name)).strip("_") or "model"
    ident = re.sub(r"__+", "_", ident)
    if ident[0].isdigit():
        ident = "m_" + ident
    reserved = {"auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
                "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
                "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch",
                "typedef", "union", "unsigned", "void", "volatile", "while", "class", "namespace",
                "template", "new", "delete", "this", "operator", "private", "public", "protected"}
    if ident in reserved:
        ident += "_model"
    return ident


def check_tflm_ops(tflite_bytes):
    """The sorted op list; UserError naming the ops TFLM cannot run (custom ops, unknown builtins)."""
    info = flatbuffer.parse(tflite_bytes)
    ops = sorted({op.name for op in info.ops})
    bad = [o for o in ops if o not in TFLM_BUILTINS]
    if bad:
        raise UserError(f"TFLite-Micro cannot run op(s) {', '.join(bad)} in this model; "
                        f"use standard int8 builtin layers (TFLM supports {len(TFLM_BUILTINS)} builtins)")
    return ops


def resolver_snippet(ident, ops):
    lines = [
        f"// Op resolver for {ident}: exactly the {len(ops)} builtin ops the model uses.",
        f"#ifndef {ident.upper()}_OP_RESOLVER_H_",
        f"#define {ident.upper()}_OP_RESOLVER_H_",
        "",
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
        "",
        f"using {ident}_OpResolver = tflite::MicroMutableOpResolver<{len(ops)}>;",
        "",
        f"inline TfLiteStatus {ident}_RegisterOps({ident}_OpResolver& resolver) {{",
    ]
    lines += [f"  if (resolver.{resolver_method(o)}() != kTfLiteOk) return kTfLiteError;" for o in ops]
    lines += ["  return kTfLiteOk;", "}", "", f"#endif  // {ident.upper()}_OP_RESOLVER_H_", ""]
    return "\n".join(lines)


def c_source(ident, data, header_name):
    out = [f"// {ident}: TFLite flatbuffer ({len(data)} bytes) for TensorFlow Lite for Microcontrollers.",
           "// Generated by tfmobile.convert.tflm; 16-byte aligned as TFLM requires.",
           f'#include "{header_name}"', "",
           f"alignas(16) const unsigned char {ident}[] = {{"]
    arr = np.frombuffer(bytes(data), dtype=np.uint8)
    hexes = [f"0x{b:02x}" for b in arr.tolist()]
    for i in range(0, len(hexes), 16):
        out.append("  " + ",".join(hexes[i:i + 16]) + ",")
    out += ["};", f"const unsigned int {ident}_len = {len(data)};", ""]
    return "\n".join(out)


def c_header(ident, data, arena_bytes, io_info, ops):
    g = f"{ident.upper()}_H_"
    lines = [f"// {ident}: int8 model for TFLite-Micro. Generated by tfmobile.convert.tflm.",
             f"#ifndef {g}", f"#define {g}", "",
             f"extern const unsigned char {ident}[];   // {len(data)} bytes, alignas(16)",
             f"extern const unsigned int {ident}_len;", "",
             "// Smallest tensor arena that allocated and ran this model in tflite-micro's Python",
             "// interpreter (x86-64 host build, measured by bisection). A 32-bit MCU build has smaller",
             "// pointers and structs, so it should need no more; not verified on hardware. Keep a margin.",
             f"constexpr unsigned int {ident}_kMinArenaBytes = {arena_bytes};",
             f"constexpr int {ident}_kNumOps = {len(ops)};", ""]
    for kind in ("inputs", "outputs"):
        for i, t in enumerate(io_info[kind]):
            pre = f"{ident}_k{kind[:-1].capitalize()}{i}"
            lines.append(f"// {kind[:-1]} {i}: {t['dtype']} {t['shape']}")
            if t["scale"] is not None:
                lines.append(f"constexpr float {pre}Scale = {float(t['scale']):.10g}f;")
                lines.append(f"constexpr int {pre}ZeroPoint = {int(t['zero_point'])};")
    lines += ["", f"#endif  // {g}", ""]
    return "\n".join(lines)


def mcu_budget(mcu=None, sram_kb=None, flash_kb=None):
    """{name, sram_kb, flash_kb} from a preset and/or explicit limits; None if nothing asked."""
    if mcu is None and sram_kb is None and flash_kb is None:
        return None
    budget = {"name": mcu or "custom", "sram_kb": None, "flash_kb": None}
    if mcu is not None:
        if mcu not in MCU_PRESETS:
            raise UserError(f"unknown MCU {mcu!r}; known: {', '.join(sorted(MCU_PRESETS))} "
                            f"(or give --sram_kb/--flash_kb)")
        budget.update({k: MCU_PRESETS[mcu][k] for k in ("sram_kb", "flash_kb")})
    for key, val in (("sram_kb", sram_kb), ("flash_kb", flash_kb)):
        if val is not None:
            if not (isinstance(val, (int, float)) and val > 0):
                raise UserError(f"{key} must be a positive number, got {val!r}")
            budget[key] = val
    if budget["sram_kb"] is None or budget["flash_kb"] is None:
        raise UserError("an MCU budget needs both SRAM and flash: give --mcu, or both --sram_kb and --flash_kb")
    return budget


def check_budget(budget, arena_bytes, model_bytes):
    """Fits / does not fit, with the numbers (kB = 1024 bytes)."""
    sram_need = arena_bytes + RUNTIME_SRAM_OVERHEAD_KB * 1024
    flash_need = model_bytes + RUNTIME_FLASH_OVERHEAD_KB * 1024
    sram_ok = sram_need <= budget["sram_kb"] * 1024
    flash_ok = flash_need <= budget["flash_kb"] * 1024
    return {
        "mcu": budget["name"], "sram_kb": budget["sram_kb"], "flash_kb": budget["flash_kb"],
        "arena_bytes": arena_bytes, "sram_overhead_bytes": RUNTIME_SRAM_OVERHEAD_KB * 1024,
        "sram_needed_bytes": sram_need, "model_bytes": model_bytes,
        "flash_overhead_bytes": RUNTIME_FLASH_OVERHEAD_KB * 1024, "flash_needed_bytes": flash_need,
        "fits_sram": sram_ok, "fits_flash": flash_ok, "fits": sram_ok and flash_ok,
        "summary": (f"{'fits' if sram_ok and flash_ok else 'does NOT fit'} {budget['name']}: "
                    f"SRAM {sram_need / 1024:.1f} of {budget['sram_kb']} kB "
                    f"(arena {arena_bytes / 1024:.1f} + runtime {RUNTIME_SRAM_OVERHEAD_KB}), "
                    f"flash {flash_need / 1024:.1f} of {budget['flash_kb']} kB "
                    f"(model {model_bytes / 1024:.1f} + runtime {RUNTIME_FLASH_OVERHEAD_KB})"),
    }


# ------------------------------------------------------------------------------------------------
# Running TFLM in a child process
# ------------------------------------------------------------------------------------------------

def _signal_name(rc):
    try:
        return signal.Signals(-rc).name
    except (ValueError, TypeError):
        return f"exit status {rc}"


def _abort_hint(info):
    """What in the model is known to make the TFLM Python runtime abort (measured, docs/export.md)."""
    hints = []
    for op in info.ops:
        if op.name == "SOFTMAX":
            t = info.tensors[op.inputs[0]]
            n = t.shape[-1] if t.shape else 0
            scale = t.scales[0] if t.scales else None
            if scale is not None and scale * 2 ** 26 < 1.0:
                hints.append(f"SOFTMAX input scale {scale:.3g} is too small for TFLM's int8 softmax "
                             f"(needs >= 1.5e-8; typical of untrained logits)")
            if n >= 2048:
                hints.append(f"SOFTMAX over {n} elements (TFLM's int8 softmax aborts at >= 2048)")
    return "; ".join(hints) or "see docs/export.md"


def _child(request, workdir, timeout):
    req_path = os.path.join(workdir, "request.json")
    with open(req_path, "w") as f:
        json.dump(request, f)
    env = dict(os.environ)
    try:
        proc = subprocess.run([sys.executable, "-m", "tfmobile.convert._tflm_child", req_path],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise UserError(f"TFLite-Micro run timed out after {timeout} s") from None
    events = []
    for line in proc.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return proc, events


def tflm_run(tflite_bytes, inputs, arena_bytes, timeout=600):
    """Run raw (already quantized) inputs [N, ...] through TFLM at ``arena_bytes``; raw outputs [N, ...]."""
    with tempfile.TemporaryDirectory(prefix="tfmobile_tflm_") as wd:
        model_path = os.path.join(wd, "model.tflite")
        with open(model_path, "wb") as f:
            f.write(bytes(tflite_bytes))
        np.save(os.path.join(wd, "in.npy"), np.asarray(inputs))
        proc, events = _child({"model": model_path, "input": os.path.join(wd, "in.npy"),
                               "output": os.path.join(wd, "out.npy"), "run_arena": int(arena_bytes)},
                              wd, timeout)
        _raise_on_failure(proc, events, flatbuffer.parse(tflite_bytes), "running")
        if not any(e.get("event") == "invoked" for e in events):
            err = next((e.get("error") for e in events if e.get("event") == "result" and not e["ok"]), "")
            raise UserError(f"TFLite-Micro could not allocate the model in {arena_bytes} bytes: {err}")
        return np.load(os.path.join(wd, "out.npy"))


def tflm_accuracy(tflite_bytes, images, labels, arena_bytes=None, timeout=3600, agree_with=None):
    """Top-1 of the int8 model run by TFLite-Micro itself, the runtime the firmware will run.

    All images go through one child process (TFLM aborts in-process on some ops; one process per image
    would spend minutes starting). ``images``: uint8 [N, h, w(, c)] (``data.preprocess``ed to the model's
    input, as ``evaluation.evaluate_tflite`` does) or float32 already preprocessed at the model's input;
    quantized with the input tensor's scale / zero point as LiteRT's path does. ``arena_bytes`` None: the
    measured minimum (``measure_arena``). ``agree_with="litert"``: also run LiteRT's default kernels on the
    same int8 inputs and report how many top-1 predictions agree ("litert_reference": its reference
    kernels, which TFLM's are ported from: they should agree on every image; the default ones round some
    ops 1 LSB apart, which flips the near-ties of a barely trained model).
    Returns {"accuracy", "n", "agree_with", "seconds", "arena_bytes"}.
    """
    import time

    if agree_with not in (None, "litert", "litert_reference"):
        raise ValueError(f"agree_with must be None, 'litert' or 'litert_reference', got {agree_with!r}")
    data = bytes(tflite_bytes)
    flatbuffer.check_tflite_bytes(data)
    info = flatbuffer.parse(data)
    check_tflm_ops(data)
    t = info.tensors[info.inputs[0]]
    if t.dtype not in ("int8", "uint8"):
        raise UserError(f"TFLite-Micro accuracy needs an int8/uint8 model input, the model has {t.dtype}")
    labels = np.asarray(labels).reshape(-1)
    x = _model_input_images(images, tuple(int(v) for v in t.shape[1:]))
    if len(x) != len(labels) or not len(x):
        raise UserError(f"tflm_accuracy needs as many labels as images (got {len(x)} images, {len(labels)} labels)")
    # exactly evaluation.evaluate_tflite's quantization (zero point added before rounding: the [-1, 1]
    # images sit on half steps, so rounding first and then shifting would move half the pixels by 1 LSB)
    dtype = np.int8 if t.dtype == "int8" else np.uint8
    fed = np.clip(np.round(x / t.scales[0] + t.zero_points[0]), np.iinfo(dtype).min,
                  np.iinfo(dtype).max).astype(dtype)
    t0 = time.time()
    if arena_bytes is None:
        arena_bytes = measure_arena(data, fed[:1], timeout=timeout)["arena_bytes"]
    raw = tflm_run(data, fed, arena_bytes, timeout=timeout)
    predicted = raw.reshape(len(fed), -1).argmax(-1)
    result = {"accuracy": float((predicted == labels).mean()), "n": int(len(labels)), "agree_with": None,
              "seconds": round(time.time() - t0, 2), "arena_bytes": int(arena_bytes)}
    if agree_with is not None:
        reference = _litert_predictions(data, fed, reference_kernels=agree_with == "litert_reference")
        same = int((reference == predicted).sum())
        result["agree_with"] = {"runtime": agree_with, "agreeing": same, "fraction": same / len(fed),
                                "litert_accuracy": float((reference == labels).mean())}
    return result


def _model_input_images(images, input_shape):
    """float32 [N, *input_shape] in [-1, 1]: uint8 images preprocessed, float ones checked."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        from tfmobile.data import preprocess

        return preprocess(images, input_shape)
    if tuple(images.shape[1:]) != tuple(input_shape):
        raise UserError(f"images are {list(images.shape[1:])}, the model input is {list(input_shape)} "
                        f"(give uint8 images to have them resized)")
    return images.astype(np.float32)


def _litert_predictions(data, fed, reference_kernels=False, batch=250):
    """LiteRT's top-1 of raw int8 inputs, batched where the model allows it."""
    from tfmobile.convert.verification import interpreter

    it = interpreter(data, reference_kernels=reference_kernels)
    d = it.get_input_details()[0]
    out = it.get_output_details()[0]
    try:
        it.resize_tensor_input(d["index"], [batch, *fed.shape[1:]])
        it.allocate_tensors()
    except (RuntimeError, ValueError):
        batch, it = 1, interpreter(data, reference_kernels=reference_kernels)
    preds = []
    for s in range(0, len(fed), batch):
        xb = fed[s:s + batch]
        n = len(xb)
        if n < batch:
            xb = np.concatenate([xb, np.zeros((batch - n, *fed.shape[1:]), fed.dtype)])
        it.set_tensor(d["index"], xb.astype(d["dtype"]))
        it.invoke()
        preds.append(it.get_tensor(out["index"]).reshape(batch, -1)[:n].argmax(-1))
    return np.concatenate(preds)


def _raise_on_failure(proc, events, info, what):
    if proc.returncode == 0:
        return
    last = events[-1] if events else {}
    stage = {"probe": f"allocating (arena {last.get('arena')} bytes)",
             "invoking": f"invoking (arena {last.get('arena')} bytes)"}.get(last.get("event"), "starting")
    stderr_tail = " ".join(proc.stderr.strip().splitlines()[-2:])[-300:] if proc.stderr else ""
    raise UserError(f"TFLite-Micro {what} the model crashed the child process with "
                    f"{_signal_name(proc.returncode)} while {stage}; likely cause: {_abort_hint(info)}"
                    + (f" [{stderr_tail}]" if stderr_tail else ""))


def measure_arena(tflite_bytes, sample_input=None, granularity=16, max_arena=64 << 20, timeout=600):
    """Smallest tensor arena (bytes) with which TFLM allocates the model and runs one inference.

    Returns {"arena_bytes", "probes", "output"} where output is TFLM's raw output for
    ``sample_input`` (one raw input [1, ...] of the model's input dtype; zeros if None).
    """
    info = flatbuffer.parse(tflite_bytes)
    check_tflm_ops(tflite_bytes)
    in_t = info.tensors[info.inputs[0]]
    dtype = {"int8": np.int8, "uint8": np.uint8, "float32": np.float32, "int16": np.int16}.get(in_t.dtype)
    if dtype is None:
        raise UserError(f"TFLM export needs an int8/uint8/float32 input, the model has {in_t.dtype}")
    if sample_input is None:
        sample_input = np.zeros([1] + in_t.shape[1:], dtype)
    probes = 0
    with tempfile.TemporaryDirectory(prefix="tfmobile_tflm_") as wd:
        model_path = os.path.join(wd, "model.tflite")
        with open(model_path, "wb") as f:
            f.write(bytes(tflite_bytes))
        np.save(os.path.join(wd, "in.npy"), np.asarray(sample_input, dtype))
        # 1) a generous arena that works: start from a size estimate, double until it allocates.
        hi = max(64 << 10, _round_up(4 * _activation_bytes(info), granularity))
        while True:
            proc, events = _child({"model": model_path, "run_arena": hi, "search": None}, wd, timeout)
            probes += 1
            last = events[-1] if events else {}
            if proc.returncode != 0 and last.get("event") == "probe" and hi < max_arena:
                hi *= 2   # TFLM crashes instead of failing when the tail does not fit: too small
                continue
            _raise_on_failure(proc, events, info, "loading")
            res = [e for e in events if e.get("event") == "result"]
            if res and res[-1]["ok"]:
                break
            err = res[-1]["error"] if res else ""
            missing = re.findall(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'", proc.stderr or "")
            if missing:
                raise UserError(f"TFLite-Micro cannot run op(s) {', '.join(sorted(set(missing)))} in this model")
            if "allocate" not in err.lower() and "memory" not in err.lower() and "arena" not in err.lower() \
                    and err:
                raise UserError(f"TFLite-Micro cannot load the model: {err}")
            if hi >= max_arena:
                raise UserError(f"TFLite-Micro could not allocate the model even with a {max_arena >> 20} MB arena")
            hi *= 2
        # 2) bisect (lo bad, hi good); a crash on a tiny probe counts as "too small" and the search
        # restarts in a fresh child from the known bounds.
        lo = 0
        while hi - lo > granularity:
            proc, events = _child({"model": model_path, "search": [lo, hi], "granularity": granularity},
                                  wd, timeout)
            for e in events:
                if e.get("event") == "result":
                    probes += 1
                    if e["ok"]:
                        hi = min(hi, e["arena"])
                    else:
                        lo = max(lo, e["arena"])
            if proc.returncode != 0:
                last = events[-1] if events else {}
                if last.get("event") == "probe" and last["arena"] < hi:
                    lo = max(lo, last["arena"])   # crashed because the arena was too small
                    probes += 1
                    continue
                _raise_on_failure(proc, events, info, "loading")
        # 3) one inference at the smallest arena (the abort of int8 SOFTMAX happens here at the latest)
        proc, events = _child({"model": model_path, "input": os.path.join(wd, "in.npy"),
                               "output": os.path.join(wd, "out.npy"), "run_arena": hi}, wd, timeout)
        _raise_on_failure(proc, events, info, "running")
        if not any(e.get("event") == "invoked" for e in events):
            raise UserError(f"TFLite-Micro allocated the model in {hi} bytes but could not run it")
        output = np.load(os.path.join(wd, "out.npy"))
    return {"arena_bytes": int(hi), "probes": probes, "output": output}


def _round_up(n, g):
    return (int(n) + g - 1) // g * g


def _activation_bytes(info):
    """Sum of the two largest non-constant tensors: a cheap starting point for the search."""
    itemsize = {"int8": 1, "uint8": 1, "int16": 2, "float16": 2, "int32": 4, "float32": 4, "int64": 8}
    sizes = sorted((int(np.prod(t.shape)) * itemsize.get(t.dtype, 4)
                    for t in info.tensors if not t.is_constant and t.shape), reverse=True)
    return sum(sizes[:2])


# ------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------

def tflm_files(name, output_dir):
    ident = c_identifier(name)
    d = os.fspath(output_dir)
    return {"tflite": os.path.join(d, f"{name}.tflite"), "cc": os.path.join(d, f"{ident}.cc"),
            "h": os.path.join(d, f"{ident}.h"), "resolver": os.path.join(d, f"{ident}_op_resolver.h")}


def to_tflm(tflite_bytes, name, output_dir, mcu=None, sram_kb=None, flash_kb=None,
            litert_check=True, write=True):
    """Write the TFLM artifacts of an int8 .tflite and measure its arena.

    Files (names from ``name``; C identifiers sanitized): NAME.tflite, IDENT.cc / IDENT.h (16-byte
    aligned ``const unsigned char IDENT[]`` + ``IDENT_len``), IDENT_op_resolver.h
    (``MicroMutableOpResolver<N>`` with exactly the model's ops). Returns a dict with paths, sizes,
    ops, measured arena, the TFLM-vs-LiteRT check on a real int8 input, and the MCU budget verdict.
    All files are written only after every check passed.
    """
    from tfmobile.convert.verification import float_ops

    data = bytes(tflite_bytes)
    ops = check_tflm_ops(data)
    floats = float_ops(data)
    if floats:
        raise UserError(f"TFLM export needs an integer-only model; op(s) in float: {', '.join(floats)}")
    budget = mcu_budget(mcu, sram_kb, flash_kb)
    info = flatbuffer.parse(data)
    io_info = {"inputs": flatbuffer.io_details(info, "inputs"),
               "outputs": flatbuffer.io_details(info, "outputs")}
    sample = _real_int8_input(data, info)
    measured = measure_arena(data, sample)
    result = {"arena_bytes": measured["arena_bytes"], "arena_probes": measured["probes"],
              "ops": ops, "model_bytes": len(data), "io": io_info}
    if litert_check:
        # TFLM's kernels are ports of LiteRT's reference kernels, so those must agree within 1 LSB.
        # LiteRT's default (optimized / XNNPACK) int8 kernels round some ops differently (measured:
        # up to 3 LSB on a trained MobileNetV2 QAT model), so that difference is reported, not checked.
        got = np.asarray(measured["output"]).astype(np.int64)
        for key, reference in (("tflm_vs_litert_max_lsb", True), ("tflm_vs_litert_optimized_max_lsb", False)):
            ref = _litert_raw_output(data, sample, reference)
            result[key] = int(np.max(np.abs(got.reshape(ref.shape) - ref))) if ref.size else 0
            if reference:
                result["tflm_vs_litert_top1_equal"] = bool(np.argmax(got) == np.argmax(ref))
        if result["tflm_vs_litert_max_lsb"] > 1:
            raise UserError(f"TFLite-Micro output differs from LiteRT's reference kernels by "
                            f"{result['tflm_vs_litert_max_lsb']} LSB (> 1) on the same input")
    if budget is not None:
        result["budget"] = check_budget(budget, measured["arena_bytes"], len(data))
    ident = c_identifier(name)
    files = tflm_files(name, output_dir)
    result["c_identifier"] = ident
    result["files"] = files
    if write:
        write_tflm_files(files, ident, data, measured["arena_bytes"], io_info, ops)
    return result


def write_tflm_files(files, ident, data, arena_bytes, io_info, ops):
    header = os.path.basename(files["h"])
    tio.write_bytes(files["tflite"], data)
    tio.write_text(files["cc"], c_source(ident, data, header))
    tio.write_text(files["h"], c_header(ident, data, arena_bytes, io_info, ops))
    tio.write_text(files["resolver"], resolver_snippet(ident, ops))


def _real_int8_input(data, info):
    """One real Fashion-MNIST test image quantized to the model's input (for the TFLM/LiteRT check)."""
    from tfmobile.convert.verification import quantize, verification_images

    t = info.tensors[info.inputs[0]]
    images, _ = verification_images(tuple(t.shape[1:]), n=1)
    if t.dtype in ("int8", "uint8"):
        return quantize(images, np.int8 if t.dtype == "int8" else np.uint8, t.scales[0], t.zero_points[0])
    return images.astype(np.float32)


def _litert_raw_output(data, sample, reference_kernels):
    from tfmobile.convert.verification import interpreter

    it = interpreter(data, reference_kernels=reference_kernels)
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], sample.astype(d["dtype"]))
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).astype(np.int64)
