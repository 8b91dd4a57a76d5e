"""tfmobile: efficient CNNs from a Keras definition to a measured int8 model on a phone or an MCU.

tfmot only supports Keras 2, so the legacy Keras (tf_keras) must be selected before TensorFlow is
first imported. This is the one place in the package that does it; every module imports
``tf_keras`` directly and is imported through this package.

TensorFlow's native start-up lines (the oneDNN notice, CUDA probing on a CPU-only machine, absl's
"before InitializeLog" warning) are written straight to file descriptor 2 before its logging is
set up, so ``TF_CPP_MIN_LOG_LEVEL`` does not reach them. Importing tfmobile installs an import
hook that runs TensorFlow's first import (and its device discovery) with descriptor 2 captured,
then writes back every line that is not one of those known notices. TensorFlow is still imported
only when something needs it. ``TFMOBILE_STARTUP_LOG=1`` turns the filter off.
``quiet_startup()`` does the same around any other native start-up (a first LiteRT interpreter).
"""
import importlib.abc
import os
import re
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# Native start-up notices that say nothing about the user's job (matched per line).
STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard|cuda_\w+|gpu_\w+)\.cc:\d+\] .*"
    r"|E\d{4} [\d:. ]+\d+ cuda_\w+\.cc:\d+\] failed call to cuInit: .*"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow .*"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)$")


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of ``tensorflow`` with fd 2 captured; replays what is not noise."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with quiet_startup():
            self.loader.exec_module(module)
            try:  # device discovery logs the CUDA probe on first use: do it here, once
                module.config.list_physical_devices()
            except Exception:  # noqa: BLE001 - never let the filter break the import
                pass

    def __getattr__(self, name):  # resource readers etc. of the real loader
        return getattr(self.loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps the lookup below from recursing
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class quiet_startup:
    """Context manager: capture fd 2, then write back all but ``STARTUP_NOISE`` lines (e.g.
    around the first LiteRT interpreter, which announces its XNNPACK delegate)."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = None
        if os.environ.get("TFMOBILE_STARTUP_LOG") == "1":
            return self
        try:
            self.saved = os.dup(2)
        except OSError:  # no fd 2 (closed): nothing to filter
            return self
        self.capture = tempfile.TemporaryFile()
        os.dup2(self.capture.fileno(), 2)
        return self

    def __exit__(self, *exc):
        if self.saved is None:
            return False
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.capture.seek(0)
        text = self.capture.read().decode("utf-8", "replace")
        self.capture.close()
        keep = [ln for ln in text.splitlines(keepends=True) if not STARTUP_NOISE.match(ln.rstrip("\n"))]
        if keep:
            sys.stderr.write("".join(keep))
            sys.stderr.flush()
        return False


if "tensorflow" not in sys.modules and os.environ.get("TFMOBILE_STARTUP_LOG") != "1" \
        and not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
