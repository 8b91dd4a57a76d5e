"""Model zoo: spec-driven Keras functional builders (MobileNet V1/V2/V3, ShuffleNet V1/V2, SqueezeNet).

    from tfmobile import models
    models.available()                       # names
    spec = models.get_spec("mbv2", alpha=0.35, input_shape=(96, 96, 3), classes=10)
    model = models.build(spec.with_block("block_3", expanded=48))
    models.spec_of(model) == spec.with_block("block_3", expanded=48)
"""
from tfmobile.models.registry import (attach_spec, available, build, decode, get_spec,  # noqa: F401
                                      spec_of)
from tfmobile.models.spec import BlockFlow, ModelSpec  # noqa: F401
