"""How much of a §4 verdict (issue 19) is the training seed: the same architectures retrained with other seeds.

    python benchmarks/netadapt_seed_spread.py --setting_dir /work/runs/na20/mbv2_a1_r32 --seeds 1 --json

Why: §4 trains every model once. On mbv2 32x32 the width multiplier's curve is flat (alpha 0.5 -> 0.75 is +0.9
points for 1.8x the latency) and alpha 1.0 came out *less* accurate than alpha 0.75, so a few tenths of a point of
one training run move the ratio by a tenth; netadapt_ratio_interval.py bounds the test set's part of that, this
script the training's. From a finished setting of benchmarks/netadapt_vs_multiplier.py (its WORK_DIR/<setting>:
run/report.json, measured.json), for each seed of --seeds: the found architecture trained from scratch (the
default final stage, the run's budget and settings) and every baseline, each with that seed (weights, batch order,
augmentation); the data split stays the run's. Each is LiteRT top-1 on the 10,000 test images; latencies are the
setting's one interleaved measurement (the same architectures: a model's int8 latency does not depend on its
weights). Then ``final.compare`` per seed (seed 0: the setting's own models) and on the seeds' mean accuracies.
Each model of each seed leaves its file (resumable: the slowest, alpha 1.0, ~20 min on 2 cores); --models orders
and limits what is trained.
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfmobile  # noqa: E402,F401
from absl import flags  # noqa: E402

from pipelines import _cli  # noqa: E402

flags.DEFINE_string("setting_dir", None, "a finished setting of netadapt_vs_multiplier.py (WORK_DIR/<setting>).")
flags.DEFINE_list("seeds", ["1"], "training seeds besides the setting's own (its --seed, 0 by default).")
flags.DEFINE_list("models", [], "what to retrain, in this order: netadapt and baseline alphas (default: netadapt, "
                                "then every baseline, the nearest to its top-1 first: those decide the ratio).")
flags.DEFINE_string("out", None, "write the result JSON here too.")
flags.DEFINE_boolean("json", False, "print one JSON object.")
FLAGS = flags.FLAGS


def load_setting(setting_dir):
    """(LoopConfig of the run, its report.json, measured.json); one-line errors for what is not a finished setting."""
    from tfmobile.errors import UserError
    from tfmobile.netadapt.config import LoopConfig

    paths = {name: os.path.join(setting_dir, *parts) for name, parts in
             (("report", ("run", "report.json")), ("measured", ("measured.json",)))}
    for name, path in paths.items():
        if not os.path.isfile(path):
            raise UserError(f"--setting_dir {setting_dir}: no {os.path.relpath(path, setting_dir)} there "
                            f"(not a finished setting of netadapt_vs_multiplier.py)")
    with open(paths["report"]) as f:
        rep = json.load(f)
    with open(paths["measured"]) as f:
        measured = json.load(f)
    if not rep.get("final") or not rep.get("baselines"):
        raise UserError(f"{paths['report']}: the run has no final model and baselines")
    cfg = LoopConfig.of(**rep["config"]).replace(baselines_dir=os.path.join(setting_dir, "baselines"))
    return cfg, rep, measured


def parse_seeds(values, own):
    from tfmobile.errors import UserError

    try:
        seeds = [int(v) for v in values]
    except ValueError:
        raise UserError(f"--seeds must be whole numbers, got {','.join(values)}") from None
    if not seeds or own in seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must be distinct and other than the setting's own seed {own}, got {','.join(values)}")
    return seeds


def parse_models(values, alphas, accuracy):
    """The models to retrain, in order; ``accuracy`` {model: top-1} orders the default."""
    from tfmobile.errors import UserError

    known = ["netadapt"] + [f"{a:g}" for a in alphas]
    if not values:
        return ["netadapt"] + sorted(known[1:], key=lambda m: abs(accuracy[m] - accuracy["netadapt"]))
    models = [v if v == "netadapt" else _alpha_key(v) for v in values]
    bad = [v for v, m in zip(values, models) if m not in known]
    if bad or not models:
        raise UserError(f"--models: {','.join(bad) or 'none'} not in this setting ({','.join(known)})")
    return models


def _alpha_key(text):
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def retrain(cfg, rep, setting_dir, seed, model, data):
    """The row (LiteRT top-1 and the training's record) of ``model`` retrained with ``seed``; cached in its folder."""
    from tfmobile.netadapt import final
    from tfmobile.netadapt.history import RunDir
    from tfmobile.netadapt.state import Point, Start, log_stderr
    from tfmobile.models import ModelSpec

    seeded = cfg.replace(seed=seed, final="from_scratch", distill=0.0)
    run_dir = RunDir(os.path.join(setting_dir, "seeds", f"seed{seed}"), log=log_stderr)
    train_epochs = rep["start"]["train_epochs"]
    if model == "netadapt":
        # final_model reads the architecture from the checkpoint's spec.json: the run's found one
        from tfmobile.io import write_json

        arch = run_dir.sub("architecture")
        write_json(os.path.join(arch, "spec.json"), ModelSpec.from_dict(rep["final"]["spec"]).to_dict())
        return final.final_model(seeded, run_dir, data, train_epochs, arch, log_stderr, tflm=False)
    start_spec = ModelSpec.load(os.path.join(setting_dir, "run", "start", "checkpoint", "spec.json"))
    start = Start(Point(0, start_spec, None, rep["start"]["measured"], None, None), {}, train_epochs, None)
    alpha = next(b["alpha"] for b in rep["baselines"] if f"{b['alpha']:g}" == model)
    return final.baseline(seeded, run_dir, data, start, cfg.start.model, alpha, log_stderr, tflm=False)


def file_key(model):
    """measured.json's key of a model: "netadapt", or the alpha as the issue's manifest writes it ("1.0")."""
    return model if model == "netadapt" else str(float(model))


def compare(latency, accuracy, alphas, target):
    """``final.compare`` of the NetAdapt model with the baselines' curve: {model: ms}, {model: top-1}."""
    from tfmobile.netadapt.final import compare as on_frontier

    curve = [{"alpha": a, "measured": latency[f"{a:g}"], "accuracy": accuracy[f"{a:g}"]} for a in alphas]
    c = on_frontier({"measured": latency["netadapt"], "accuracy": accuracy["netadapt"]}, curve, "latency", target)
    gain = c.get("accuracy_gain_at_equal_value")
    return {"ratio_at_equal_accuracy": c.get("ratio_at_equal_accuracy"),
            "ratio_is_upper_bound": bool(c.get("ratio_is_upper_bound")),
            "gain_points": None if gain is None else 100 * gain,
            "dominated_baselines": c.get("dominated_baselines", []),
            "lowest_ratio_at_target": c.get("lowest_ratio_at_target")}


def main(argv):
    from tfmobile.errors import UserError

    if not FLAGS.setting_dir:
        raise UserError("--setting_dir is required (a finished setting of netadapt_vs_multiplier.py)")
    cfg, rep, measured = load_setting(FLAGS.setting_dir)
    own = cfg.fine_tune.seed
    seeds = parse_seeds(FLAGS.seeds, own)
    alphas = [b["alpha"] for b in rep["baselines"]]
    every = ["netadapt"] + [f"{a:g}" for a in alphas]
    latency = {m: measured["latency"][file_key(m)]["value"] for m in every}
    accuracy = {own: {m: measured["accuracy"][measured["digests"][file_key(m)]]["accuracy"] for m in every}}
    models = parse_models(FLAGS.models, alphas, accuracy[own])
    if FLAGS.out:
        from tfmobile.io import check_writable

        check_writable(FLAGS.out)
    from tfmobile.netadapt.state import RunData
    from tfmobile.netadapt.workers import load_splits

    config = cfg.data_config(tuple(rep["final"]["spec"]["input_shape"]))
    data = RunData.of(load_splits(config), config)   # the run's split, whatever the training seed
    rows = {}
    for seed in seeds:
        accuracy[seed] = {}
        for model in models:
            _cli.progress(f"netadapt_seed_spread: seed {seed}: {model}")
            row = retrain(cfg, rep, FLAGS.setting_dir, seed, model, data)
            accuracy[seed][model] = row["accuracy"]
            rows[f"{model}@{seed}"] = {"accuracy": row["accuracy"], "seconds": row.get("seconds"),
                                       "epochs": row.get("epochs"), "path": row["path"]}
    complete = [s for s in accuracy if all(m in accuracy[s] for m in every)]
    per_model = {}
    for m in every:
        values = [accuracy[s][m] for s in accuracy if m in accuracy[s]]
        per_model[m] = {"latency_ms": latency[m], "accuracy": {str(s): accuracy[s].get(m) for s in accuracy},
                        "mean": statistics.fmean(values), "spread_points": 100 * (max(values) - min(values))}
    result = {"setting": os.path.basename(os.path.normpath(FLAGS.setting_dir)),
              "what": "the setting's architectures retrained with other seeds (same data split, same budget); "
                      "latencies from the setting's interleaved measurement",
              "seeds": [own] + seeds, "models": per_model, "retrained": rows,
              "per_seed": {str(s): compare(latency, accuracy[s], alphas, rep["target_value"]) for s in complete}}
    if len(complete) > 1:
        result["on_mean_accuracy"] = compare(latency, {m: statistics.fmean(accuracy[s][m] for s in complete)
                                                       for m in every}, alphas, rep["target_value"])
        result["mean_over"] = complete
    if FLAGS.out:
        from tfmobile.io import write_json

        write_json(FLAGS.out, result)
    return result


def _render(r):
    lines = [f"{r['setting']}: seeds {', '.join(str(s) for s in r['seeds'])}"]
    for m, row in r["models"].items():
        accs = ", ".join("-" if a is None else f"{100 * a:.2f}" for a in row["accuracy"].values())
        lines.append(f"  {m}: {row['latency_ms']:.4f} ms, top-1 {accs} % (spread {row['spread_points']:.2f} points)")
    for s, c in r["per_seed"].items():
        lines.append(f"  seed {s}: ratio {c['ratio_at_equal_accuracy']}, gain {c['gain_points']}")
    if "on_mean_accuracy" in r:
        c = r["on_mean_accuracy"]
        lines.append(f"  on the mean: ratio {c['ratio_at_equal_accuracy']}, gain {c['gain_points']}")
    return "\n".join(lines)


def _main(argv):
    _cli.emit(main(argv), FLAGS.json, _render)


if __name__ == "__main__":
    _cli.run(_main)
