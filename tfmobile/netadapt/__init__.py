"""NetAdapt (Yang et al., ECCV 2018): shrink a trained network one channel group at a time under a
measured resource budget. The channel surgery lives with the models (tfmobile.models.surgery);
resources of a spec without converting it in tfmobile.netadapt.resource."""
from tfmobile.models.surgery import Group, groups, kept_channels, shrink, transfer  # noqa: F401
from tfmobile.netadapt.resource import RESOURCE_KINDS, largest_width, resource  # noqa: F401
