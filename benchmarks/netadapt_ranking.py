"""How well does a cheap proposal score rank NetAdapt's proposals? (issue 19 §2: picks the default
--bn_batches / --short_steps.)

    python benchmarks/netadapt_ranking.py --output_dir runs/ranking --target 0.5 [netadapt flags] \
        [--iterations 2] [--score_settings 50:0,50:50,50:200,0:200] [--long_steps 1000] [--json]
    python benchmarks/netadapt_ranking.py --output_dir /tmp/rank --smoke --json   # tiny: shows it works

1. A NetAdapt run (the netadapt flags; its own scoring picks) for --iterations iterations, without its
   final stage, in OUTPUT_DIR/run.
2. Every proposal of those iterations is scored again from its iteration's parent with each
   N:T of --score_settings (N BatchNorm re-estimation batches, then T fine-tune steps; T = 0: BN
   re-estimation only), and fine-tuned for --long_steps (>= 1,000) steps: its "true" accuracy.
3. Per setting, the Spearman correlation between its scores and the long fine-tune's accuracies,
   per iteration (the selection is within an iteration) and their mean; the default is the cheapest
   setting (T + N/3 step equivalents: a forward batch is about a third of a training step) whose mean is
   within --tolerance (0.05) of the best.

Resumable: the run is a NetAdapt run directory (--resume semantics), and each (iteration, setting,
proposal) score is OUTPUT_DIR/study/NNN/SETTING/GROUP.json, skipped when it exists.
"""
import os

import tfmobile  # noqa: F401
from absl import flags

from pipelines import _cli
from tfmobile.netadapt import config as na_config

na_config.define_flags(flags.FLAGS)
flags.DEFINE_integer("iterations", 2, "NetAdapt iterations whose proposals are studied (at least 2).")
flags.DEFINE_list("score_settings", ["50:0", "50:50", "50:200", "0:200"],
                  "N:T pairs: N BatchNorm re-estimation batches, then T fine-tune steps.")
flags.DEFINE_integer("long_steps", 1000, "fine-tune steps of the reference accuracy (at least 1000).")
flags.DEFINE_float("long_study_lr", None, "peak learning rate of the reference fine-tune (default --short_lr).")
flags.DEFINE_integer("max_proposals", 0, "study K proposals of each iteration, spread evenly over its groups "
                                        "in network order (0: all).")
flags.DEFINE_float("tolerance", 0.05, "a setting within this of the best mean correlation qualifies.")
flags.DEFINE_boolean("smoke", False, "tiny settings (shipped data subset, 1-epoch mbv1, macs, a few steps) "
                                     "to show the script works; its numbers mean nothing.")
flags.DEFINE_boolean("json", False, "print one JSON object")
FLAGS = flags.FLAGS

SMOKE = {"subset": True, "limit": 300, "model": "mbv1", "alpha": 0.25, "resolution": 32, "epochs": 1,
         "resource": "macs", "batch_size": 32, "short_steps": 2, "short_lr": 1e-2, "delta0": 0.1,
         "long_epochs": 0, "qat_epochs": 0, "tflm": False, "target": 0.3}
SMOKE_STUDY = {"score_settings": ["2:0", "2:3", "0:3"], "long_steps": 6, "max_proposals": 4}


def ranks(values):
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(a, b):
    """Spearman's rho (Pearson of the tie-averaged ranks); None when either side is constant or n < 3."""
    if len(a) < 3:
        return None
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / (va * vb) ** 0.5 if va > 0 and vb > 0 else None


def spread(items, k):
    """``k`` of ``items`` evenly spaced from first to last (all when k is 0 or covers them): a sample of
    the network's depth, not only its first layers."""
    if not k or k >= len(items):
        return list(items)
    if k == 1:
        return [items[0]]
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def choose_default(summary, tolerance):
    """The cheapest setting whose mean correlation is within ``tolerance`` of the best (None: none measured)."""
    scored = [s for s in summary if s["mean_spearman"] is not None]
    if not scored:
        return None
    best = max(s["mean_spearman"] for s in scored)
    return min((s for s in scored if s["mean_spearman"] >= best - tolerance),
               key=lambda s: (s["step_equivalents"], s["name"]))["name"]


def study(session, start, out, settings, long_steps, long_lr, max_proposals, log):
    """{(iteration, name): {group: val_accuracy}} for each setting and the long reference ("long")."""
    import shutil

    from tfmobile.io import write_json

    ft, run_dir = session.cfg.fine_tune, session.run_dir
    history = run_dir.history()
    runs = [(f"bn{n}_t{t}", n, t, ft.short_lr) for n, t in settings] + [("long", 0, long_steps, long_lr)]
    scores, tasks = {}, {}
    for row in history:
        i = row["iteration"]
        parent = start.point.checkpoint if i == 1 else os.path.join(run_dir.iteration_dir(i - 1), "checkpoint")
        plan = run_dir.read(os.path.join("iterations", f"{i:03d}"), "plan.json")
        proposals = spread(plan["proposals"], max_proposals)
        for name, n, t, lr in runs:
            for p in proposals:
                path = os.path.join(out, "study", f"{i:03d}", name, p["group"].replace("/", "__") + ".json")
                scores.setdefault((i, name), {})
                if os.path.exists(path):
                    import json
                    scores[(i, name)][p["group"]] = json.load(open(path))["val_accuracy"]
                    continue
                tasks[(i, name, p["group"])] = (path, {
                    "group": p["group"], "width": p["width"], "spec": p["spec"], "parent": parent,
                    "data": session.data.config, "steps": t, "bn_batches": n, "batch_size": ft.batch_size,
                    "lr": lr, "seed": ft.seed, "augment": ft.augment, "shift": ft.shift,
                    "threads": ft.worker_threads, "output_dir": path[:-len(".json")]})

    def on_result(key, result):
        path, task = tasks[key]
        write_json(path, {k: result.get(k) for k in ("group", "width", "val_accuracy", "train_accuracy",
                                                       "bn_batches", "seconds", "cpu_seconds")}
                   | {"steps": task["steps"]})
        shutil.rmtree(task["output_dir"], ignore_errors=True)   # the score is the result; no weights kept
        scores[(key[0], key[1])][key[2]] = result["val_accuracy"]
        log(f"scored {len(tasks) - sum(1 for k in tasks if k[2] not in scores[(k[0], k[1])])}/{len(tasks)}: "
            f"iteration {key[0]} {key[1]} {key[2]} -> {result['val_accuracy']:.4f}")

    if tasks:
        session.pool.run({k: t for k, (_, t) in tasks.items()}, on_result)
    return [r["iteration"] for r in history], scores


def main(argv):
    from tfmobile.errors import UserError
    from tfmobile.netadapt import loop
    from tfmobile.netadapt.history import RUN_FILE
    from tfmobile.netadapt.state import log_stderr

    if FLAGS.smoke:
        for k, v in {**SMOKE, **SMOKE_STUDY}.items():
            if not FLAGS[k].present:
                FLAGS[k].value = str(v) if k == "target" else v
    if not FLAGS.smoke and FLAGS.long_steps < 1000:
        raise UserError(f"--long_steps must be >= 1000 (the reference accuracy), got {FLAGS.long_steps}")
    if not FLAGS.smoke and FLAGS.iterations < 2:
        raise UserError(f"--iterations must be >= 2, got {FLAGS.iterations}")
    if FLAGS.iterations < 1 or FLAGS.max_proposals < 0:
        raise UserError("need --iterations >= 1 and --max_proposals >= 0")
    settings = na_config.parse_score_settings(FLAGS.score_settings)
    cfg = na_config.from_flags(FLAGS).replace(max_iterations=FLAGS.iterations)
    out = FLAGS.output_dir
    run_path = os.path.join(out, "run")
    with loop.searched(cfg, run_path, os.path.exists(os.path.join(run_path, RUN_FILE)), log_stderr) as searched:
        session, start, status, point, _ = searched
        log_stderr(f"search stopped ({status}) after iteration {point.iteration}")
        long_lr = FLAGS.long_study_lr or cfg.fine_tune.short_lr
        iterations, scores = study(session, start, out, settings, FLAGS.long_steps, long_lr, FLAGS.max_proposals,
                                   log_stderr)
    summary = []
    for n, t in settings:
        name = f"bn{n}_t{t}"
        per = {}
        for i in iterations:
            groups = sorted(scores[(i, "long")])
            per[i] = spearman([scores[(i, name)][g] for g in groups], [scores[(i, "long")][g] for g in groups])
        values = [v for v in per.values() if v is not None]
        summary.append({"name": name, "bn_batches": n, "short_steps": t, "step_equivalents": t + n / 3,
                        "spearman_per_iteration": {str(i): v for i, v in per.items()},
                        "mean_spearman": sum(values) / len(values) if values else None})
    return {"smoke": FLAGS.smoke, "iterations": iterations, "long_steps": FLAGS.long_steps,
            "proposals_per_iteration": {str(i): len(scores[(i, "long")]) for i in iterations},
            "settings": summary, "tolerance": FLAGS.tolerance,
            "default": choose_default(summary, FLAGS.tolerance),
            "scores": {f"{i:03d}/{name}": s for (i, name), s in sorted(scores.items())},
            "run": cfg.fingerprint()}


def _render(r):
    lines = ["| setting | N | T | step equivalents | Spearman per iteration | mean |", "|---|---|---|---|---|---|"]
    for s in r["settings"]:
        per = ", ".join("-" if v is None else f"{v:.3f}" for v in s["spearman_per_iteration"].values())
        mean = "-" if s["mean_spearman"] is None else f"{s['mean_spearman']:.3f}"
        lines.append(f"| {s['name']} | {s['bn_batches']} | {s['short_steps']} | {s['step_equivalents']:.1f} | "
                     f"{per} | {mean} |")
    lines.append(f"default (cheapest within {r['tolerance']} of the best): {r['default']}")
    return "\n".join(lines)


if __name__ == "__main__":
    _cli.run_and_emit(main, _render)
