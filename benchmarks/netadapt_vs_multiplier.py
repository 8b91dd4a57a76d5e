"""NetAdapt's default command vs the width multiplier (issue 19): two settings, the fine-tune path and tfmot's
pruning beside them; resumable (hours at full size: plan it on an idle machine).

    python benchmarks/netadapt_vs_multiplier.py --work_dir /work/runs/na19 --json                 # both settings
    python benchmarks/netadapt_vs_multiplier.py --work_dir /work/runs/na19 --settings mbv1 --json
    python benchmarks/netadapt_vs_multiplier.py --work_dir /tmp/na19_smoke --smoke --json        # minutes; not docs/

Per setting (``--settings``: zoo models, each at --alpha / --resolution, 1.0 and 32 by default), in
WORK_DIR/<setting>/, each step leaving its file (started again after a kill, it continues where it stopped):
1. ``run/``: the default command, ``python -m pipelines.netadapt --model M --target 0.5 --baselines
   0.35,0.5,0.75,1.0 --baselines_dir WORK_DIR/<setting>/baselines --workers 2`` on full Fashion-MNIST: every
   other setting at its default (no --final, ranking or measurement override; NetAdapt's own flags are
   accepted here, so a study can change one, and the result records the settings that ran);
2. ``rewind_distill/``: the fine-tune path, for users who cannot retrain: the same run's last checkpoint
   through the final stage with ``--final rewind --distill 0.5`` (the baselines' budget from the loop's
   weights, the start model as teacher);
3. ``pruned/``: the start model pruned to 50 % sparsity with tfmot (magnitude pruning, the "prune" stage's
   step schedule), stripped, converted int8 (what tfmot's users ask about: its latency is the point);
4. ``measured.json``: every int8 model of the setting in one interleaved LiteRT measurement (the run's
   measurement settings: 1 thread, the invoking thread's CPU time, >= 6 alternating rounds) and its LiteRT
   top-1 on the test images (bilinear resize, grey -> 3 channels, [-1, 1]);
5. the goals, each with its value and verdict, and ``--out_dir``/<setting>/: the int8 .tflite of the
   NetAdapt model and of every baseline and manifest.json (issue 19's schema), written together.
Then ``--result`` (the whole JSON) and ``--plot`` (accuracy vs latency, one panel per setting).
"""
import glob
import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfmobile  # noqa: E402,F401
from absl import app, flags  # noqa: E402

from pipelines import _cli  # noqa: E402
from tfmobile.netadapt import config as na_config  # noqa: E402

FLAGS = flags.FLAGS
# NetAdapt's own flags, one default each (tfmobile.netadapt.config); the benchmark sets only what issue 19's
# command names. --model / --output_dir / --baselines_dir come from each setting.
na_config.define_flags(FLAGS)
BENCHMARK_DEFAULTS = {"data_dir": "/usr/share/datasets/fashion-mnist", "alpha": 1.0, "resolution": 32,
                      "target": "0.5", "baselines": ["0.35", "0.5", "0.75", "1.0"], "workers": 2}
for _name, _value in BENCHMARK_DEFAULTS.items():
    FLAGS.set_default(_name, _value)
flags.DEFINE_string("work_dir", None, "where the runs and measurements go (required).")
flags.DEFINE_list("settings", ["mbv2", "mbv1"], "start models, one setting each (at --alpha, --resolution).")
flags.DEFINE_float("path_distill", 0.5, "the fine-tune path: soft-target weight of its rewind final stage.")
flags.DEFINE_float("prune_sparsity", 0.5, "the tfmot row: target sparsity of the pruned start model.")
# issue 19's goals
flags.DEFINE_multi_string("max_ratio", ["mbv2=0.55", "mbv1=0.70"], "goal: latency ratio at equal accuracy, per model.")
flags.DEFINE_multi_string("min_widest_baseline", ["mbv2=0.885"], "goal: top-1 of the alpha 1.0 baseline, per model.")
flags.DEFINE_float("min_gain_points", 1.5, "goal: top-1 points over the curve at the NetAdapt model's latency.")
flags.DEFINE_multi_string("max_path_ratio", ["mbv2=0.85"], "goal: the fine-tune path's ratio, per model.")
flags.DEFINE_float("max_invocation_minutes", 90.0, "goal: the default invocation (baselines trained) per setting.")
flags.DEFINE_boolean("smoke", False, "tiny settings on the shipped subset (shows the stages work; cannot pass).")
flags.DEFINE_string("out_dir", "docs/benchmark_data/netadapt", "per setting: .tflite files and manifest.json.")
flags.DEFINE_string("result", "docs/benchmark_data/netadapt/result.json", "the whole result JSON.")
flags.DEFINE_string("plot", "docs/benchmark_data/netadapt/netadapt_vs_multiplier.png", "accuracy vs latency.")
flags.DEFINE_boolean("json", False, "print the result as one JSON object on stdout.")

NETADAPT_FILE = "netadapt_int8.tflite"


def setting_name(model):
    return f"{model}_a{FLAGS.alpha:g}_r{FLAGS.resolution}"


# ------------------------------------------------------------------------------------------------
# stage 1: the default command
# ------------------------------------------------------------------------------------------------
def run_config(model, setting_dir):
    """The default command for ``model`` as a LoopConfig (smoke: tiny settings)."""
    FLAGS.model, FLAGS.output_dir = model, os.path.join(setting_dir, "run")
    FLAGS.baselines_dir = os.path.join(setting_dir, "baselines")
    cfg = na_config.from_flags(FLAGS)
    if FLAGS.smoke:
        cfg = cfg.replace(alpha=0.25, data_dir=None, subset=True, limit=300, epochs=1, short_steps=3, short_lr=1e-2,
                          batch_size=32, long_epochs=0, qat_epochs=0, bench_runs=60, bench_warmup=10, target=0.95,
                          max_iterations=2, baselines=(0.25, 0.5))
    return cfg


def run_default(cfg, setting_dir):
    """The run's report.json (resumed when its directory holds one), with what this invocation cost: its wall
    time less the baselines it trained (the goal counts the invocation with the baselines already trained)."""
    from tfmobile.netadapt import loop
    from tfmobile.netadapt.history import RUN_FILE, RunDir

    out = os.path.join(setting_dir, "run")
    resumed = os.path.isfile(os.path.join(out, RUN_FILE))
    searched_before = RunDir(out).iteration_begun()
    had = set(glob.glob(os.path.join(setting_dir, "baselines", "*", "result.json")))
    t = time.time()
    stopped = None
    try:
        rep = loop.run(cfg, out, resume=resumed)
    except loop.TargetNotMet as e:
        stopped = str(e)
        with open(os.path.join(out, "report.json")) as f:
            rep = json.load(f)
    wall = time.time() - t
    trained_now = 0.0
    for path in set(glob.glob(os.path.join(setting_dir, "baselines", "*", "result.json"))) - had:
        with open(path) as f:
            trained_now += float(json.load(f).get("seconds") or 0.0)
    invocation = {"wall_seconds": round(wall, 1), "baseline_training_seconds": round(trained_now, 1),
                  "resumed": resumed, "seconds_with_baselines_trained": None if resumed else round(wall - trained_now, 1),
                  # a run resumed from its trained start (e.g. a study's copied start/): the search and final stage
                  # ran in this invocation, the start's training did not
                  "seconds_from_trained_start": round(wall - trained_now, 1) if resumed and not searched_before
                  else None}
    stamp = os.path.join(setting_dir, "invocation.json")
    if not os.path.isfile(stamp) or not resumed:     # the first (uninterrupted) invocation's cost is the one kept
        from tfmobile.io import write_json

        write_json(stamp, invocation)
    with open(stamp) as f:
        rep["benchmark_invocation"] = json.load(f)
    rep["benchmark_stopped"] = stopped
    return rep


def iteration_row(h):
    """One iteration of history.jsonl as the result lists it; cv: the pick's measurement spread on its own clock
    (the history keeps it inside the measurement)."""
    from tfmobile.netadapt.measure import cv_of

    row = {k: h.get(k) for k in ("iteration", "chosen", "width", "budget", "measured", "val_accuracy", "seconds")}
    row["cv"] = cv_of(h.get("measurement") or {})
    return row


# ------------------------------------------------------------------------------------------------
# stages 2 and 3: the fine-tune path and the pruned start model
# ------------------------------------------------------------------------------------------------
def run_data(cfg, input_shape):
    """The run's split (the same seed and validation fraction) and its calibration images."""
    from tfmobile.netadapt.state import RunData
    from tfmobile.netadapt.workers import load_splits

    config = cfg.data_config(input_shape)
    return RunData.of(load_splits(config), config)


def fine_tune_path(cfg, rep, setting_dir, data):
    """The loop's last checkpoint through ``--final rewind --distill W``, in its own directory (cached)."""
    from tfmobile.netadapt import final
    from tfmobile.netadapt.history import RunDir
    from tfmobile.netadapt.state import log_stderr

    run = os.path.join(setting_dir, "run")
    if not rep.get("iterations"):
        return None
    last = RunDir(run).iteration_dir(rep["iterations"][-1]["iteration"])
    last = os.path.join(last, "checkpoint")
    path_cfg = cfg.replace(final="rewind", distill=FLAGS.path_distill)
    row = final.final_model(path_cfg, RunDir(os.path.join(setting_dir, "rewind_distill"), log=log_stderr), data,
                            rep["start"]["train_epochs"], last, log_stderr,
                            teacher_checkpoint=os.path.join(run, "start", "checkpoint"), tflm=False)
    return row


def pruned_start(cfg, setting_dir, data):
    """The start model pruned to ``--prune_sparsity`` with tfmot, stripped, int8: {"path", "sparsity"} (cached)."""
    from tfmobile import compress, convert, train
    from tfmobile.convert.sizes import tflite_sparsity
    from tfmobile.data import default_schedule
    from tfmobile.io import write_bytes, write_json

    d = os.path.join(setting_dir, "pruned")
    done = os.path.join(d, "result.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    start = train.load_checkpoint(os.path.join(setting_dir, "run", "start", "checkpoint"))
    t = time.time()
    epochs = default_schedule(len(data.splits.x_train), cfg.fine_tune.batch_size, stage="prune").epochs
    model, metrics = train.fit_or_load(lambda: start, data.splits, os.path.join(d, "prune"), epochs, compression="prune",
                                       target_sparsity=FLAGS.prune_sparsity, batch_size=cfg.fine_tune.batch_size,
                                       seed=cfg.fine_tune.seed, verbose=2)
    model = compress.strip(model)
    tflite = convert.to_tflite(model, "int8", representative_data=data.calibration)
    path = os.path.join(d, f"pruned{int(round(100 * FLAGS.prune_sparsity))}_int8.tflite")
    write_bytes(path, tflite)
    row = {"path": path, "target_sparsity": FLAGS.prune_sparsity, "epochs": epochs,
           "weight_sparsity": tflite_sparsity(tflite)["sparsity"],
           "val_accuracy_keras": metrics.get("val_accuracy"), "seconds": round(time.time() - t, 1)}
    write_json(done, row)
    return row


# ------------------------------------------------------------------------------------------------
# stage 4: one interleaved measurement, LiteRT top-1
# ------------------------------------------------------------------------------------------------
def measure_setting(cfg, setting_dir, files, x_test, y_test):
    """{key: {"path", "latency_ms", "latency", "accuracy", "n"}} of every int8 model: one interleaved measurement
    of them all (measured.json, redone only when the set of files changes) and LiteRT top-1 (cached per file)."""
    from tfmobile import evaluation
    from tfmobile.io import write_json
    from tfmobile.netadapt.measure import interleaved

    blobs = {}
    for key, path in files.items():
        with open(path, "rb") as f:
            blobs[key] = f.read()
    digests = {k: hashlib.sha256(b).hexdigest() for k, b in blobs.items()}
    path = os.path.join(setting_dir, "measured.json")
    done = None
    if os.path.isfile(path):
        with open(path) as f:
            done = json.load(f)
    if done is None or done.get("digests") != digests:
        _cli.progress(f"measuring {len(blobs)} models interleaved, {cfg.final.baseline_rounds} rounds")
        latency = interleaved(blobs, cfg.measurement.bench_settings(), cfg.final.baseline_rounds)
        done = {"digests": digests, "latency": latency, "accuracy": (done or {}).get("accuracy", {})}
        write_json(path, done)
    for key, blob in blobs.items():
        if digests[key] not in done["accuracy"]:
            _cli.progress(f"LiteRT top-1 of {key} on {len(y_test)} test images")
            done["accuracy"][digests[key]] = evaluation.evaluate_tflite(blob, x_test, y_test)
            write_json(path, done)
    return {k: {"path": os.path.abspath(files[k]), "latency_ms": done["latency"][k]["value"],
                "latency": done["latency"][k], "accuracy": done["accuracy"][digests[k]]["accuracy"],
                "n": done["accuracy"][digests[k]]["n"]} for k in files}


# ------------------------------------------------------------------------------------------------
# stage 5: the goals and the committed files
# ------------------------------------------------------------------------------------------------
def _criterion(value, limit, at_most):
    """pass: None where no goal is set or nothing was measured (an unmeasured goal is not a failed one)."""
    if limit is None or value is None:
        return {"value": value, "limit": limit, "pass": None}
    return {"value": value, "limit": limit, "pass": value <= limit if at_most else value >= limit}


def goals(model, measured, baseline_keys, invocation, target):
    """Issue 19's goals for one setting, each with its measured value and verdict (None: no goal set).

    target: the run's absolute latency target; the ratio goal says whether a model at it could meet the goal at all
    (``lowest_ratio_at_target``)."""
    from tfmobile.netadapt.final import compare_models

    def point(key):
        return measured[key]["latency_ms"], measured[key]["accuracy"]

    def against_curve(key):
        return compare_models(point(key), {k: point(k) for k in baseline_keys}, target)

    na = against_curve("netadapt")
    path = against_curve("rewind_distill") if "rewind_distill" in measured else {}
    widest = max(baseline_keys, key=float)
    gain = na.get("accuracy_gain_at_equal_value")
    out = {"ratio_at_equal_accuracy": _criterion(na.get("ratio_at_equal_accuracy"),
                                                 _cli.value_for(FLAGS.max_ratio, model), at_most=True),
           f"baseline_{widest}_top1": _criterion(measured[widest]["accuracy"],
                                                 _cli.value_for(FLAGS.min_widest_baseline, model), at_most=False),
           "gain_points_at_equal_latency": _criterion(None if gain is None else round(100 * gain, 4),
                                                      FLAGS.min_gain_points, at_most=False),
           "fine_tune_path_ratio": _criterion(path.get("ratio_at_equal_accuracy"),
                                              _cli.value_for(FLAGS.max_path_ratio, model), at_most=True),
           "invocation_minutes_with_baselines_trained": _criterion(
               None if invocation.get("seconds_with_baselines_trained") is None
               else round(invocation["seconds_with_baselines_trained"] / 60, 1),
               FLAGS.max_invocation_minutes, at_most=True)}
    from_start = invocation.get("seconds_from_trained_start")
    if from_start is not None:   # not the goal's figure (the start's training is missing): shown beside it
        out["invocation_minutes_with_baselines_trained"]["minutes_from_trained_start"] = round(from_start / 60, 1)
    lowest = na.get("lowest_ratio_at_target")
    limit = out["ratio_at_equal_accuracy"]["limit"]
    out["ratio_at_equal_accuracy"].update(
        lowest_at_target=lowest, reachable_at_target=None if lowest is None or limit is None else lowest <= limit)
    verdicts = [c["pass"] for c in out.values() if c["limit"] is not None]
    out["all_pass"] = False if False in verdicts else (None if None in verdicts else True)
    return {"goals": out, "netadapt_vs_curve": na, "fine_tune_path_vs_curve": path or None}


def manifest(setting, resolution, measured, baseline_keys):
    """issue 19's manifest.json: file names, LiteRT top-1 and interleaved median latency of each."""
    files = {"netadapt": NETADAPT_FILE} | {k: f"baseline_a{k}_int8.tflite" for k in baseline_keys}
    return {"setting": setting, "resolution": resolution, "netadapt": NETADAPT_FILE,
            "baselines": {k: files[k] for k in baseline_keys},
            "accuracy": {files[k]: measured[k]["accuracy"] for k in files},
            "latency_ms": {files[k]: measured[k]["latency_ms"] for k in files}}


def write_artifacts(out_dir, man, measured):
    """The .tflite files and manifest.json of one setting, renamed into place together."""
    from tfmobile.io import StagedWriter

    os.makedirs(out_dir, exist_ok=True)
    with StagedWriter() as staged:
        for key, name in [("netadapt", man["netadapt"])] + list(man["baselines"].items()):
            with open(measured[key]["path"], "rb") as f:
                staged.add(os.path.join(out_dir, name), f.read())
        staged.add(os.path.join(out_dir, "manifest.json"), json.dumps(man, indent=2) + "\n")
    return os.path.join(out_dir, "manifest.json")


def plot(result, path):
    import matplotlib

    from tfmobile.netadapt.final import frontier

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["settings"])
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        m = result["settings"][name]["measured"]
        base = sorted((k for k in m if k.replace(".", "", 1).isdigit()), key=float)
        curve = frontier([{"value": m[k]["latency_ms"], "accuracy": m[k]["accuracy"], "alpha": k} for k in base])
        on_curve = [p["alpha"] for p in curve]
        ax.plot([p["value"] for p in curve], [100 * p["accuracy"] for p in curve], "o-", color="grey",
                label="width multiplier (frontier)")
        off = [k for k in base if k not in on_curve]
        if off:
            ax.plot([m[k]["latency_ms"] for k in off], [100 * m[k]["accuracy"] for k in off], "o", color="grey",
                    mfc="none", label="width multiplier, dominated")
        for k in base:
            ax.annotate(f"a{k}", (m[k]["latency_ms"], 100 * m[k]["accuracy"]), fontsize=8)
        for key, style, label in (("rewind_distill", "bs", "fine-tune path (rewind + distill)"),
                                  ("pruned", "g^", "tfmot 50 % sparsity"),
                                  ("netadapt", "r*", "NetAdapt (default command)")):   # on top: the two can coincide
            if key in m:
                ax.plot(m[key]["latency_ms"], 100 * m[key]["accuracy"], style, markersize=14 if key == "rewind_distill"
                        else 10, label=label, **({"mfc": "none"} if key == "rewind_distill" else {}))
        ax.set_xlabel("int8 latency, LiteRT 1 thread, CPU time (ms, interleaved median)")
        ax.set_ylabel("top-1 on the test images (%)")
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def one_setting(model, x_test, y_test):

    name = setting_name(model)
    setting_dir = os.path.join(FLAGS.work_dir, name)
    cfg = run_config(model, setting_dir)
    _cli.progress(f"netadapt_vs_multiplier: {name}: the default command")
    rep = run_default(cfg, setting_dir)
    out = {"report": {k: rep.get(k) for k in ("status", "benchmark_stopped", "target_value", "start", "reached",
                                              "timings", "benchmark_invocation", "config")},
           "iterations": [iteration_row(h) for h in rep.get("iterations") or []]}
    if not rep.get("final"):
        out["error"] = "the run did not reach its final stage: " + str(rep.get("benchmark_stopped"))
        return out
    files = {"netadapt": rep["final"]["path"]}
    keys = []
    for b in rep["baselines"]:
        key = str(float(b["alpha"]))   # "0.35" ... "1.0", the manifest keys
        files[key] = b["path"]
        keys.append(key)
    data = run_data(cfg, tuple(rep["final"]["spec"]["input_shape"]))
    _cli.progress(f"netadapt_vs_multiplier: {name}: the fine-tune path (rewind, distill {FLAGS.path_distill:g})")
    path_row = fine_tune_path(cfg, rep, setting_dir, data)
    if path_row is not None:
        files["rewind_distill"] = path_row["path"]
    _cli.progress(f"netadapt_vs_multiplier: {name}: the start pruned to {FLAGS.prune_sparsity:.0%} with tfmot")
    pruned = pruned_start(cfg, setting_dir, data)
    files["pruned"] = pruned["path"]
    measured = measure_setting(cfg, setting_dir, files, x_test, y_test)
    out.update(measured=measured, pruned=pruned, baseline_keys=keys,
               **goals(model, measured, keys, rep["benchmark_invocation"], rep["target_value"]))
    out["manifest"] = manifest(name, int(rep["final"]["spec"]["input_shape"][0]), measured, keys)
    return out


def main(argv):
    from tfmobile import data
    from tfmobile.bench import host_device
    from tfmobile.errors import UserError
    from tfmobile.io import check_writable, write_json

    if not FLAGS.work_dir:
        raise app.UsageError("--work_dir is required")
    if not FLAGS.settings:
        raise UserError("--settings needs at least one zoo model")
    for flag in ("max_ratio", "min_widest_baseline", "max_path_ratio"):
        for model in FLAGS.settings:
            _cli.value_for(FLAGS[flag].value, model)      # a malformed value: one line, before hours of work
    out_dir, result_path, plot_path = FLAGS.out_dir, FLAGS.result, FLAGS.plot
    if FLAGS.smoke:
        out_dir = os.path.join(FLAGS.work_dir, "netadapt")
        result_path, plot_path = os.path.join(out_dir, "result.json"), os.path.join(out_dir, "result.png")
    check_writable(out_dir, directory=True)
    check_writable(result_path)
    t0 = time.time()
    d = data.load_fashion_mnist(None if FLAGS.smoke else FLAGS.data_dir, subset=FLAGS.smoke)
    result = {"host": host_device("litert", 1), "smoke": FLAGS.smoke, "settings": {}}
    for model in FLAGS.settings:
        result["settings"][setting_name(model)] = one_setting(model, d.x_test, d.y_test)
    for name, s in result["settings"].items():
        if "manifest" in s:
            s["manifest_path"] = write_artifacts(os.path.join(out_dir, name), s.pop("manifest"), s["measured"])
    if any("measured" in s for s in result["settings"].values()):
        plot({"settings": {k: v for k, v in result["settings"].items() if "measured" in v}}, plot_path)
        result["plot"] = plot_path
    result["wall_seconds_this_invocation"] = round(time.time() - t0, 1)
    write_json(result_path, result)
    _cli.emit(result, FLAGS.json, render)


def render(result):
    lines = []
    for name, s in result["settings"].items():
        lines.append(f"{name}:")
        if "goals" not in s:
            lines.append(f"  {s.get('error')}")
            continue
        for goal, c in s["goals"].items():
            if goal != "all_pass":
                verdict = ("no goal" if c["limit"] is None else "not measured") if c["pass"] is None else (
                    "pass" if c["pass"] else "FAIL")
                lines.append(f"  {goal}: {c['value']} (limit {c['limit']}) {verdict}"
                             + (f"; a model at the target gets {c['lowest_at_target']:.3f} at best"
                                if c.get("lowest_at_target") is not None else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    _cli.run(main)
