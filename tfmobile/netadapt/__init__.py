"""NetAdapt: shrinkable channel groups, weight transfer, and resources of a spec without converting it."""
from tfmobile.netadapt.resource import RESOURCE_KINDS, largest_width, resource  # noqa: F401
