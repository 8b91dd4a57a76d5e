"""A finished §4 setting (issue 19) retrained: how much of its verdict is the training seed, and what distillation adds.

    python benchmarks/netadapt_retrain.py --setting_dir /work/runs/na20/mbv2_a1_r32 --seeds 1 --json
    python benchmarks/netadapt_retrain.py --setting_dir /work/runs/na21/mbv1_a1_r32 --seeds 0 --distill 0.5 \
        --models netadapt --json

Why: §4 trains every model once. On mbv2 32x32 the width multiplier's curve is flat (alpha 0.5 -> 0.75 is +0.9
points for 1.8x the latency) and alpha 1.0 came out *less* accurate than alpha 0.75, so a few tenths of a point of
one training run move the ratio by a tenth; netadapt_ratio_interval.py bounds the test set's part of that, --seeds
here the training's. --distill W is the final stage §1 left unmeasured: the found architecture from scratch with the
start model as teacher (``--final from_scratch --distill W``); baselines named in --models are distilled alike, so
the gain can be split into architecture and distillation.

From a finished setting of benchmarks/netadapt_vs_multiplier.py (WORK_DIR/<setting>: run/report.json,
measured.json), for each seed of --seeds, the models of --models (netadapt: the found architecture through the final
stage from scratch; an alpha: that baseline), each with the run's budget and settings and that seed (weights, batch
order, augmentation); the data split stays the run's. Each is LiteRT top-1 on the 10,000 test images; latencies are
the setting's one interleaved measurement (the same architectures: an int8 model's latency does not depend on its
weights). A variant (seed, distillation) is compared with ``final.compare``; a baseline it did not retrain is the
setting's own (``baselines_from`` says which). Each model of each variant leaves its file (resumable: alpha 1.0 is
~20 min on 2 cores).
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
flags.DEFINE_list("seeds", ["1"], "training seeds (the setting's own seed only with --distill: it is trained).")
flags.DEFINE_float("distill", 0.0, "soft-target weight of distillation from the start model (0: none).")
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
    for path in paths.values():
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


def parse_seeds(values, own, distill):
    from tfmobile.errors import UserError

    try:
        seeds = [int(v) for v in values]
    except ValueError:
        raise UserError(f"--seeds must be whole numbers, got {','.join(values)}") from None
    if not seeds or len(set(seeds)) != len(seeds) or (own in seeds and not distill):
        raise UserError(f"--seeds must be distinct and, without --distill, other than the setting's own seed {own} "
                        f"(its models are the setting's), got {','.join(values)}")
    return seeds


def parse_models(values, alphas, accuracy):
    """The models to retrain, in order; ``accuracy`` {model: top-1} orders the default."""
    from tfmobile.errors import UserError

    known = ["netadapt"] + [alpha_key(a) for a in alphas]
    if not values:
        return ["netadapt"] + sorted(known[1:], key=lambda m: abs(accuracy[m] - accuracy["netadapt"]))
    models = [v if v == "netadapt" else alpha_key(v) for v in values]
    bad = [v for v, m in zip(values, models) if m not in known]
    if bad:
        raise UserError(f"--models: {','.join(bad)} not in this setting ({','.join(known)})")
    return models


def alpha_key(alpha):
    """An alpha as measured.json and the issue's manifest write it ("1.0", "0.35"), whatever the spelling given."""
    try:
        return str(float(alpha))
    except ValueError:
        return str(alpha)


def variant_name(seed, distill):
    return f"seed{seed}" + (f"_distill{distill:g}" if distill else "")


def retrain(cfg, rep, setting_dir, seed, distill, model, data):
    """The row (LiteRT top-1 and the training's record) of ``model`` retrained with ``seed`` (and distilled from the
    start model with weight ``distill``); cached in its folder."""
    from tfmobile import train
    from tfmobile.io import write_json
    from tfmobile.models import ModelSpec
    from tfmobile.netadapt import final
    from tfmobile.netadapt.history import RunDir
    from tfmobile.netadapt.state import Point, Start, log_stderr

    variant = cfg.replace(seed=seed, final="from_scratch", distill=distill)
    run_dir = RunDir(os.path.join(setting_dir, "retrained", variant_name(seed, distill)), log=log_stderr)
    train_epochs = rep["start"]["train_epochs"]
    start_checkpoint = os.path.join(setting_dir, "run", "start", "checkpoint")
    if model == "netadapt":
        # final_model reads the architecture from the checkpoint's spec.json: the run's found one
        arch = run_dir.sub("architecture")
        write_json(os.path.join(arch, "spec.json"), ModelSpec.from_dict(rep["final"]["spec"]).to_dict())
        return final.final_model(variant, run_dir, data, train_epochs, arch, log_stderr,
                                 teacher_checkpoint=start_checkpoint, tflm=False)
    start_spec = ModelSpec.load(os.path.join(start_checkpoint, "spec.json"))
    start = Start(Point(0, start_spec, start_checkpoint, rep["start"]["measured"], None, None), {}, train_epochs, None)
    alpha = next(b["alpha"] for b in rep["baselines"] if alpha_key(b["alpha"]) == model)
    teacher = train.load_checkpoint(start_checkpoint) if distill else None
    return final.baseline(variant, run_dir, data, start, cfg.start.model, alpha, log_stderr, tflm=False,
                          teacher=teacher)


def compare(latency, accuracy, target):
    """``final.compare_models`` of the NetAdapt model with the baselines' curve: {model: ms}, {model: top-1}."""
    from tfmobile.netadapt.final import compare_models

    c = compare_models((latency["netadapt"], accuracy["netadapt"]),
                       {m: (latency[m], accuracy[m]) for m in latency if m != "netadapt"}, target)
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
    if not 0.0 <= FLAGS.distill < 1.0:
        raise UserError(f"--distill must be in [0, 1), got {FLAGS.distill:g}")
    cfg, rep, measured = load_setting(FLAGS.setting_dir)
    own = cfg.fine_tune.seed
    seeds = parse_seeds(FLAGS.seeds, own, FLAGS.distill)
    alphas = [b["alpha"] for b in rep["baselines"]]
    every = ["netadapt"] + [alpha_key(a) for a in alphas]
    latency = {m: measured["latency"][m]["value"] for m in every}
    setting_own = variant_name(own, 0.0)
    accuracy = {setting_own: {m: measured["accuracy"][measured["digests"][m]]["accuracy"] for m in every}}
    models = parse_models(FLAGS.models, alphas, accuracy[setting_own])
    if FLAGS.out:
        from tfmobile.io import check_writable

        check_writable(FLAGS.out)
    from tfmobile.netadapt.state import RunData
    from tfmobile.netadapt.workers import load_splits

    config = cfg.data_config(tuple(rep["final"]["spec"]["input_shape"]))
    data = RunData.of(load_splits(config), config)   # the run's split, whatever the training seed
    retrained = {}
    for seed in seeds:
        name = variant_name(seed, FLAGS.distill)
        accuracy[name] = {}
        for model in models:
            _cli.progress(f"netadapt_retrain: {name}: {model}")
            row = retrain(cfg, rep, FLAGS.setting_dir, seed, FLAGS.distill, model, data)
            accuracy[name][model] = row["accuracy"]
            retrained[f"{model}@{name}"] = {"accuracy": row["accuracy"], "seconds": row.get("seconds"),
                                            "epochs": row.get("epochs"), "path": row["path"]}
    per_model = {m: {"latency_ms": latency[m], "accuracy": {v: acc[m] for v, acc in accuracy.items() if m in acc}}
                 for m in every}
    compared, full = {}, {}
    for name, acc in accuracy.items():
        if "netadapt" not in acc:
            continue
        full[name] = {m: acc.get(m, accuracy[setting_own][m]) for m in every}
        compared[name] = dict(compare(latency, full[name], rep["target_value"]),
                              baselines_from={m: name if m in acc else setting_own for m in every[1:]})
    result = {"setting": os.path.basename(os.path.normpath(FLAGS.setting_dir)),
              "what": "the setting's architectures retrained (other seeds; distillation from the start model), same "
                      "data split and budget; latencies from the setting's interleaved measurement",
              "variants": list(accuracy), "models": per_model, "retrained": retrained, "compare": compared}
    plain = [v for v in full if "_distill" not in v]
    if len(plain) > 1:   # the verdict on the seeds' mean: a model a seed did not retrain counts with the setting's own
        for m in every:  # top-1 there (as in that seed's compare); the spread is over the seeds that trained it
            trained = [accuracy[v][m] for v in plain if m in accuracy[v]]
            per_model[m].update(seed_mean=statistics.fmean(full[v][m] for v in plain), seeds_trained=len(trained),
                                seed_spread_points=100 * (max(trained) - min(trained)))
        result["on_seed_mean"] = dict(compare(latency, {m: per_model[m]["seed_mean"] for m in every},
                                              rep["target_value"]), over=plain)
    if FLAGS.out:
        from tfmobile.io import write_json

        write_json(FLAGS.out, result)
    return result


def _render(r):
    lines = [f"{r['setting']}: variants {', '.join(r['variants'])}"]
    for m, row in r["models"].items():
        accs = ", ".join(f"{v} {100 * a:.2f}" for v, a in row["accuracy"].items())
        lines.append(f"  {m}: {row['latency_ms']:.4f} ms, top-1 % {accs}")
    for name, c in list(r["compare"].items()) + ([("seed mean", r["on_seed_mean"])] if "on_seed_mean" in r else []):
        gain = "-" if c["gain_points"] is None else f"{c['gain_points']:+.2f}"
        ratio = "-" if c["ratio_at_equal_accuracy"] is None else f"{c['ratio_at_equal_accuracy']:.3f}"
        lines.append(f"  {name}: ratio {ratio}{' (upper bound)' if c['ratio_is_upper_bound'] else ''}, gain {gain}")
    return "\n".join(lines)


if __name__ == "__main__":
    _cli.run_and_emit(main, _render)
