"""Export = convert + verify + (TFLM) + write every artifact and its sidecar JSON, all or nothing.

Files for ``name`` and a mode (e.g. ``mbv3_small`` + ``int8``) in ``output_dir``:

    NAME_MODE.tflite / NAME_MODE.json             the model as defined (LiteRT, phones)
    NAME_MODE_tflm.tflite / .cc / .h / _op_resolver.h / .json     (--tflm) the firmware model

The firmware model is the int8 model *without its final softmax* (logits; argmax on the device):
tflite-micro's int8 SOFTMAX aborts the process for untrained-scale logits and for >= 2048 classes
(measured, docs/export.md), and softmax does not change the argmax. Every file is first written to
a temporary file beside its destination and renamed into place only after all conversions and
checks passed, so a failure leaves no partial artifact.
"""
import dataclasses
import os
import tempfile
import time
from importlib import metadata

import tfmobile  # noqa: F401
from tfmobile.convert import flatbuffer
from tfmobile.convert.sizes import gzip_size
from tfmobile.convert.tflite import MODES, representative_images, to_tflite, tflite_op_counts, tflite_ops
from tfmobile.convert.verification import DEFAULT_NUM_VERIFY, verification_images, verify
from tfmobile.errors import UserError
from tfmobile.io import StagedWriter, check_writable, to_json

def _cpu():
    """CPU seconds of this process and its finished children (the TFLM child processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


MODE_ALIASES = {"float32": "float", "float16": "fp16"}


def tool_versions():
    out = {}
    for dist in ("tensorflow-cpu", "tensorflow", "tf-keras", "tensorflow-model-optimization",
                 "ai-edge-litert", "tflite-micro", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def check_output_dir(output_dir, create=True):
    """Make sure ``output_dir`` can be written (UserError if not); create it only if ``create``.

    With create=False nothing is touched when the directory does not exist yet: the nearest existing
    ancestor must be a writable directory.
    """
    output_dir = check_writable(os.fspath(output_dir), directory=True, what="output dir")
    if create:
        try:
            os.makedirs(output_dir, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot write output dir {output_dir}: {e.strerror or e}") from None
    return output_dir


def logits_model(model):
    """(model without its final softmax layer, True) or (model, False) if it does not end in one."""
    import tf_keras as keras

    last = model.layers[-1]
    inner = getattr(last, "layer", last)   # tfmot QuantizeWrapper / PruneLowMagnitude
    is_softmax = isinstance(inner, keras.layers.Softmax) or (
        isinstance(inner, keras.layers.Activation)
        and getattr(inner.activation, "__name__", "") == "softmax")
    if not is_softmax:
        return model, False
    cut = keras.Model(model.inputs, last.input, name=f"{model.name}_logits")
    from tfmobile.models import attach_spec, spec_of
    spec = spec_of(model)
    if spec is not None:
        attach_spec(cut, dataclasses.replace(spec, classifier_activation=None))
    return cut, True


def _spec_dict(model):
    from tfmobile.models import spec_of

    try:
        spec = spec_of(model)
    except UserError:
        spec = None
    return spec.to_dict() if spec is not None else None


def _artifact_record(data, verification, mode, io, path):
    info = flatbuffer.parse(data)
    return {
        "mode": mode,
        "io": io if mode == "int8" else "float",
        "path": path,
        "size_bytes": len(data),
        "gzip_bytes": gzip_size(data),
        "ops": tflite_ops(data),
        "op_counts": tflite_op_counts(data),
        "num_operators": len(info.ops),
        "inputs": flatbuffer.io_details(info, "inputs"),
        "outputs": flatbuffer.io_details(info, "outputs"),
        "verification": verification,
    }


def export(model, name, modes=("int8",), output_dir="tflite_models", representative_data=None, io="int8",
           tflm=False, mcu=None, sram_kb=None, flash_kb=None, num_calibration=100, calibration_dir=None,
           num_verify=DEFAULT_NUM_VERIFY, weights=None, extra=None, progress=None):
    """Convert ``model`` in each of ``modes``, verify, optionally export TFLM, write all + sidecars.

    Returns {"name", "output_dir", "weights", "randomly_initialized", "artifacts": [...],
    "tflm": {...} | None, "timings_s": {...}}. Raises UserError (and writes nothing) when a
    conversion fails, an int8 model has float ops, TFLM cannot run the model, or TFLM and LiteRT
    disagree by more than 1 LSB.
    """
    say = progress or (lambda msg: None)
    modes = [MODE_ALIASES.get(m, m) for m in (modes if isinstance(modes, (list, tuple)) else [modes])]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise UserError(f"unknown mode(s) {', '.join(bad)}; choose from {', '.join(MODES)}")
    if tflm and "int8" not in modes and any(m != "int8" for m in modes):
        raise UserError("TFLite-Micro export is int8 only: combine --tflm with --int8 (or alone)")
    if not name or os.sep in name or name in (".", ".."):
        raise UserError(f"invalid artifact name {name!r}")
    output_dir = check_output_dir(output_dir, create=False)
    from tfmobile.convert.tflm import check_tflm_ops, mcu_budget, to_tflm

    budget_args = dict(mcu=mcu, sram_kb=sram_kb, flash_kb=flash_kb)
    if not tflm and mcu_budget(**budget_args) is not None:
        raise UserError("--mcu/--sram_kb/--flash_kb check the TFLite-Micro artifact: add --tflm")
    if tflm:
        mcu_budget(**budget_args)   # validate before any slow work

    timings, cpu = {}, {}
    t, c = time.perf_counter(), _cpu()
    shape = tuple(model.input_shape[1:])
    needs_calibration = "int8" in modes or tflm
    calib = None
    if needs_calibration:
        calib = representative_images(model, representative_data, num_calibration, calibration_dir)
    images, labels = verification_images(shape, num_verify)
    timings["data"] = time.perf_counter() - t
    cpu["data"] = _cpu() - c

    common = {"spec": _spec_dict(model), "weights": weights, "randomly_initialized": weights is None,
              "calibration": ({"source": ("random" if isinstance(representative_data, str) else
                                          calibration_dir or ("array" if representative_data is not None
                                                              else "fashion-mnist train (embedded)")),
                               "num_images": int(len(calib))} if calib is not None else None),
              "verification_images": f"{len(images)} Fashion-MNIST test images, preprocessed to {list(shape)}",
              "tool_versions": tool_versions()}
    if extra:
        common.update(extra)

    created_dir = not os.path.isdir(output_dir)
    check_output_dir(output_dir)
    writer = StagedWriter()
    artifacts, tflm_result, int8_bytes = [], None, None
    try:
        for mode in modes:
            say(f"converting {name} to {mode} TFLite")
            t, c = time.perf_counter(), _cpu()
            data = to_tflite(model, mode, representative_data=calib, io=io)
            timings[f"convert_{mode}"] = time.perf_counter() - t
            cpu[f"convert_{mode}"] = _cpu() - c
            t, c = time.perf_counter(), _cpu()
            say(f"verifying {mode} model in LiteRT on {len(images)} real images")
            ver = verify(data, model, images, labels)
            timings[f"verify_{mode}"] = time.perf_counter() - t
            cpu[f"verify_{mode}"] = _cpu() - c
            if mode == "int8" and ver["float_ops"]:
                raise UserError(f"int8 model is not integer-only: {len(ver['float_ops'])} op(s) run in float: "
                                f"{', '.join(ver['float_ops'])}")
            base = f"{name}_{mode}"
            path = os.path.join(output_dir, base + ".tflite")
            rec = _artifact_record(data, ver, mode, io, path)
            rec["sidecar"] = os.path.join(output_dir, base + ".json")
            writer.add(path, data)
            writer.add(rec["sidecar"], to_json({"name": base, "kind": "litert", **rec, **common}, indent=2) + "\n")
            artifacts.append(rec)
            if mode == "int8":
                int8_bytes = data
        if tflm:
            t, c = time.perf_counter(), _cpu()
            fw_model, stripped = logits_model(model)
            int8_rec = next((a for a in artifacts if a["mode"] == "int8"), None)
            if not stripped and int8_rec is not None:
                data = int8_bytes
                ver = int8_rec["verification"]
                source = "the int8 model"
            else:
                data = flatbuffer.strip_final_softmax(int8_bytes) if int8_bytes is not None else None
                if data is not None:
                    say("firmware model: the int8 model with its final SOFTMAX cut (logits)")
                    source = "the int8 model with its final SOFTMAX op cut"
                else:
                    say("converting the firmware model (logits, no softmax) to int8 for TFLite-Micro")
                    data = to_tflite(fw_model, "int8", representative_data=calib, io=io)
                    source = "the Keras model without its softmax, converted to int8"
                ver = verify(data, fw_model, images, labels)
                if ver["float_ops"]:
                    raise UserError(f"int8 firmware model is not integer-only: op(s) in float: "
                                    f"{', '.join(ver['float_ops'])}")
            timings["convert_tflm"] = time.perf_counter() - t
            cpu["convert_tflm"] = _cpu() - c
            check_tflm_ops(data)
            t, c = time.perf_counter(), _cpu()
            say("measuring the TFLite-Micro tensor arena (child process, bisection)")
            base = f"{name}_int8_tflm"
            res = to_tflm(data, base, output_dir, write=False, **budget_args)
            timings["tflm_arena"] = time.perf_counter() - t
            cpu["tflm_arena"] = _cpu() - c
            from tfmobile.convert.tflm import c_header, c_source, resolver_snippet

            files = res["files"]
            ident = res["c_identifier"]
            writer.add(files["tflite"], data)
            writer.add(files["cc"], c_source(ident, data, os.path.basename(files["h"])))
            writer.add(files["h"], c_header(ident, data, res["arena_bytes"], res["io"], res["ops"]))
            writer.add(files["resolver"], resolver_snippet(ident, res["ops"]))
            rec = _artifact_record(data, ver, "int8", io, files["tflite"])
            rec.update({k: v for k, v in res.items() if k not in ("files", "io", "ops")})
            rec["files"] = files
            rec["firmware_from"] = source
            rec["firmware_output"] = ("logits (final softmax removed; take argmax on the device)"
                                      if stripped else "the model's own output (it has no final softmax)")
            rec["sidecar"] = os.path.join(output_dir, base + ".json")
            tflm_result = rec
            writer.add(rec["sidecar"], to_json({"name": base, "kind": "tflm", **rec, **common}, indent=2) + "\n")
        writer.commit()
    except BaseException:
        writer.abort()
        if created_dir:
            try:
                os.rmdir(output_dir)   # only if still empty
            except OSError:
                pass
        raise
    return {"name": name, "output_dir": output_dir, "weights": weights,
            "randomly_initialized": weights is None, "artifacts": artifacts, "tflm": tflm_result,
            "timings_s": {k: round(v, 2) for k, v in timings.items()},
            "cpu_s": {k: round(v, 2) for k, v in cpu.items()}}

