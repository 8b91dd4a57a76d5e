"""The typed state of a NetAdapt run: the point the loop stands on, the start, and what every step needs.

A ``Point`` is one model of the trajectory (the start, or an iteration's pick): its architecture,
weights, measured and predicted resource and validation accuracy. The loop moves from point to
point; everything else a step reads is in the ``Session`` (settings, run directory, data, workers,
measuring device), fixed for the whole run.
"""
import dataclasses
import os
import sys

from tfmobile.netadapt.config import LoopConfig
from tfmobile.netadapt.history import RunDir


@dataclasses.dataclass(frozen=True)
class Point:
    iteration: int          # 0: the start
    spec: object            # tfmobile.models.ModelSpec
    checkpoint: str         # its weights (a tfmobile.train checkpoint directory)
    measured: float         # on the measuring device: what the budgets start from
    predicted: float        # by the LUT / count (only ranks proposals; see iteration.plan_iteration)
    val_accuracy: float     # top-1 on the validation split carved from the training images
    resources: dict = dataclasses.field(default_factory=dict)   # every constrained kind -> measured value


@dataclasses.dataclass(frozen=True)
class Start:
    """The start of the run (start/start.json) and the target derived from it."""
    point: Point
    measurement: dict
    train_epochs: int
    target: float           # absolute, in the resource's unit
    limits: dict = dataclasses.field(default_factory=dict)      # every constrained kind -> absolute limit

    def summary(self):
        return {"measured": self.point.measured, "predicted": self.point.predicted,
                "val_accuracy": self.point.val_accuracy, "train_epochs": self.train_epochs}


@dataclasses.dataclass(frozen=True)
class RunData:
    """The run's one split (validation carved from the training images), how the workers load it, and the
    int8 calibration images."""
    splits: object
    config: dict
    calibration: object
    _calibrations: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, splits, config):
        """The run's data from its split and ``LoopConfig.data_config``: the calibration images are drawn with
        the config's seed, so every reader of a run (the loop, a benchmark re-opening it) calibrates alike."""
        from tfmobile import data

        return cls(splits, config, data.sample_images(splits.x_train, tuple(config["input_shape"]),
                                                      seed=config["seed"]))

    @property
    def input_shape(self):
        return tuple(self.config["input_shape"])

    def calibration_for(self, input_shape):
        """The int8 calibration images at ``input_shape``: a model at another resolution (a resolution
        proposal, a baseline of the resolution grid) is calibrated on the same images, resized."""
        input_shape = tuple(input_shape)
        if input_shape == self.input_shape:
            return self.calibration
        if input_shape not in self._calibrations:
            from tfmobile import data

            self._calibrations[input_shape] = data.sample_images(self.splits.x_train, input_shape,
                                                                 seed=self.config["seed"])
        return self._calibrations[input_shape]


def log_stderr(message):
    sys.stderr.write(f"[netadapt] {message}\n")
    sys.stderr.flush()


@dataclasses.dataclass
class Session:
    """Settings, run directory, data, proposal pool and measuring device of one run (fixed once open)."""
    cfg: LoopConfig
    run_dir: RunDir
    pool: object = None
    measurer: object = None
    data: RunData = None
    log: object = log_stderr

    @property
    def lut(self):
        """The LUT the predictions use: this run's own lut.json unless --lut.

        It times ops on this host's LiteRT (litert backend); for the other backends it only ranks
        the proposals, and the measurements on the chosen backend decide.
        """
        return self.cfg.measurement.lut or self.run_dir.sub("lut.json")

    def checkpoint_spec(self, checkpoint):
        from tfmobile.models import ModelSpec

        return ModelSpec.load(os.path.join(checkpoint, "spec.json"))
