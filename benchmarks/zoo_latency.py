"""Latency of every zoo family at 224x224 int8 (litert, 1 and 2 threads) beside keras.applications.

    python benchmarks/zoo_latency.py [--runs 200] [--rounds 20] [--json]

All models (random weights, 1000 classes, alpha 1.0) are converted the same way
(tfmobile.convert.to_tflite, int8 with int8 I/O, 8 real calibration images); keras.applications'
MobileNetV2 and MobileNetV3Small (include_preprocessing=False, so [-1,1] inputs like ours) go
through the same call. Measurement: one pinned child process per thread count holds every model;
``--rounds`` interleaved rounds run each model in turn (ours and keras' alternate), so a load change
on the shared machine hits both sides of a comparison alike. Reported latency is the median over all
runs. ``ratio`` = ours / keras (must be <= 1.00), also computed per round (median of per-round
ratios) as a check. ``same_graph`` says whether the two int8 graphs run identical op configurations.
"""
import collections
import datetime
import os
import time

import tfmobile  # noqa: F401
from absl import flags

from pipelines import _cli

OURS = ["mbv1", "mbv2", "mbv3_small", "mbv3_large", "shufflenet_v1", "shufflenet_v2", "squeezenet1_0",
        "squeezenet1_1"]
PAIRS = {"mbv2": "keras_mbv2", "mbv3_small": "keras_mbv3_small"}

flags.DEFINE_integer("resolution", 224, "input resolution")
flags.DEFINE_integer("runs", 200, "timed invokes per model and thread count")
flags.DEFINE_integer("rounds", 100, "interleaved rounds (runs // rounds consecutive invokes per model per round)")
flags.DEFINE_list("threads", ["1", "2"], "thread counts")
flags.DEFINE_string("work_dir", None, "cache of converted models (default /tmp/tfmobile_bench)")
flags.DEFINE_bool("convert_only", False, "only convert (warm the cache)")
flags.DEFINE_bool("json", False, "print one JSON object")
flags.DEFINE_string("markdown_from", None, "print the docs table from a saved --json output and exit")
FLAGS = flags.FLAGS


def _order():
    """Ours and keras' alternate: mbv2, keras_mbv2, mbv3_small, keras_mbv3_small, then the rest."""
    names = []
    for ours, theirs in PAIRS.items():
        names += [ours, theirs]
    return names + [n for n in OURS if n not in PAIRS]


def _canonical(config):
    """Config key where the padding of a 1x1 stride-1 conv is dropped (SAME and VALID compute the same)."""
    import copy
    import json
    c = copy.deepcopy(config)
    w = c["inputs"][1]["shape"] if c["op"] == "CONV_2D" and len(c["inputs"]) > 1 and c["inputs"][1] else None
    if w and w[1:3] == [1, 1] and c["options"].get("strideH") == 1 and c["options"].get("strideW") == 1:
        c["options"].pop("padding", None)
    return json.dumps(c, sort_keys=True)


def markdown(r):
    ts = [k for k in ("t1", "t2") if any(k in m for m in r["models"].values())]
    head = "| model | MMACs | ops | int8 KB | " + " | ".join(
        f"{t[1:]} thread median ms (p90, cv)" for t in ts) + " | 1 thread CPU-time median ms |"
    lines = [head, "|" + "---|" * (5 + len(ts))]
    for n, m in r["models"].items():
        label = n.replace("keras_", "keras.applications ") if n.startswith("keras_") else f"tfmobile {n}"
        cells = [f"{m[t]['median_ms']:.2f} ({m[t]['p90_ms']:.2f}, {100 * m[t]['cv']:.0f}%)" for t in ts]
        cpu = m.get("t1", {}).get("cpu_median_ms")
        lines.append(f"| {label} | {m['macs_m']:.0f} | {m['ops']} | {m['bytes'] // 1024} | " + " | ".join(cells)
                     + f" | {cpu if cpu is not None else '-'} |")
    lines += ["", "| ours / keras.applications | threads | ours ms | keras ms | ratio (medians) | median per-round ratio "
              "| CPU-time ratio | identical op configs | <= 1.00 |", "|---|---|---|---|---|---|---|---|---|"]
    for c in r["comparisons"]:
        lines.append(f"| {c['ours']} / {c['keras']} | {c['threads']} | {c['ours_ms']:.2f} | {c['keras_ms']:.2f} | "
                     f"{c['ratio']:.3f} | {c['ratio_per_round_median']:.3f} | "
                     f"{c['cpu_ratio'] if c.get('cpu_ratio') is not None else '-'} | {c['same_graph']} | "
                     f"{'yes' if c['pass'] else 'NO'} |")
    return "\n".join(lines)


def _git_state():
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tfmobile/models"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"head": head, "models_dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv):
    if FLAGS.markdown_from:
        import json
        with open(FLAGS.markdown_from) as f:
            print(markdown(json.load(f)))
        return None
    from tfmobile.bench import graph, zoo
    from tfmobile.convert import flatbuffer
    from tfmobile.bench.litert import run_worker
    from tfmobile.bench.stats import median, summarize
    from tfmobile.errors import UserError

    res = FLAGS.resolution
    work = FLAGS.work_dir or zoo.DEFAULT_WORK_DIR
    names = _order()
    paths = {}
    for n in names:
        if n.startswith("keras_"):
            paths[n] = zoo.keras_app_tflite(n, res, 1.0, work_dir=work)
        else:
            paths[n] = zoo.zoo_tflite(n, res, 1.0, work_dir=work)
    if FLAGS.convert_only:
        return {"converted": paths}
    facts = {}
    for n in names:
        data = flatbuffer.read_tflite(paths[n])
        layers = graph.layers(data)
        facts[n] = {"bytes": len(data), "ops": len(layers),
                    "macs_m": round(sum(ly["macs"] for ly in layers) / 1e6, 1),
                    "configs": collections.Counter(_canonical(ly["config"]) for ly in layers)}
    cpus_all = sorted(os.sched_getaffinity(0))
    out = {"git": _git_state(), "converted": {n: datetime.datetime.fromtimestamp(
               os.path.getmtime(p), datetime.timezone.utc).isoformat(timespec="seconds") for n, p in paths.items()},
           "resolution": res, "runs": FLAGS.runs, "rounds": FLAGS.rounds, "backend": "litert",
           "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "loadavg_before": os.getloadavg(), "models": {}, "comparisons": []}
    per_round = {}
    for t in [int(x) for x in FLAGS.threads]:
        if t > len(cpus_all):
            raise UserError(f"{t} threads but only {len(cpus_all)} CPUs")
        _cli.progress(f"measuring {len(names)} models at {t} thread(s), {FLAGS.rounds} interleaved rounds")
        t0 = time.time()
        r = run_worker([paths[n] for n in names], threads=t, runs=FLAGS.runs, warmup=5, rounds=FLAGS.rounds)
        for n, rr in zip(names, r["results"]):
            if "error" in rr:
                raise UserError(f"{n}: {rr['error']}")
            s = summarize(rr["times_ms"])
            m = out["models"].setdefault(n, {"tflite": os.path.basename(paths[n]), "bytes": facts[n]["bytes"],
                                             "ops": facts[n]["ops"], "macs_m": facts[n]["macs_m"]})
            m[f"t{t}"] = {"median_ms": round(s["median_ms"], 3), "mean_ms": round(s["mean_ms"], 3),
                          "p90_ms": round(s["p90_ms"], 3), "min_ms": round(s["min_ms"], 3),
                          "cv": round(s["cv"], 3)}
            if t == 1 and rr.get("cpu_times_ms"):
                m["t1"]["cpu_median_ms"] = round(median(rr["cpu_times_ms"]), 3)
            k = len(rr["times_ms"]) // FLAGS.rounds
            per_round[(n, t)] = [median(rr["times_ms"][i * k:(i + 1) * k]) for i in range(FLAGS.rounds)]
        out[f"t{t}_seconds"] = round(time.time() - t0, 1)
        out[f"t{t}_cpus"] = r.get("cpus")
        for ours, theirs in PAIRS.items():
            a, b = out["models"][ours][f"t{t}"], out["models"][theirs][f"t{t}"]
            rr = [x / y for x, y in zip(per_round[(ours, t)], per_round[(theirs, t)])]
            out["comparisons"].append({
                "ours": ours, "keras": theirs, "threads": t, "ours_ms": a["median_ms"], "keras_ms": b["median_ms"],
                "ratio": round(a["median_ms"] / b["median_ms"], 3), "ratio_per_round_median": round(median(rr), 3),
                "same_graph": facts[ours]["configs"] == facts[theirs]["configs"],
                "cpu_ratio": (round(a["cpu_median_ms"] / b["cpu_median_ms"], 3) if "cpu_median_ms" in a else None),
                "pass": a["median_ms"] / b["median_ms"] <= 1.0})
    out["loadavg_after"] = os.getloadavg()
    out["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    out["all_pass"] = all(c["pass"] for c in out["comparisons"])
    return out


def _render(r):
    if "converted" in r:
        return "\n".join(f"{k}: {v}" for k, v in r["converted"].items())
    ts = [k for k in ("t1", "t2") if any(k in m for m in r["models"].values())]
    lines = [f"{'model':18s} {'MMACs':>7s} {'ops':>4s} " + " ".join(f"{t + ' median ms':>15s}" for t in ts)]
    for n, m in r["models"].items():
        lines.append(f"{n:18s} {m['macs_m']:7.1f} {m['ops']:4d} " + " ".join(f"{m[t]['median_ms']:15.3f}" for t in ts))
    for c in r["comparisons"]:
        lines.append(f"{c['ours']} / {c['keras']} @{c['threads']}t: {c['ratio']:.3f} "
                     f"(per-round {c['ratio_per_round_median']:.3f}, same graph: {c['same_graph']})")
    lines.append(f"load average before {r['loadavg_before']} after {r['loadavg_after']}")
    return "\n".join(lines)


if __name__ == "__main__":
    def _main(argv):
        r = main(argv)
        if r is not None:
            _cli.emit(r, FLAGS.json, _render)
    _cli.run(_main)
