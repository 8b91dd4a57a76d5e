"""Compression with tfmot: quantization-aware training (QAT), magnitude pruning, 2:4 structured
sparsity and pruning-preserving QAT (PQAT).

    from tfmobile import compress
    q = compress.qat(model)                               # fake-quant model, train a few epochs
    p = compress.prune(model, 0.5, begin_step=0, end_step=steps)
    p.fit(..., callbacks=compress.pruning_callbacks())
    s = compress.strip(p)                                 # plain Keras model with zeros in it
    pq = compress.pqat(s)                                 # QAT that keeps those zeros
    compress.sparsity_report(s)                           # zero weights of the Keras model

``schemes``: the QuantizeConfigs and tfmot schemes; ``wrappers``: the functions above. What ends up
inside the converted .tflite (its sparsity, gzip size, float ops) is measured by tfmobile.convert.
"""
from tfmobile.compress.schemes import (LAYER_CONFIGS, OutputQuantizeConfig,  # noqa: F401
                                       PassThroughQuantizeConfig, PrunePreserveQuantizeScheme,
                                       QuantizeScheme, quantize_scope)
from tfmobile.compress.wrappers import (COMPRESSIONS, SparsityLog, apply, check_2_4,  # noqa: F401
                                        pqat, prunable_layers, prune, pruning_callbacks, qat,
                                        refresh_pqat_masks, sparsity_report, strip)
