"""tfmobile: efficient CNNs from a Keras definition to a measured int8 model on a phone or an MCU.

tfmot only supports Keras 2, so the legacy Keras (tf_keras) must be selected before TensorFlow is
first imported. This is the one place in the package that does it; every module imports
``tf_keras`` directly and is imported through this package.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
