"""What a NetAdapt iteration costs, and whether a cheaper proposal score finds as good an architecture
(issue 19 §2: iterations 3x cheaper with a final result at least as good).

    python benchmarks/netadapt_iteration_cost.py --checkpoint START --output_dir runs/cost \
        --score_settings 0:200,50:0 --scratch_epochs 6 --workers 2 [netadapt flags] --json
    python benchmarks/netadapt_iteration_cost.py --output_dir /tmp/cost --smoke --json   # minutes; shows it works

1. Per N:T of --score_settings (N BatchNorm re-estimation batches, then T fine-tune steps), in turn: the NetAdapt
   search from the same start to the same target, no final stage (OUTPUT_DIR/bnN_tT/run). Its iterations' wall
   and CPU seconds come from history.jsonl (each iteration's own timing: proposals, the pick's conversion
   and measurement), so what ran beside the benchmark between the searches does not count. Time the searches
   on an idle machine: they are the figure.
2. The architecture each search found, trained from scratch with one budget (--scratch_epochs, same seed,
   the start's learning rate: NetAdapt's default final stage, shortened), converted int8, LiteRT top-1 on the
   test images (OUTPUT_DIR/bnN_tT/scratch).
3. Every found int8 model measured in one interleaved LiteRT session (the run's measurement settings).
The first setting is the reference: each other gets its iteration-time ratio to it and its accuracy and
latency difference. Resumable: every step leaves its file.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfmobile  # noqa: E402,F401
from absl import flags  # noqa: E402

from pipelines import _cli  # noqa: E402
from tfmobile.netadapt import config as na_config  # noqa: E402

na_config.define_flags(flags.FLAGS)
flags.DEFINE_list("score_settings", ["0:200", "50:0"], "N:T pairs, the first the reference (today's default).")
flags.DEFINE_integer("scratch_epochs", 6, "epochs of each found architecture's from-scratch training.")
flags.DEFINE_boolean("smoke", False, "tiny settings on the shipped subset: shows it works; numbers mean nothing.")
flags.DEFINE_boolean("json", False, "print one JSON object")
FLAGS = flags.FLAGS

SMOKE = {"subset": True, "limit": 300, "model": "mbv1", "alpha": 0.25, "resolution": 32, "epochs": 1,
         "batch_size": 32, "short_lr": 1e-2, "delta0": 0.1, "target": 0.8, "max_iterations": 2,
         "bench_runs": 60, "bench_warmup": 10, "score_settings": ["0:3", "2:0"], "scratch_epochs": 1}


def setting_name(n, t):
    return f"bn{n}_t{t}"


def search(cfg, directory, log):
    """The search of one setting, resumed: (its iterations' costs from history.jsonl, the run's data)."""
    from tfmobile.netadapt import loop
    from tfmobile.netadapt.history import RUN_FILE

    run_path = os.path.join(directory, "run")
    with loop.searched(cfg, run_path, os.path.exists(os.path.join(run_path, RUN_FILE)), log) as searched:
        session, start, status, point, _ = searched
        history = session.run_dir.history()
    log(f"search stopped ({status}) after iteration {point.iteration}")
    return session.data, {"status": status, "iterations": len(history),
            "iteration_seconds": round(sum(r["seconds"] for r in history), 1),
            "iteration_cpu_seconds": round(sum(r["cpu_seconds"] for r in history), 1),
            "proposals": sum(len(r["proposals"]) for r in history),
            "proposal_seconds": round(sum(p["seconds"] or 0 for r in history for p in r["proposals"]), 1),
            "start_measured": start.point.measured, "measured": point.measured, "target": start.target,
            "val_accuracy": point.val_accuracy, "checkpoint": point.checkpoint, "spec": point.spec.to_dict(),
            "chosen": [(r["chosen"], r["width"]) for r in history],
            "per_iteration": [{k: r.get(k) for k in ("iteration", "seconds", "cpu_seconds", "measured", "chosen",
                                                     "width", "val_accuracy")} | {"proposals": len(r["proposals"])}
                              for r in history]}


def from_scratch(cfg, data, directory, spec_dict, epochs, log):
    """The found architecture freshly initialised, trained ``epochs`` from scratch, int8 + LiteRT top-1."""
    from tfmobile import models
    from tfmobile.models import ModelSpec
    from tfmobile.netadapt import final
    from tfmobile.netadapt.history import RunDir

    spec = ModelSpec.from_dict(spec_dict)
    scratch_cfg = cfg.replace(qat_epochs=0, tflm=False)

    def compute():
        return final.train_and_export(scratch_cfg, data, "scratch", spec, models.build(spec),
                                      os.path.join(directory, "scratch"), epochs, cfg.start.lr, log)

    return RunDir(directory, log=log).step(os.path.join("scratch", "result.json"), compute)


def measure_interleaved(cfg, rows):
    from tfmobile.netadapt.final import measure_rows
    from tfmobile.netadapt.measure import LocalMeasurer

    return measure_rows(cfg, LocalMeasurer(cfg.measurement.bench_settings()), rows)


def main(argv):
    from tfmobile.errors import UserError
    from tfmobile.io import write_json
    from tfmobile.netadapt.measure import cv_of
    from tfmobile.netadapt.state import log_stderr

    if FLAGS.smoke:
        for k, v in SMOKE.items():
            if not FLAGS[k].present:
                FLAGS[k].value = str(v) if k == "target" else v
    if not FLAGS.output_dir:
        raise UserError("--output_dir is required")
    if FLAGS.scratch_epochs < 1:
        raise UserError(f"--scratch_epochs must be >= 1, got {FLAGS.scratch_epochs}")
    settings = na_config.parse_score_settings(FLAGS.score_settings)
    base = na_config.from_flags(FLAGS)
    base.check()
    out = os.path.abspath(FLAGS.output_dir)
    result = {"smoke": FLAGS.smoke, "scratch_epochs": FLAGS.scratch_epochs, "run": base.fingerprint(), "settings": {}}
    for n, t in settings:
        name = setting_name(n, t)
        cfg = base.replace(bn_batches=n, short_steps=t)
        log_stderr(f"{name}: search")
        data, row = search(cfg, os.path.join(out, name), log_stderr)
        log_stderr(f"{name}: {row['iterations']} iterations, {row['iteration_seconds']} s; from scratch")
        row["scratch"] = from_scratch(cfg, data, os.path.join(out, name), row["spec"], FLAGS.scratch_epochs,
                                      log_stderr)
        result["settings"][name] = row
    measured = measure_interleaved(base, {k: r["scratch"] for k, r in result["settings"].items()})
    reference = setting_name(*settings[0])
    ref = result["settings"][reference]
    for name, row in result["settings"].items():
        row["latency_ms"] = measured[name]["value"]
        row["latency_cv"] = cv_of(measured[name])
        row["test_accuracy"] = row["scratch"]["accuracy"]
        row["iteration_time_ratio"] = row["iteration_seconds"] / ref["iteration_seconds"]
        row["accuracy_points_vs_reference"] = 100 * (row["test_accuracy"] - ref["scratch"]["accuracy"])
    result["reference"] = reference
    result["measurement"] = {"rounds": base.final.baseline_rounds, **base.measurement.bench_settings(),
                             "clock": "the invoking thread's CPU time" if base.measurement.threads == 1 else "wall"}
    write_json(os.path.join(out, "result.json"), result)   # atomic: whole or absent
    return result


def _render(r):
    lines = ["| setting | iterations | proposals | iteration s | ratio | found latency ms | top-1 from scratch |",
             "|---|---|---|---|---|---|---|"]
    for name, s in r["settings"].items():
        lines.append(f"| {name} | {s['iterations']} | {s['proposals']} | {s['iteration_seconds']:.0f} | "
                     f"{s['iteration_time_ratio']:.2f} | {s['latency_ms']:.4f} | {100 * s['test_accuracy']:.2f} % |")
    return "\n".join(lines)


if __name__ == "__main__":
    _cli.run_and_emit(main, _render)
