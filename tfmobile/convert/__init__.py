"""Conversion and export: TFLite modes, verification in LiteRT, TFLite-Micro C arrays and arenas.

    from tfmobile import convert
    data = convert.to_tflite(model, "int8")            # bytes; calibrated on real images
    convert.tflite_ops(data)                           # ['ADD', 'CONV_2D', ...]
    convert.verify(data, model, images)                # agreement / MAE / float ops
    convert.to_tflm(data, "mbv3_small", "tflite_models", mcu="cortex_m7")
    convert.export(model, "mbv3_small", ["int8"], "tflite_models", tflm=True)
"""
from tfmobile.convert.tflite import (MODES, IO_TYPES, representative_images, tflite_io,  # noqa: F401
                                     tflite_op_counts, tflite_ops, to_tflite)


def __getattr__(name):
    # verify / TFLM / export are imported lazily so that `to_tflite` users do not pay for them.
    if name in ("verify", "run_tflite", "float_ops"):
        from tfmobile.convert import verify as _v
        return getattr(_v, name if name != "verify" else "verify")
    if name in ("to_tflm", "tflm_run", "measure_arena", "MCU_PRESETS", "mcu_budget"):
        from tfmobile.convert import tflm as _t
        return getattr(_t, name)
    if name in ("export", "sidecar"):
        from tfmobile.convert import export as _e
        return getattr(_e, name)
    raise AttributeError(f"module 'tfmobile.convert' has no attribute {name!r}")
