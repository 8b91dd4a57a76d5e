"""Fit a microcontroller: the issue-20 acceptance benchmark (resumable; the issue allows 120 min on 2 cores:
the 64KB/256KB pair measured about 85 min summed over its stages, docs/mcu.md).

    # the full run (full Fashion-MNIST; writes docs/benchmark_data/mcu/ and docs/benchmark_data/mcu_fit.json)
    python benchmarks/mcu_fit.py --work_dir /work/runs/mcu_fit --json
    # a smoke run on the shipped subset (minutes): writes everything under --work_dir, nothing under docs/
    python benchmarks/mcu_fit.py --work_dir /tmp/mcu_smoke --smoke --json

Stages, each leaving its file (started again after a kill, it continues where it stopped):
1. for each ``--fits`` pair ARENA/FLASH (64KB/256KB, then 32KB/128KB) the documented one command,
   run through ``tfmobile.netadapt.loop.run`` in WORK_DIR/fit_<ARENA>_<FLASH>/ (its own resume):
   mbv2 alpha 0.35 at 40x40 trained, ``--resource peak_sram --target ARENA --constraint flash=FLASH
   --resolution_step 8 --baselines 0.1,0.15,0.25 --baseline_resolutions 32,40,48``, TFLM export on
   (every other NetAdapt flag is accepted too, with its own default: the final stage is NetAdapt's default,
   from_scratch); the grid points that fit are trained once in WORK_DIR/baselines/ and shared by both runs
   (a point whose untrained int8 model already exceeds a limit is measured, not trained); the later pairs
   start from the first pair's trained start model (``--checkpoint``: the same training, done once);
2. its own measurements (WORK_DIR/measured/<sha256>.json, one per .tflite): the input resolution
   read from the file, LiteRT top-1 on the test images (``evaluation.evaluate_tflite``: bilinear
   resize, grey -> 3 channels, [-1, 1], quantized with the input's scale), the TFLM arena
   (``convert.measure_arena``) and flash (file size) of the final model and of every grid point; the
   most accurate grid point that fits both limits by these measurements; TFLM top-1 on the same
   images (``convert.tflm.tflm_accuracy``) of the final model and that grid point;
3. the acceptance of the first pair (arena <= ARENA, flash <= FLASH, TFLM top-1 >= 90.0 %, TFLM and
   LiteRT within 0.1 points, >= 1.5 points over the best fitting grid point, all 10,000 test images),
   each criterion with its value and verdict; then ``--out_dir``: the final .tflite, the best fitting
   grid point's .tflite and manifest.json, written together; ``--result``: the whole JSON.

Why this start and grid (numbers predicted by ``tfmobile.analysis`` from the specs, not measured):
mbv2's total stride is 32, so 32x32 is its lowest input (``surgery.lowest_resolution``); a 40x40
start leaves NetAdapt one resolution step (40 -> 32) beside its channel proposals. mbv2 alpha 0.35
at 40 needs about 97 KB of arena and 630 KB of flash, both above the limits. At these sizes the
arena is mostly TFLM's persistent per-channel data (about 46-57 KB for alpha 0.1-0.2), not the
activations (15 KB at 32, 24 KB at 40), so width moves it more than resolution, and flash (about
428 KB at alpha 0.25, 231 KB at 0.1; the 1280-wide head dominates) is the binding limit: the
issue's example grid (alpha 0.25 / 0.35 / 0.5) has no point within 256 KB. The grid here is what a
user would try to fit it: alpha 0.1 (fits 256 KB: arena about 61 KB at 32), 0.15 (299 KB) and 0.25,
at the start's resolution, one step below and one above (32 / 40 / 48).
"""
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
# NetAdapt's own flags (tfmobile.netadapt.config, one default each), with this benchmark's command as defaults;
# --target / --constraint / --output_dir come from each --fits pair
na_config.define_flags(FLAGS)
BENCHMARK_DEFAULTS = {"data_dir": "/usr/share/datasets/fashion-mnist", "model": "mbv2", "alpha": 0.35,
                      "resolution": 40, "resource": "peak_sram", "resolution_step": 8,
                      "baselines": ["0.1", "0.15", "0.25"], "baseline_resolutions": ["32", "40", "48"],
                      "workers": 2, "tflm": True}
for _name, _value in BENCHMARK_DEFAULTS.items():
    FLAGS.set_default(_name, _value)
flags.DEFINE_string("work_dir", None, "where the runs and measurements go (required).")
flags.DEFINE_list("fits", ["64KB/256KB", "32KB/128KB"],
                  "ARENA/FLASH limit pairs, one NetAdapt run each; the first is the acceptance's "
                  "(--smoke default: 80KB/600KB, below the start; its grid point alpha 0.35 cannot fit).")
flags.DEFINE_float("min_tflm_accuracy", 90.0, "acceptance: TFLM top-1 (%) of the final model.")
flags.DEFINE_float("max_gap_points", 0.1, "acceptance: |TFLM - LiteRT| top-1 (points).")
flags.DEFINE_float("min_gain_points", 1.5, "acceptance: points over the best fitting grid point.")
flags.DEFINE_integer("test_images", 10000, "acceptance: test images the accuracies must cover.")
flags.DEFINE_boolean("smoke", False, "tiny settings on the shipped subset (shows the stages work; cannot pass).")
flags.DEFINE_string("out_dir", "docs/benchmark_data/mcu", "manifest.json and the two .tflite files.")
flags.DEFINE_string("result", "docs/benchmark_data/mcu_fit.json", "the whole result JSON.")
flags.DEFINE_boolean("json", False, "print the result as one JSON object on stdout.")

NETADAPT_FILE = "netadapt_int8.tflite"


# ------------------------------------------------------------------------------------------------
# stage 1: the NetAdapt runs
# ------------------------------------------------------------------------------------------------
def parse_fit(text):
    """'64KB/256KB' -> (65536, 262144): the arena and flash limits in bytes."""
    from tfmobile.errors import UserError
    from tfmobile.netadapt.config import parse_target

    arena, sep, flash = str(text).partition("/")
    if not sep:
        raise UserError(f"--fits takes ARENA/FLASH pairs such as 64KB/256KB, got {text!r}")
    limits = []
    for kind, value in (("peak_sram", arena), ("flash", flash)):
        fraction, absolute = parse_target(value, kind)
        if absolute is None:
            raise UserError(f"--fits {text}: give {kind} in bytes (64KB), not a fraction of the start")
        limits.append(int(absolute))
    return tuple(limits)


def fit_config(arena_text, flash_text, out, start_checkpoint=None):
    """The one command of README's "Fit a microcontroller" as a LoopConfig: NetAdapt's flags with this pair's
    target and flash constraint (smoke: tiny settings). start_checkpoint: the start model another pair's run
    trained (the same training: trained once)."""
    FLAGS.target, FLAGS.constraint, FLAGS.output_dir = arena_text, [f"flash={flash_text}"], out
    FLAGS.checkpoint = FLAGS["checkpoint"].value if FLAGS["checkpoint"].present else start_checkpoint
    if FLAGS.baselines_dir is None:
        FLAGS.baselines_dir = os.path.join(FLAGS.work_dir, "baselines")   # the grid, trained once for both pairs
    cfg = na_config.from_flags(FLAGS)
    if FLAGS.smoke:
        cfg = cfg.replace(data_dir=None, subset=True, limit=300, epochs=1, short_steps=3, short_lr=1e-2,
                          batch_size=32, long_epochs=0, qat_epochs=0, max_iterations=3, baselines=(0.25, 0.35),
                          baseline_resolutions=(32,))
    return cfg


def run_dir_of(fit_text):
    arena_text, _, flash_text = fit_text.partition("/")
    return os.path.join(FLAGS.work_dir, f"fit_{arena_text}_{flash_text}")


def run_fit(fit_text, start_checkpoint=None):
    """One NetAdapt run (resumed when its directory holds one); its report.json as a dict."""
    from tfmobile.netadapt import loop
    from tfmobile.netadapt.history import RUN_FILE

    arena_text, _, flash_text = fit_text.partition("/")
    out = run_dir_of(fit_text)
    stopped = None
    try:
        report = loop.run(fit_config(arena_text, flash_text, out, start_checkpoint), out,
                          resume=os.path.isfile(os.path.join(out, RUN_FILE)))
    except loop.TargetNotMet as e:   # the report is written; its "mcu" section says what was reached
        stopped = str(e)
        with open(os.path.join(out, "report.json")) as f:
            report = json.load(f)
    report["benchmark_stopped"] = stopped
    return report


# ------------------------------------------------------------------------------------------------
# stage 2: our own measurements
# ------------------------------------------------------------------------------------------------
def load_test_images():
    from tfmobile import data

    d = data.load_fashion_mnist(None if FLAGS.smoke else FLAGS.data_dir, subset=FLAGS.smoke)
    return d.x_test, d.y_test


def input_resolution(tflite_bytes):
    from tfmobile.convert import flatbuffer

    info = flatbuffer.parse(tflite_bytes)
    return int(info.tensors[info.inputs[0]].shape[1])


def measure(path, x_test, y_test, cache_dir, with_tflm=False):
    """{"sha256", "resolution", "accuracy", "n", "arena_bytes", "flash_bytes"[, "tflm_accuracy"]} of one
    .tflite, measured here (cached per file content in ``cache_dir``)."""
    from tfmobile import convert, evaluation
    from tfmobile.io import write_json

    with open(path, "rb") as f:
        tfl = f.read()
    digest = hashlib.sha256(tfl).hexdigest()
    cache = os.path.join(cache_dir, f"{digest[:20]}_{len(y_test)}.json")
    row = None
    if os.path.isfile(cache):
        with open(cache) as f:
            row = json.load(f)
    if row is None:
        size = input_resolution(tfl)
        lite = evaluation.evaluate_tflite(tfl, x_test, y_test)
        row = {"sha256": digest, "resolution": size, "accuracy": lite["accuracy"], "n": lite["n"],
               "arena_bytes": int(convert.measure_arena(tfl)["arena_bytes"]), "flash_bytes": len(tfl)}
        write_json(cache, row)
    if with_tflm and "tflm_accuracy" not in row:
        from tfmobile.convert.tflm import tflm_accuracy

        t = time.time()   # uint8 images: preprocessed and quantized as evaluate_tflite does
        got = tflm_accuracy(tfl, x_test, y_test, arena_bytes=row["arena_bytes"])
        row = dict(row, tflm_accuracy=got["accuracy"], tflm_n=got["n"], tflm_seconds=round(time.time() - t, 1))
        write_json(cache, row)
    return dict(row, path=os.path.abspath(path))


def best_fitting(rows, arena_limit, flash_limit):
    """The most accurate row within both limits (by our measurements), or None."""
    fitting = [r for r in rows if r["arena_bytes"] <= arena_limit and r["flash_bytes"] <= flash_limit]
    return max(fitting, key=lambda r: (r["accuracy"], -r["arena_bytes"])) if fitting else None


def measure_run(report, arena_limit, flash_limit, x_test, y_test, cache):
    """The final model and the grid of one run, measured here; TFLM top-1 of the final model and of the
    best fitting grid point."""
    from tfmobile.errors import UserError

    mcu = report.get("mcu")
    if not mcu or not (mcu.get("final") or {}).get("tflite"):
        raise UserError("report.json has no 'mcu' section with a final .tflite (a NetAdapt run with --tflm)")
    final = measure(mcu["final"]["tflite"], x_test, y_test, cache, with_tflm=True)
    grid = []
    for row in mcu.get("grid") or []:
        if not row.get("trained", True):    # it cannot fit: measured untrained by the run, not trained
            grid.append({k: row.get(k) for k in ("alpha", "resolution", "arena_bytes", "flash_bytes", "trained",
                                                 "why_untrained")} | {"fits": False, "accuracy": None})
            continue
        mine = measure(row["tflite"], x_test, y_test, cache)
        grid.append(dict(mine, alpha=row["alpha"], fits=mine["arena_bytes"] <= arena_limit
                         and mine["flash_bytes"] <= flash_limit))
    best = best_fitting(grid, arena_limit, flash_limit)
    if best is not None:
        best = dict(measure(best["path"], x_test, y_test, cache, with_tflm=True), alpha=best["alpha"], fits=True)
    reported = (mcu.get("best_fitting") or {}).get("tflite")
    reported = os.path.abspath(reported) if reported else None
    return {"final": final, "grid": grid, "best_fitting": best, "report_best_fitting": reported,
            "best_fitting_agrees_with_report": reported == (best["path"] if best else None),
            "report": {k: mcu["final"].get(k) for k in ("resolution", "arena_bytes", "flash_bytes", "accuracy",
                                                         "tflm_accuracy", "macs")},
            "report_gain_points": mcu.get("gain_points"), "latency_note": mcu.get("latency_note")}


# ------------------------------------------------------------------------------------------------
# stage 3: the acceptance and the committed files
# ------------------------------------------------------------------------------------------------
def _points(fraction):
    """Top-1 in points, rounded off float noise (10,000 images: steps of 0.01 point)."""
    return None if fraction is None else round(100 * fraction, 6)


def _criterion(value, limit, at_most):
    ok = value is not None and (value <= limit if at_most else value >= limit)
    return {"value": value, "limit": limit, "pass": bool(ok)}


def acceptance(final, baseline, arena_limit, flash_limit, min_tflm=90.0, max_gap=0.1, min_gain=1.5,
               test_images=10000):
    """Each criterion of issue 20 with its measured value and verdict (accuracies in points; the gain
    on LiteRT top-1 of both int8 models on the same images, the TFLM gain beside it)."""
    tflm = _points(final.get("tflm_accuracy"))
    lite = _points(final["accuracy"])
    gap = None if tflm is None else round(abs(tflm - lite), 6)
    gain = None if baseline is None else round(lite - _points(baseline["accuracy"]), 6)
    out = {"arena_bytes": _criterion(final["arena_bytes"], arena_limit, at_most=True),
           "flash_bytes": _criterion(final["flash_bytes"], flash_limit, at_most=True),
           "tflm_top1_points": _criterion(tflm, min_tflm, at_most=False),
           "tflm_litert_gap_points": _criterion(gap, max_gap, at_most=True),
           "gain_points_over_best_fitting_grid": _criterion(gain, min_gain, at_most=False),
           "test_images": _criterion(min(final["n"], final.get("tflm_n", 0)), test_images, at_most=False)}
    if baseline is not None and baseline.get("tflm_accuracy") is not None and tflm is not None:
        out["gain_points_over_best_fitting_grid"]["tflm_value"] = round(
            tflm - _points(baseline["tflm_accuracy"]), 6)
    out["all_pass"] = all(c["pass"] for c in out.values())
    return out


def manifest(final, baseline, baseline_file):
    """issue 20's manifest.json: file names, resolutions, LiteRT and TFLM top-1, TFLM arenas."""
    rows = [(NETADAPT_FILE, final)] + ([(baseline_file, baseline)] if baseline is not None else [])
    return {"netadapt": NETADAPT_FILE, "baseline": baseline_file if baseline is not None else None,
            "resolution": {f: r["resolution"] for f, r in rows},
            "accuracy": {f: r["accuracy"] for f, r in rows},
            "tflm_accuracy": {f: r.get("tflm_accuracy") for f, r in rows},
            "arena_bytes": {f: r["arena_bytes"] for f, r in rows}}


def baseline_file_name(baseline):
    return f"baseline_a{baseline['alpha']:g}_r{baseline['resolution']}_int8.tflite"


def write_artifacts(out_dir, final, baseline):
    """The two .tflite files and manifest.json, renamed into place together."""
    from tfmobile.io import StagedWriter

    os.makedirs(out_dir, exist_ok=True)
    baseline_file = baseline_file_name(baseline) if baseline is not None else None
    with StagedWriter() as staged:
        for name, row in ((NETADAPT_FILE, final), (baseline_file, baseline)):
            if row is not None:
                with open(row["path"], "rb") as f:
                    staged.add(os.path.join(out_dir, name), f.read())
        staged.add(os.path.join(out_dir, "manifest.json"),
                   json.dumps(manifest(final, baseline, baseline_file), indent=2) + "\n")
    return os.path.join(out_dir, "manifest.json")


def _run_summary(report, measured):
    keep = ("status", "benchmark_stopped", "resource", "target_value", "start", "reached")
    out = {k: report.get(k) for k in keep}
    out["measured"] = measured
    out["iterations"] = [{k: h.get(k) for k in ("iteration", "chosen", "width", "resources", "measured",
                                                "val_accuracy", "seconds")}
                         for h in report.get("iterations") or []]
    return out


def main(argv):
    from tfmobile.bench import host_device
    from tfmobile.errors import UserError
    from tfmobile.io import check_writable, write_json

    if not FLAGS.work_dir:
        raise app.UsageError("--work_dir is required")
    fit_texts = ["80KB/600KB"] if FLAGS.smoke and not FLAGS["fits"].present else list(FLAGS.fits)
    fits = [parse_fit(f) for f in fit_texts]
    if not fits:
        raise UserError("--fits needs at least one ARENA/FLASH pair")
    out_dir, result_path = FLAGS.out_dir, FLAGS.result
    if FLAGS.smoke:
        out_dir, result_path = os.path.join(FLAGS.work_dir, "mcu"), os.path.join(FLAGS.work_dir, "result.json")
    check_writable(out_dir, directory=True)
    check_writable(result_path)
    t0 = time.time()
    x_test, y_test = load_test_images()
    result = {"host": host_device("litert", 1), "smoke": FLAGS.smoke, "fits": fit_texts, "runs": {},
              "mcu_latency": "not measured: no microcontroller here (MACs are in each run's report)"}
    for text, (arena_limit, flash_limit) in zip(fit_texts, fits):
        _cli.progress(f"mcu_fit: NetAdapt run for {text}")
        # the later pairs start from the first pair's trained start (the same model, trained once)
        shared = os.path.join(run_dir_of(fit_texts[0]), "start", "checkpoint")
        report = run_fit(text, shared if text != fit_texts[0] and os.path.isdir(shared) else None)
        measured = measure_run(report, arena_limit, flash_limit, x_test, y_test,
                               os.path.join(FLAGS.work_dir, "measured"))
        result["runs"][text] = _run_summary(report, measured)
    first = result["runs"][fit_texts[0]]["measured"]
    result["acceptance"] = acceptance(first["final"], first["best_fitting"], *fits[0],
                                      min_tflm=FLAGS.min_tflm_accuracy, max_gap=FLAGS.max_gap_points,
                                      min_gain=FLAGS.min_gain_points, test_images=FLAGS.test_images)
    result["manifest"] = write_artifacts(out_dir, first["final"], first["best_fitting"])
    result["wall_seconds_this_invocation"] = round(time.time() - t0, 1)
    write_json(result_path, result)
    _cli.emit(result, FLAGS.json, _render)


def _render(result):
    lines = [f"{name}: {c['value']} (limit {c['limit']}) {'pass' if c['pass'] else 'FAIL'}"
             for name, c in result["acceptance"].items() if name != "all_pass"]
    return "\n".join(lines + [f"all pass: {result['acceptance']['all_pass']}", f"manifest: {result['manifest']}"])


if __name__ == "__main__":
    _cli.run(main)
