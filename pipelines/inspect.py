"""Inspect a model: per-layer params, MACs and activation sizes; flash and peak-memory estimates.

    python -m pipelines.inspect --model mbv2 --alpha 0.35 --resolution 96 --classes 10
    python -m pipelines.inspect --model shufflenet_v1 --groups 8 --json
    python -m pipelines.inspect --model squeezenet1_1 --bypass complex --save_spec sq.json
    python -m pipelines.inspect --spec sq.json          # after editing a block's widths

Nothing is trained or run: the Keras graph is built (random weights) and counted by
tfmobile.analysis.profile. With --json, one JSON object on stdout: model, params, macs,
peak_activation_bytes (int8), peak_activation_bytes_float32, flash_bytes (int8 estimate) and layers
(name, type, input_shape, output_shape, params, macs, output_bytes, fused_into).
"""
import json
import math

from absl import flags

from pipelines import _cli
from tfmobile.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "mbv2", "zoo model name (see tfmobile.models.available()).")
flags.DEFINE_float("alpha", 1.0, "width multiplier (the scale factor for ShuffleNet).")
flags.DEFINE_integer("resolution", 224, "input resolution (square).", upper_bound=_cli.MAX_RESOLUTION)
flags.DEFINE_integer("classes", 1000, "number of classes.")
flags.DEFINE_integer("groups", None, "shufflenet_v1 only: groups (1, 2, 3, 4 or 8; default 3).")
flags.DEFINE_string("bypass", None, "squeezenet only: none, simple or complex (default none).")
flags.DEFINE_boolean("minimalistic", False, "mbv3_small / mbv3_large only: the minimalistic variant.")
flags.DEFINE_string("spec", None, "inspect this ModelSpec JSON file instead of a zoo model.")
flags.DEFINE_string("save_spec", None, "also write the model's spec (JSON) here, e.g. to edit it.")
flags.DEFINE_boolean("json", False, "print exactly one JSON object on stdout.")

_MODEL_FLAGS = ("model", "alpha", "resolution", "classes", "groups", "bypass", "minimalistic")
# Checked here before TensorFlow is imported (seconds) so that a typo fails fast; the spec
# functions check the same sets again (tfmobile.models.arguments.RULES).
_V1_GROUPS = (1, 2, 3, 4, 8)
_BYPASS = ("none", "simple", "complex")


def _precheck():
    """Flag errors that need no model code; returns the spec file's text when --spec is given."""
    if FLAGS.spec:
        given = [f"--{f}" for f in _MODEL_FLAGS if FLAGS[f].present]
        if given:
            raise UserError(f"--spec brings its own architecture; drop {', '.join(given)}")
        try:
            with open(FLAGS.spec, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise UserError(f"cannot read spec file {FLAGS.spec}: {e.strerror}") from None
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"malformed spec JSON in {FLAGS.spec}: {e.msg} at line {e.lineno} "
                            f"column {e.colno}") from None
        return text
    if not (math.isfinite(FLAGS.alpha) and FLAGS.alpha > 0):
        raise UserError(f"alpha must be a positive number, got {FLAGS.alpha!r}")
    if FLAGS.resolution < 1:
        raise UserError(f"resolution must be a positive integer, got {FLAGS.resolution}")
    if FLAGS.classes < 1:
        raise UserError(f"classes must be a positive integer, got {FLAGS.classes}")
    if FLAGS.groups is not None:
        if FLAGS.model != "shufflenet_v1":
            raise UserError(f"--groups applies only to shufflenet_v1, not {FLAGS.model}")
        if FLAGS.groups not in _V1_GROUPS:
            raise UserError(f"shufflenet_v1 groups must be one of {', '.join(map(str, _V1_GROUPS))}, "
                            f"got {FLAGS.groups}")
    if FLAGS.bypass is not None:
        if not FLAGS.model.startswith("squeezenet"):
            raise UserError(f"--bypass applies only to squeezenet1_0 / squeezenet1_1, not {FLAGS.model}")
        if FLAGS.bypass not in _BYPASS:
            raise UserError(f"{FLAGS.model} bypass must be one of {', '.join(_BYPASS)}, "
                            f"got {FLAGS.bypass!r}")
    if FLAGS.minimalistic and not FLAGS.model.startswith("mbv3"):
        raise UserError(f"--minimalistic applies only to mbv3_small / mbv3_large, not {FLAGS.model}")
    return None


def _zoo_spec():
    from tfmobile import models

    name = FLAGS.model
    known = models.available()
    if name not in known:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(known)}")
    kwargs = dict(input_shape=(FLAGS.resolution, FLAGS.resolution, 3), alpha=FLAGS.alpha,
                  classes=FLAGS.classes)
    if FLAGS.groups is not None:
        kwargs["groups"] = FLAGS.groups
    if FLAGS.bypass is not None:
        kwargs["bypass"] = FLAGS.bypass
    if FLAGS.minimalistic:
        kwargs["minimalistic"] = True
    return models.get_spec(name, **kwargs)


def _render(result):
    return result.pop("_table")


def main(argv):
    del argv
    spec_text = _precheck()
    _cli.check_output(FLAGS.save_spec, flag="save_spec")
    import tfmobile.io as tio
    from tfmobile import analysis, models
    from tfmobile.models.spec import ModelSpec

    if spec_text is not None:
        spec = ModelSpec.from_json(spec_text)
    else:
        spec = _zoo_spec()
    _cli.progress(f"building {spec.name} ({len(spec.blocks)} blocks)")
    model = models.build(spec)
    prof = analysis.profile(model)
    if FLAGS.save_spec:
        tio.write_text(FLAGS.save_spec, spec.to_json() + "\n")
        _cli.progress(f"spec written to {FLAGS.save_spec}")
    result = dict(model=spec.name, family=spec.family, source=FLAGS.spec or "zoo")
    result.update(prof.to_dict())
    result["model"] = spec.name
    if FLAGS.save_spec:
        result["spec_file"] = FLAGS.save_spec
    if not FLAGS.json:
        result["_table"] = prof.table()
    _cli.emit(result, FLAGS.json, _render)
    return 0


if __name__ == "__main__":
    _cli.run(main)
