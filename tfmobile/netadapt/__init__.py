"""NetAdapt (Yang et al., ECCV 2018): shrink a trained network one channel group at a time under a
measured resource budget. The channel surgery lives with the models (tfmobile.models.surgery)."""
from tfmobile.models.surgery import Group, groups, kept_channels, shrink, transfer  # noqa: F401
