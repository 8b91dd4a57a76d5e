"""Do int8 kernels have width steps? Latency of a 1x1 conv and a 3x3 depthwise conv across widths.

    python benchmarks/width_steps.py [--min_width 8] [--max_width 64] [--resolution 16] [--runs 600]
                                     [--rounds 6] [--json]

Why: NetAdapt's --channel_multiple (8 by default) assumes that XNNPACK's int8 kernels run a width that
is a multiple of 8 no slower than the narrower widths around it (they process channels in tiles). This
measures it: for every width W in [--min_width, --max_width] one int8 model holding one op (a 1x1
conv W -> W with ReLU, or a 3x3 depthwise conv of W channels with ReLU, on a --resolution square map),
converted by tfmobile.convert and timed on LiteRT at 1 thread with the invoking thread's CPU clock (the
LUT's), all widths of one op interleaved in one pinned worker (netadapt.measure.interleaved), so a
drift of the host hits every width alike. A "step" is a width whose latency is at least --step_pct
above the next narrower one's; "down" a width that is faster than the next narrower one.

Timing on a shared or loaded host is worthless: run it alone for the record.
"""
import numpy as np

import tfmobile  # noqa: F401
from absl import flags

from pipelines import _cli

flags.DEFINE_integer("min_width", 8, "narrowest width")
flags.DEFINE_integer("max_width", 64, "widest width")
flags.DEFINE_integer("resolution", 16, "height and width of the op's input map")
flags.DEFINE_integer("runs", 600, "timed invokes per model (split over the rounds)")
flags.DEFINE_integer("rounds", 6, "interleaved rounds")
flags.DEFINE_integer("warmup", 20, "warm-up invokes per model")
flags.DEFINE_float("step_pct", 10.0, "a width this many percent slower than the next narrower one is a step")
flags.DEFINE_boolean("json", False, "print one JSON object")
FLAGS = flags.FLAGS

OPS = ("conv_1x1", "depthwise_3x3")


def one_op_model(op, width, resolution):
    """The int8 .tflite of one ``op`` on a ``resolution`` x ``resolution`` x ``width`` input."""
    import tf_keras as keras

    from tfmobile import convert

    inputs = keras.Input((resolution, resolution, width))
    if op == "conv_1x1":
        layer = keras.layers.Conv2D(width, 1, activation="relu")
    else:
        layer = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")
    model = keras.Model(inputs, layer(inputs))
    calibration = np.random.default_rng(0).uniform(-1, 1, (8, resolution, resolution, width)).astype(np.float32)
    return convert.to_tflite(model, "int8", representative_data=calibration)


def steps(rows, step_pct):
    """Widths slower than the next narrower one by step_pct or more, and widths faster than it."""
    up, down = [], []
    for narrower, row in zip(rows, rows[1:]):
        change = 100.0 * (row["ms"] / narrower["ms"] - 1.0)
        if change >= step_pct:
            up.append({"width": row["width"], "pct": round(change, 1)})
        elif change < 0:
            down.append({"width": row["width"], "pct": round(change, 1)})
    return up, down


def main(argv):
    from tfmobile import bench
    from tfmobile.errors import UserError
    from tfmobile.netadapt.measure import cv_of, interleaved

    if not 1 <= FLAGS.min_width < FLAGS.max_width:
        raise UserError(f"need 1 <= --min_width < --max_width, got {FLAGS.min_width}, {FLAGS.max_width}")
    if FLAGS.resolution < 1 or FLAGS.rounds < 1 or FLAGS.runs < FLAGS.rounds:
        raise UserError("need --resolution >= 1, --rounds >= 1 and --runs >= --rounds")
    settings = {"backend": "litert", "threads": 1, "runs": FLAGS.runs, "warmup": FLAGS.warmup}
    widths = list(range(FLAGS.min_width, FLAGS.max_width + 1))
    result = {"device": bench.host_device("litert", 1), "resolution": FLAGS.resolution, "runs": FLAGS.runs,
              "rounds": FLAGS.rounds, "clock": "cpu", "step_pct": FLAGS.step_pct, "ops": {}}
    for op in OPS:
        models = {w: one_op_model(op, w, FLAGS.resolution) for w in widths}
        timed = interleaved(models, settings, FLAGS.rounds)
        rows = [{"width": w, "ms": timed[w]["value"], "cv": cv_of(timed[w]),
                 "ns_per_channel": 1e6 * timed[w]["value"] / w} for w in widths]
        up, down = steps(rows, FLAGS.step_pct)
        result["ops"][op] = {"rows": rows, "steps": up, "faster_than_narrower": down,
                             "multiples_of_8_with_a_step_after": [s["width"] - 1 for s in up
                                                                  if (s["width"] - 1) % 8 == 0]}
    return result


def _render(r):
    lines = [f"device: {r['device']['cpu']} | litert | 1 thread | {r['resolution']}x{r['resolution']} map"]
    for op, o in r["ops"].items():
        lines.append(f"{op}: " + ", ".join(f"{x['width']}:{x['ms']:.4f}" for x in o["rows"]))
        lines.append(f"  steps (>= {r['step_pct']:g} % above the narrower width): "
                     f"{', '.join(str(s['width']) for s in o['steps']) or 'none'}")
    return "\n".join(lines)


if __name__ == "__main__":
    _cli.run_and_emit(main, _render)
