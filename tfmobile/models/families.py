"""Importing this module registers every family's spec functions and block builders."""
from tfmobile.models import mobilenet, shufflenet, squeezenet  # noqa: F401
