"""NetAdapt (Yang et al., ECCV 2018): shrink a trained network one channel group at a time under a
measured resource budget. The channel surgery lives with the models (tfmobile.models.surgery); the
resources of a spec (latency from the LUT, MACs, params, TFLM SRAM, flash) in netadapt.resource.

The names below are imported when first used, so ``tfmobile.netadapt.config`` (read by the CLI to
make its flags) does not bring TensorFlow in. The resource function is
``tfmobile.netadapt.resource.resource``: the package attribute ``resource`` is that module.
"""
import importlib

_EXPORTS = {
    "Group": "tfmobile.models.surgery", "groups": "tfmobile.models.surgery",
    "kept_channels": "tfmobile.models.surgery", "shrink": "tfmobile.models.surgery",
    "transfer": "tfmobile.models.surgery",
    "KINDS": "tfmobile.netadapt.config", "LoopConfig": "tfmobile.netadapt.config",
    "largest_width": "tfmobile.netadapt.resource",
    "TargetNotMet": "tfmobile.netadapt.loop", "run": "tfmobile.netadapt.loop",
    "WorkerFailure": "tfmobile.netadapt.workers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
