"""NetAdapt (Yang et al., ECCV 2018): shrink a trained network one channel group at a time under a
measured resource budget. The channel surgery lives with the models (tfmobile.models.surgery); the
resources of a spec (latency from the LUT, MACs, params, TFLM SRAM, flash) in netadapt.resource."""
from tfmobile.models.surgery import Group, groups, kept_channels, shrink, transfer  # noqa: F401
from tfmobile.netadapt.config import KINDS  # noqa: F401
from tfmobile.netadapt.resource import largest_width, resource  # noqa: F401
from tfmobile.netadapt.loop import LoopConfig, TargetNotMet, run  # noqa: F401
from tfmobile.netadapt.workers import WorkerFailure  # noqa: F401
