"""Conversion and export: TFLite modes, verification in LiteRT, TFLite-Micro C arrays and arenas.

    from tfmobile import convert
    data = convert.to_tflite(model, "int8")            # bytes; calibrated on real images
    convert.tflite_ops(data)                           # ['ADD', 'CONV_2D', ...]
    convert.verify(data, model, images)                # agreement / MAE / float ops
    convert.tflite_sparsity(data); convert.gzip_size(data)   # zero weights inside, compressed size
    convert.to_tflm(data, "mbv3_small", "tflite_models", mcu="cortex_m7")
    convert.export(model, "mbv3_small", ["int8"], "tflite_models", tflm=True)

Importing this package does not import TensorFlow; the functions do when they need it.
"""
from tfmobile.convert.tflite import (IO_TYPES, MODES, representative_images, tflite_io,  # noqa: F401
                                     tflite_op_counts, tflite_ops, to_tflite)
from tfmobile.convert.verification import (float_ops, interpreter, run_tflite,  # noqa: F401
                                           verification_images, verify)
from tfmobile.convert.sizes import gzip_size, tflite_sparsity  # noqa: F401
from tfmobile.convert.tflm import MCU_PRESETS, measure_arena, mcu_budget, tflm_run, to_tflm  # noqa: F401
from tfmobile.convert.exporter import export, logits_model, tool_versions  # noqa: F401,E402
