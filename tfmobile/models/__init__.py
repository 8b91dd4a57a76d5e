"""Model zoo: spec-driven Keras functional builders (MobileNet V1/V2/V3, ShuffleNet V1/V2, SqueezeNet).

    from tfmobile import models
    models.available()                       # names
    spec = models.get_spec("mbv2", alpha=0.35, input_shape=(96, 96, 3), classes=10)
    model = models.build(spec.with_block("block_3", expanded=48))
"""
from tfmobile.models.registry import available, build, decode, get_spec, spec_of  # noqa: F401
from tfmobile.models.spec import ModelSpec  # noqa: F401
