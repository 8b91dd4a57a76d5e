"""Why does the latency LUT under-predict ShuffleNet? Its channel shuffles timed alone vs in the network.

    python benchmarks/lut_context.py [--lut /tmp/lut_context.json] [--rounds 8] [--runs 800] [--json]

The LUT times every op on a one-op model and sums them (tfmobile.bench.lut); that is within 2-4 % for
the MobileNets and SqueezeNet, but ShuffleNet V1 was under-predicted by 11.5 % (docs/netadapt.md,
"Spec-derived latency"). ShuffleNet's extra ops are the channel shuffle (RESHAPE -> TRANSPOSE ->
RESHAPE) and, in V2, the channel split (STRIDED_SLICE). For each model this measures:

- the int8 model (random weights; the LUT benchmarks' conversion) and the same network with every
  channel shuffle removed (identity: its three ops gone, every other op identical), measured in
  alternating rounds in one pinned worker at 1 thread, on the LUT's clock (the invoking thread's CPU time);
- both predicted by one LUT from their specs (the LUT filled for both first);
- the shuffles' cost in context = measured(full) - measured(no shuffle), vs the LUT's
  predicted(full) - predicted(no shuffle); and the rest of the network's error.

The other families (no shuffle) are the controls: their two variants are the same model. Timing on a loaded
host is worthless: run it alone.
"""
import contextlib
import os

import tfmobile  # noqa: F401
from absl import flags

from pipelines import _cli

flags.DEFINE_string("lut", "/tmp/tfmobile_lut_context.json", "LUT file (built/extended for these models)")
flags.DEFINE_integer("rounds", 8, "interleaved rounds")
flags.DEFINE_integer("runs", 800, "timed invokes per model over all rounds")
flags.DEFINE_integer("resolution", 128, "input resolution")
flags.DEFINE_list("models", ["shufflenet_v1:0.5", "shufflenet_v2:1.0", "mbv2:0.35", "mbv1:0.5", "mbv3_small:0.75",
                             "mbv3_large:0.5", "squeezenet1_1:1.0"], "zoo models as NAME:ALPHA")
flags.DEFINE_boolean("json", False, "print one JSON object")
FLAGS = flags.FLAGS

SHUFFLE_OPS = ("RESHAPE", "TRANSPOSE")


@contextlib.contextmanager
def shuffles_removed():
    """Build and derive ShuffleNets with every channel shuffle an identity (Keras model and int8 op list alike)."""
    from tfmobile.analysis import int8
    from tfmobile.models import shufflenet

    keras_shuffle, graph_shuffle = shufflenet.channel_shuffle, int8.Int8Graph.shuffle
    shufflenet.channel_shuffle = lambda x, groups, name: x
    int8.Int8Graph.shuffle = lambda self, x, groups: x
    try:
        yield
    finally:
        shufflenet.channel_shuffle, int8.Int8Graph.shuffle = keras_shuffle, graph_shuffle


def variant(spec, no_shuffle):
    """The int8 .tflite bytes of ``spec`` with or without its shuffles."""
    from tfmobile import models
    from tfmobile.bench import lut as lut_mod

    with shuffles_removed() if no_shuffle else contextlib.nullcontext():
        return lut_mod.to_int8_tflite(models.build(spec))   # a Keras model: never the spec cache


def predicted(spec, no_shuffle, table):
    """The LUT's prediction (with its per-op rows) of ``spec`` with or without its shuffles."""
    from tfmobile.netadapt.resource import latency

    with shuffles_removed() if no_shuffle else contextlib.nullcontext():
        return latency(spec, table, detail=True)


def main(argv):
    from collections import Counter

    from tfmobile import models
    from tfmobile.bench import lut as lut_mod
    from tfmobile.convert import flatbuffer
    from tfmobile.netadapt.measure import interleaved
    from tfmobile.bench import host_device

    table = lut_mod.load_lut(FLAGS.lut) if os.path.exists(FLAGS.lut) else lut_mod.new_lut()
    r = FLAGS.resolution
    MODELS = [(m.split(":")[0], float(m.split(":")[1])) for m in FLAGS.models]
    built = {}
    specs = {name: models.get_spec(name, input_shape=(r, r, 3), alpha=alpha, classes=1000) for name, alpha in MODELS}
    for name, spec in specs.items():
        for no_shuffle in (False, True):
            built[(name, no_shuffle)] = variant(spec, no_shuffle)
    # one LUT for every variant: the entries any of them lacks, timed on synthesized one-op models
    from tfmobile.netadapt.resource import ensure_lut

    for no_shuffle in (False, True):
        with shuffles_removed() if no_shuffle else contextlib.nullcontext():
            ensure_lut(list(specs.values()), table)
    lut_mod.save_lut(table, FLAGS.lut)
    measured = interleaved({f"{n}|{int(s)}": b for (n, s), b in built.items()},
                           {"backend": "litert", "threads": 1, "runs": FLAGS.runs, "warmup": 20}, FLAGS.rounds)
    rows = []
    for name, alpha in MODELS:
        out = {"model": f"{name} {r}px a{alpha}"}
        for no_shuffle in (False, True):
            tflite = built[(name, no_shuffle)]
            detail = predicted(specs[name], no_shuffle, table)
            layers = detail["layers"]
            m = measured[f"{name}|{int(no_shuffle)}"]
            converted = Counter(op.name for op in flatbuffer.parse(tflite).ops)
            per_type = Counter()
            for row in detail["layers"]:
                per_type[row["op"]] += row["ms"]
            tag = "no_shuffle" if no_shuffle else "full"
            out[tag] = {"measured_ms": m["value"], "cv": m.get("cpu_cv"), "predicted_ms": detail["predicted_ms"],
                        "error_pct": 100 * (detail["predicted_ms"] - m["value"]) / m["value"],
                        "ops": len(layers), "derived_op_types": dict(Counter(l["op"] for l in layers)),
                        "predicted_ms_by_op_type": {k: round(v, 5) for k, v in per_type.items()},
                        "converted_op_types": dict(converted),
                        "lut_overhead_ms": detail["overhead_ms"], "lut_scale": detail["scale"]}
        f, n = out["full"], out["no_shuffle"]
        out["shuffle_in_context_ms"] = f["measured_ms"] - n["measured_ms"]
        out["shuffle_lut_ms"] = f["predicted_ms"] - n["predicted_ms"]
        out["shuffle_ops_lut_ms"] = sum(v for k, v in f["predicted_ms_by_op_type"].items() if k in SHUFFLE_OPS) - \
            sum(v for k, v in n["predicted_ms_by_op_type"].items() if k in SHUFFLE_OPS)
        rows.append(out)
    return {"device": lut_mod.device_key(host_device("litert", 1)),
            "clock": "cpu (invoking thread, 1 thread)", "rounds": FLAGS.rounds, "runs": FLAGS.runs,
            "loadavg": os.getloadavg(), "lut": FLAGS.lut, "rows": rows}


def _render(r):
    lines = ["| model | measured ms | predicted ms | error | no-shuffle measured | no-shuffle predicted | error | "
             "shuffles in context ms | shuffles by the LUT ms |", "|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        f, n = x["full"], x["no_shuffle"]
        lines.append(f"| {x['model']} | {f['measured_ms']:.4f} | {f['predicted_ms']:.4f} | {f['error_pct']:+.1f} % | "
                     f"{n['measured_ms']:.4f} | {n['predicted_ms']:.4f} | {n['error_pct']:+.1f} % | "
                     f"{x['shuffle_in_context_ms']:.4f} | {x['shuffle_lut_ms']:.4f} |")
    return "\n".join(lines) + f"\nload average {r['loadavg']}"


if __name__ == "__main__":
    _cli.run_and_emit(main, _render)
