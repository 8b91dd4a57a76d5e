"""After the loop: long-term fine-tune, QAT, int8 + TFLM export, LiteRT test accuracy, measurement;
the width-multiplier (x resolution) baselines; the comparison; the MCU fit of a memory run (TFLM
accuracy, arena, flash, verdicts against the constraints, the best fitting baseline);
report.json / report.md / netadapt.png.

The final model is trained, calibrated, converted and evaluated at its own input resolution (a
resolution proposal may have lowered it below the start's). Each step leaves a file when it is done
(``final/final.json``, ``baselines/aALPHA/result.json`` (``aALPHA_rRES`` for a grid resolution other
than the start's), ``final/measurements.json``, ``final/resources.json``, ``final/tflm_accuracy.json``,
training checkpoints resumed by ``train.fit``), so a resumed run skips what is finished. Everything here
takes its inputs explicitly: the settings, the run directory, the start (``state.Start``), the last
checkpoint, the data (``state.RunData``) and the measurer.
"""
import hashlib
import json
import os
import time

from tfmobile.errors import UserError
from tfmobile.netadapt.config import UNITS, constrained_kinds

MEMORY_KINDS = ("peak_sram", "flash")
# A grid point whose untrained int8 model exceeds a memory limit by more than this fraction is not trained.
# The untrained model's TFLM arena (measured without the final SOFTMAX) is at most the trained one's and its
# file is a lower bound of the trained file (its folded biases are all zero and the converter stores equal constants
# once: mbv2 alpha 0.1 at 32 px, 214,032 B untrained, 229,144 B trained), so no training makes it fit.
SCREEN_MARGIN = 0.02
MCU_LATENCY_NOTE = ("MCU latency is not measured here: no MCU is attached; MACs are the only compute figure "
                    "(the latencies in this report, if any, are of this host's LiteRT).")


def train_and_export(cfg, data, name, spec, model, directory, epochs, lr, log, teacher=None, tflm=None):
    """``model`` through main_job's float -> QAT -> int8 (+ TFLM) -> LiteRT test accuracy stages in ``directory``
    (resumed there); the row, with the Keras validation accuracy and the spec (also DIRECTORY/spec.json).

    Training and evaluation resize the images to the spec's input; the int8 calibration images are taken
    at it too (``data.calibration_for``), so a model below the start's resolution is calibrated on what it sees.
    teacher: a Keras model the float stage distils from (``--distill`` weight, ``--distill_temperature``).
    tflm: the TFLM export (None: ``--tflm``).
    """
    from tfmobile import train
    from tfmobile.io import write_json
    from tfmobile.main_job import Job

    ft, fin = cfg.fine_tune, cfg.final
    job = Job(directory, data.splits, batch_size=ft.batch_size, progress=log,
              resume={"seed": ft.seed, "verbose": 2})
    if teacher is not None and fin.distill and epochs > 0:
        # main_job's float stage, with the teacher (its checkpoint dir, so a resume continues it)
        model, _ = job.stage("float training (distilled)", lambda: train.fit(
            model, data.splits, os.path.join(directory, "train", "float"), **job.fit_options, **job.resume_options,
            epochs=epochs, lr=lr, teacher=teacher, distill=fin.distill, temperature=fin.distill_temperature))
        epochs = 0   # trained: the stages below take it as it is
    row, fmodel, qmodel = job.float_qat_int8(name, model, epochs, lr, fin.qat_epochs,
                                             data.calibration_for(spec.input_shape),
                                             tflm=fin.tflm if tflm is None else tflm, bench=False)
    row["quantization"] = "qat" if qmodel is not None else "ptq"
    row["val_accuracy_keras"] = train.evaluate(fmodel, data.splits.x_val, data.splits.y_val)
    row["spec"] = spec.to_dict()
    row["resolution"] = int(spec.input_shape[0])
    write_json(os.path.join(directory, "spec.json"), spec.to_dict())
    return row


def budget_epochs(cfg, start_train_epochs):
    """The whole training budget of the NetAdapt model: start training + long-term fine-tune epochs, in
    passes over the training images (what a baseline, or the found architecture trained from scratch or
    rewound, gets)."""
    return int(start_train_epochs or cfg.start.epochs or 0) + cfg.final.long_epochs


def final_training(cfg, start_train_epochs, last_checkpoint, spec):
    """(starting model, epochs, peak lr, description) of the final stage.

    ``fine_tune`` (NetAdapt's long-term fine-tune): the loop's last weights, ``long_epochs`` at
    ``long_lr``. ``from_scratch`` (MobileNetV3's recipe): the found architecture ``spec`` freshly
    initialised and trained with the baselines' budget (``budget_epochs``, at ``lr``) — in the benchmark
    that beat the width-multiplier curve where the fine-tuned weights only reached it
    (docs/netadapt_results.md). ``rewind``: the baselines' budget and rate too, from the loop's last
    weights (what the pruned channels learnt is kept, the schedule restarts).
    """
    from tfmobile import models, train

    fin = cfg.final
    if fin.mode in ("from_scratch", "rewind"):
        epochs = budget_epochs(cfg, start_train_epochs)
        if fin.mode == "rewind":
            return (train.load_checkpoint(last_checkpoint), epochs, cfg.start.lr,
                    f"{epochs} epoch(s) of the found architecture from the loop's weights (rewind)")
        return (models.build(spec), epochs, cfg.start.lr,
                f"{epochs} epoch(s) of the found architecture from scratch")
    return (train.load_checkpoint(last_checkpoint), fin.long_epochs, fin.long_lr,
            f"{fin.long_epochs} long-term fine-tune epoch(s)")


def chosen_by(cfg):
    """Why this final stage ran: "default", or "--final" (the report says which and why)."""
    from tfmobile.netadapt.config import Final

    return "default" if cfg.final.mode == Final().mode else "--final"


def final_model(cfg, run_dir, data, start_train_epochs, last_checkpoint, log, teacher_checkpoint=None, tflm=None):
    """The NetAdapt model through the final stage (final/final.json); its row without the measurement.

    At the last checkpoint's resolution (lower than the start's after a resolution proposal).
    teacher_checkpoint: the start model, the teacher of ``--distill`` (unused when it is 0).
    tflm: the TFLM export (None: ``--tflm``; ``final_and_baselines`` turns it on for a memory run).
    """
    from tfmobile.models import ModelSpec

    def compute():
        from tfmobile import train

        t = time.time()
        spec = ModelSpec.load(os.path.join(last_checkpoint, "spec.json"))
        model, epochs, lr, what = final_training(cfg, start_train_epochs, last_checkpoint, spec)
        fin = cfg.final
        teacher = None
        if fin.distill and epochs > 0:
            if not teacher_checkpoint:
                raise ValueError("--distill needs the start model's checkpoint (the teacher)")
            teacher = train.load_checkpoint(teacher_checkpoint)
            what += f", distilled from the start model (weight {fin.distill:g}, T {fin.distill_temperature:g})"
        log(f"final stage at {spec.input_shape[0]}x{spec.input_shape[1]}: {what}, {fin.qat_epochs} QAT epoch(s), "
            f"int8{' + TFLM' if (fin.tflm if tflm is None else tflm) else ''}")
        row = train_and_export(cfg, data, "netadapt_int8", spec, model, run_dir.sub("final"), epochs, lr, log,
                               teacher=teacher, tflm=tflm)
        row.update(final_stage=fin.mode, final_stage_chosen_by=chosen_by(cfg), final_stage_what=what,
                   distillation={"weight": fin.distill, "temperature": fin.distill_temperature,
                                 "teacher": "start/checkpoint"} if teacher is not None else None,
                   epochs=epochs, seconds=round(time.time() - t, 1))
        return row

    return run_dir.step(os.path.join("final", "final.json"), compute)


def baseline_key(alpha, resolution=None):
    """The name of a baseline (its folder under baselines/, its key in the measurements): ``aALPHA`` at the
    start's resolution (the layout of runs before the grid, so they stay resumable), else ``aALPHA_rRES``."""
    return f"a{alpha:g}" if resolution is None else f"a{alpha:g}_r{int(resolution)}"


def baseline_grid(cfg, start_resolution):
    """[(alpha, resolution or None = the start's)]: ``--baselines`` x ``--baseline_resolutions`` (none given:
    the start's resolution only, exactly the width-multiplier baselines of before)."""
    resolutions = [int(r) for r in cfg.final.baseline_resolutions or ()]
    resolutions = [None if r == int(start_resolution) else r for r in resolutions] or [None]
    return [(a, r) for a in cfg.final.baselines for r in dict.fromkeys(resolutions)]


def baseline_spec(cfg, start_spec, input_shape, classes, name, alpha, resolution=None):
    """The zoo architecture of one baseline: ``name`` at ``alpha``, the start's channels and BatchNorm
    momentum, a square ``resolution`` input (None: ``input_shape``, the start's)."""
    from tfmobile import models

    h, w, c = input_shape
    if resolution is not None:
        h = w = int(resolution)
    bn_momentum = start_spec.options.get("bn_momentum", cfg.start.bn_momentum)   # as the start model's
    return models.get_spec(name, input_shape=(h, w, c), alpha=alpha, classes=classes, bn_momentum=bn_momentum)


def check_baseline_grid(cfg, start_spec, input_shape, classes):
    """UserError naming the grid resolutions the baseline network cannot take (below its total stride):
    before anything trains (the loop may call it before the start; the final stage calls it first)."""
    from tfmobile.models.surgery import lowest_resolution

    name = cfg.start.model if not cfg.start.checkpoint else start_spec.family
    bad = {}
    for alpha, resolution in baseline_grid(cfg, input_shape[0]):
        spec = baseline_spec(cfg, start_spec, input_shape, classes, name, alpha, resolution)
        lowest = lowest_resolution(spec)
        if spec.input_shape[0] < lowest:
            bad[spec.input_shape[0]] = lowest
    if bad:
        raise UserError(f"--baseline_resolutions {','.join(str(r) for r in sorted(bad))}: below what the "
                        f"{name} baselines' strides allow (at least {max(bad.values())} px)")


def baseline(cfg, run_dir, data, start, name, alpha, log, resolution=None, tflm=None, teacher=None):
    """A width-multiplier model trained with the NetAdapt model's whole training budget.

    resolution: its square input (None: the start's); tflm: its TFLM export (None: ``--tflm``).
    teacher: a Keras model to distil from with ``--distill`` (the runs never pass one: the baselines are the curve
    as it is; benchmarks/netadapt_retrain.py does, to see how much of a distilled final model's gain is distillation).
    With ``baselines_dir`` (shared by several runs, e.g. the latency and the peak_sram run of the
    benchmark) a baseline is trained once per training setting: its folder name carries a digest
    of everything that decides the trained model.
    """
    from tfmobile import models

    fin, ft = cfg.final, cfg.fine_tune
    epochs = budget_epochs(cfg, start.train_epochs)
    spec = baseline_spec(cfg, start.point.spec, data.input_shape, data.splits.num_classes, name, alpha, resolution)
    setting = {"spec": spec.to_dict(), "epochs": epochs, "qat_epochs": fin.qat_epochs, "lr": cfg.start.lr,
               "batch_size": ft.batch_size, "seed": ft.seed, "data": data.config, "tflm": fin.tflm}
    if teacher is not None and fin.distill:
        setting["distill"] = {"weight": fin.distill, "temperature": fin.distill_temperature}
    digest = hashlib.sha1(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:10]
    shared = cfg.execution.baselines_dir
    key = baseline_key(alpha, resolution)
    d = (os.path.join(os.path.abspath(shared), f"{spec.name}_{digest}") if shared
         else run_dir.sub("baselines", key))

    def compute():
        t = time.time()
        log(f"baseline {spec.name}: {epochs} epochs from scratch (= start training + long-term fine-tune), "
            f"{fin.qat_epochs} QAT epoch(s)")
        label = f"{name}_{key}_int8"
        row = train_and_export(cfg, data, label, spec, models.build(spec), d, epochs, cfg.start.lr, log, tflm=tflm,
                               teacher=teacher)
        row.update(alpha=alpha, epochs=epochs, seconds=round(time.time() - t, 1), setting_digest=digest)
        return row

    row = run_dir.step(os.path.join(d, "result.json"), compute)   # an absolute path stays as it is
    return dict(row, directory=d, resolution=int(spec.input_shape[0]))


def measure_all(cfg, run_dir, measurer, rows):
    """Measure the final model and the baselines (latency: interleaved in one session); cached."""
    path = run_dir.sub("final", "measurements.json")
    done = run_dir.read("final", "measurements.json")
    if done is not None and set(done) != set(rows):   # baselines added on --resume: measure all again
        os.remove(path)
    return run_dir.step(path, lambda: measure_rows(cfg, measurer, rows))


def measure_rows(cfg, measurer, rows):
    """{key: measurement} of the models at rows[key]["path"] (latency: interleaved, in one session), uncached."""
    models = {}
    for key, row in rows.items():
        with open(row["path"], "rb") as f:
            models[key] = f.read()
    kind = cfg.search.resource
    if kind == "latency":
        return measurer.measure_many(models, cfg.final.baseline_rounds)
    from tfmobile.models import ModelSpec

    return {k: measurer.measure(b, kind, ModelSpec.from_dict(rows[k]["spec"]).to_json(indent=None))
            for k, b in models.items()}


def interpolate(points, x_key, y_key, x):
    """y at x on the piecewise-linear curve through ``points`` sorted by x; None outside its range."""
    pts = sorted((p[x_key], p[y_key]) for p in points)
    if len(pts) < 2 or not pts[0][0] <= x <= pts[-1][0]:
        exact = [y for px, y in pts if px == x]
        return exact[0] if exact else None
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def frontier(points):
    """The points no other point beats (lower value and higher accuracy), sorted by value: the curve a user of the
    multiplier chooses from. A dominated baseline (mbv2 32x32: alpha 1.0 at 91.07 % and 0.052 ms, slower and less
    accurate than alpha 0.75 at 91.56 %) would add a second, slower crossing of an accuracy and flatter the ratio
    (0.613 where the frontier gives 0.707)."""
    kept = []
    for p in sorted(points, key=lambda p: (p["value"], -p["accuracy"])):
        if not kept or p["accuracy"] > kept[-1]["accuracy"]:
            kept.append(p)
    return kept


def compare(netadapt, baselines, kind, target_value):
    """Latency (or resource) ratio at equal accuracy and accuracy at equal resource vs the baselines' frontier."""
    every = [{"value": b["measured"], "accuracy": b["accuracy"], "alpha": b.get("alpha")} for b in baselines]
    pts = frontier(every)
    out = {"points": len(pts)}
    dominated = [p["alpha"] for p in every if p not in pts]
    if dominated:
        out["dominated_baselines"] = dominated
    if len(pts) >= 2:
        # resource at NetAdapt's accuracy, on the baseline curve (accuracy as x: sorted by accuracy)
        at_acc = interpolate(pts, "accuracy", "value", netadapt["accuracy"])
        out["baseline_value_at_equal_accuracy"] = at_acc
        out["ratio_at_equal_accuracy"] = netadapt["measured"] / at_acc if at_acc else None
        if at_acc is None and netadapt["accuracy"] > pts[-1]["accuracy"]:
            # more accurate than every multiplier: no baseline reaches it, so the ratio is below this bound
            out["ratio_at_equal_accuracy"] = netadapt["measured"] / pts[-1]["value"]
            out["ratio_is_upper_bound"] = True
        acc = interpolate(pts, "value", "accuracy", netadapt["measured"])
        out["baseline_accuracy_at_equal_value"] = acc
        out["accuracy_gain_at_equal_value"] = netadapt["accuracy"] - acc if acc is not None else None
    if pts:
        # A model AT the target that is more accurate than every multiplier model gets this ratio, and no model at
        # the target gets a lower one: the frontier ends at its most accurate point. mbv2 32x32: 0.0259 / 0.0416 =
        # 0.62, so a ratio goal of 0.55 there asks for a final model well below the target, not a better search.
        out["lowest_ratio_at_target"] = target_value / pts[-1]["value"]
    fits = [b for b in baselines if b["measured"] <= target_value]
    if fits:
        widest = max(fits, key=lambda b: b["alpha"])
        out["widest_baseline_meeting_target"] = {"alpha": widest["alpha"], "measured": widest["measured"],
                                                 "accuracy": widest["accuracy"],
                                                 "accuracy_gain": netadapt["accuracy"] - widest["accuracy"]}
    return out


def compare_models(netadapt, baselines, target_value, kind="latency"):
    """``compare`` from (value, top-1) pairs: the NetAdapt model's, and each baseline's keyed by its alpha (as text or
    number): how the benchmarks hand over what they measured."""
    curve = [{"alpha": float(a), "measured": v, "accuracy": acc} for a, (v, acc) in baselines.items()]
    value, accuracy = netadapt
    return compare({"measured": value, "accuracy": accuracy}, curve, kind, target_value)


def reached(history, start):
    """The best point reached: the last iteration (its value is the lowest: each meets a lower budget)."""
    if not history:
        return {"iteration": 0, "measured": start["measured"], "val_accuracy": start["val_accuracy"]}
    best = min(history, key=lambda h: (h["measured"], -h["iteration"]))
    return {"iteration": best["iteration"], "measured": best["measured"], "val_accuracy": best["val_accuracy"],
            "chosen": best["chosen"]}


def finish(cfg, run_dir, status, start, last_checkpoint, data, measurer, log, run_id, workers, started):
    """The final stage (when the target was met), the report (report.json / .md / netadapt.png); the report dict.

    started: (wall, process CPU) time of this invocation's start, for the report's timings.
    """
    from tfmobile.io import write_text
    from tfmobile.netadapt import report as report_mod

    hist = run_dir.history()
    kind = cfg.search.resource
    rep = {"status": status, "resource": kind, "unit": UNITS[kind], "target_value": start.target,
           "target_fraction": cfg.search.target, "select": cfg.search.select, "run_id": run_id,
           "workers": workers, "start": start.summary(), "start_measurement": start.measurement,
           "iterations": hist, "reached": reached(hist, start.summary()), "config": cfg.fingerprint()}
    rep["start"]["model"] = start.point.spec.name
    recorded = run_dir.read("start", "start.json") or {}
    rep["start"].update({k: recorded.get(k) for k in ("train_steps", "train_schedule")})
    if status == "met":
        rep.update(final_and_baselines(cfg, run_dir, start, last_checkpoint, data, measurer, log))
    rep["timings"] = timings(hist, rep, started)
    rep["prediction_error"] = [{"iteration": h["iteration"], "predicted": h["predicted"], "measured": h["measured"],
                                "relative_error": h["prediction_error"],
                                "relative_error_of_step": h["prediction_error_scaled"]} for h in hist]
    run_dir.write(rep, "report.json")
    report_mod.plot(rep, run_dir.sub("netadapt.png"))
    write_text(run_dir.sub("report.md"), report_mod.markdown(rep))
    rep["report_md"] = run_dir.sub("report.md")
    rep["output_dir"] = run_dir.path
    return rep


def constraint_limits(cfg, start):
    """{kind: absolute limit} of every constrained resource, the primary ``--resource`` first."""
    limits = {cfg.search.resource: start.target}
    limits.update({k: v for k, v in (start.limits or {}).items() if k != cfg.search.resource})
    return limits


def is_mcu_run(cfg):
    """The MCU fit is checked (TFLM export even with --notflm, TFLM accuracy on the whole test split, the
    "mcu" report) when the run is about memory: the resource or a constraint is peak_sram or flash. A
    latency run keeps ``--tflm``'s firmware files without the TFLM pass over the test images (minutes
    that a phone's latency target does not need)."""
    return any(k in MEMORY_KINDS for k in constrained_kinds(cfg))


def final_and_baselines(cfg, run_dir, start, last_checkpoint, data, measurer, log):
    """The report's final, baselines, comparison, final_meets_target, constraints and (memory runs) mcu:
    trained, exported, measured together."""
    mcu = is_mcu_run(cfg)
    tflm = True if mcu else None      # None: --tflm decides
    if cfg.final.baselines:
        check_baseline_grid(cfg, start.point.spec, data.input_shape, data.splits.num_classes)
    fin = final_model(cfg, run_dir, data, start.train_epochs, last_checkpoint, log,
                      teacher_checkpoint=start.point.checkpoint, tflm=tflm)
    rows = {"netadapt": fin}
    base_rows, untrained = [], []
    limits = constraint_limits(cfg, start)
    memory_limits = {k: v for k, v in limits.items() if k in MEMORY_KINDS} if mcu else {}
    if cfg.final.baselines:
        name = cfg.start.model if not cfg.start.checkpoint else start.point.spec.family
        for a, res in baseline_grid(cfg, data.input_shape[0]):
            if memory_limits:
                spec = baseline_spec(cfg, start.point.spec, data.input_shape, data.splits.num_classes, name, a, res)
                screen = screen_grid_point(run_dir, baseline_key(a, res), a, spec, memory_limits, log)
                if screen["exceeds"]:
                    untrained.append(screen)
                    continue
            b = baseline(cfg, run_dir, data, start, name, a, log, resolution=res, tflm=tflm)
            rows[baseline_key(a, res)] = b
            base_rows.append((baseline_key(a, res), res is None, b))
    meas = measure_all(cfg, run_dir, measurer, rows)
    fin = dict(fin, measured=meas["netadapt"]["value"], measurement=meas["netadapt"])
    out = {"final": {k: v for k, v in fin.items() if k not in ("spec",)}, "baselines": []}
    out["final"]["spec"] = fin["spec"]
    width_only = []
    for key, at_start_resolution, b in base_rows:
        m = meas[key]
        row = ({k: b.get(k) for k in ("alpha", "epochs", "accuracy", "size_bytes", "path", "quantization", "tflm",
                                      "seconds")}
               | {"measured": m["value"], "measurement": m})
        if not at_start_resolution:          # a grid point: the rows of runs without a grid stay as they were
            row["resolution"] = b["resolution"]
        out["baselines"].append(row)
        if at_start_resolution:
            width_only.append(row)
    # the width-multiplier curve at the start's resolution (grid points at other inputs are in "mcu")
    out["comparison"] = (compare(fin, width_only, cfg.search.resource, start.target) if width_only else None)
    out["final_meets_target"] = fin["measured"] <= start.target
    values = measure_resources(run_dir, measurer, rows, meas, cfg.search.resource, list(limits))
    out["constraints"] = [verdict(kind, limit, values["netadapt"].get(kind)) for kind, limit in limits.items()]
    if mcu:
        out["mcu"] = mcu_report(run_dir, data, fin, [(key, b) for key, _, b in base_rows], values, limits, log,
                                untrained=untrained)
    return out


def screen_grid_point(run_dir, key, alpha, spec, memory_limits, log):
    """A grid point's int8 flash and TFLM arena measured on its untrained network (final/untrained/KEY.json,
    cached), as the loop measures its picks; ``exceeds``: the limits it misses by more than ``SCREEN_MARGIN``
    (then it is not trained: see ``SCREEN_MARGIN``)."""
    from tfmobile import analysis

    def compute():
        from tfmobile import models
        from tfmobile.bench.lut import to_int8_tflite
        from tfmobile.convert.flatbuffer import strip_final_softmax
        from tfmobile.netadapt.measure import measure_tflite

        log(f"grid point {key}: int8 flash and TFLM arena of the untrained network ...")
        tflite = to_int8_tflite(models.build(spec))
        # the arena without the final SOFTMAX: TFLM's int8 softmax aborts on the tiny scale of untrained logits
        firmware = {"flash": tflite, "peak_sram": strip_final_softmax(tflite)}
        return {kind: measure_tflite(firmware[kind], kind, {})["value"] for kind in memory_limits}

    values = run_dir.step(os.path.join("final", "untrained", f"{key}.json"), compute)
    exceeds = sorted(k for k, limit in memory_limits.items() if values[k] > limit * (1 + SCREEN_MARGIN))
    if exceeds:
        log(f"grid point {key}: not trained, its untrained int8 model already exceeds "
            + ", ".join(f"{k} ({int(values[k])} > {int(memory_limits[k])} bytes)" for k in exceeds))
    return {"key": key, "alpha": alpha, "resolution": int(spec.input_shape[0]), "values": values,
            "exceeds": exceeds, "macs": int(analysis.profile(spec).macs)}


def measure_resources(run_dir, measurer, rows, meas, primary, kinds):
    """{row key: {kind: measured value}} of every constrained kind (final/resources.json, cached).

    The primary resource is the final measurement's; peak_sram the TFLM arena the export measured (else
    measured now, as the loop does: ``convert.measure_arena``); flash the .tflite's bytes; the others by the
    run's measuring device (macs / params counted on the spec).
    """
    path = run_dir.sub("final", "resources.json")
    done = run_dir.read("final", "resources.json")
    if done is not None and (set(done) != set(rows) or any(set(v) != set(kinds) for v in done.values())):
        os.remove(path)      # baselines or constraints added on --resume

    def compute():
        from tfmobile.models import ModelSpec

        out = {}
        for key, row in rows.items():
            with open(row["path"], "rb") as f:
                tflite = f.read()
            values = {}
            for kind in kinds:
                arena = (row.get("tflm") or {}).get("arena_bytes")
                if kind == primary:
                    values[kind] = meas[key]["value"]
                elif kind == "flash":
                    values[kind] = len(tflite)
                elif kind == "peak_sram" and arena is not None:
                    values[kind] = int(arena)
                else:
                    spec_json = ModelSpec.from_dict(row["spec"]).to_json(indent=None)
                    values[kind] = measurer.measure(tflite, kind, spec_json)["value"]
            out[key] = values
        return out

    return run_dir.step(path, compute)


def verdict(kind, limit, measured):
    """One constraint of one model: its limit, the measured value, whether it fits and by how much."""
    unit = UNITS[kind]
    row = {"kind": kind, "unit": unit, "limit": limit, "measured": measured}
    if measured is None or limit is None:
        return dict(row, fits=None, verdict="not measured")
    fits = measured <= limit
    gap = abs(limit - measured)
    amount = f"{int(round(gap))} {unit}" if unit in ("bytes", "MACs", "params") else f"{gap:.4g} {unit}"
    return dict(row, fits=fits, verdict=f"fits ({amount} to spare)" if fits else f"exceeds by {amount}")


def grid_row(key, row, values, limits, macs):
    """A baseline as a point of the MCU grid: its TFLM arena, flash, accuracy and whether it fits every limit."""
    arena = values.get("peak_sram", (row.get("tflm") or {}).get("arena_bytes"))
    fits = all(values.get(kind) is not None and values[kind] <= limit for kind, limit in limits.items())
    return {"key": key, "alpha": row["alpha"], "resolution": row["resolution"], "tflite": row["path"],
            "arena_bytes": arena, "flash_bytes": values.get("flash", row.get("size_bytes")),
            "accuracy": row["accuracy"], "macs": macs, "fits": fits,
            "verdicts": [verdict(kind, limit, values.get(kind)) for kind, limit in limits.items()]}


def best_fitting(grid):
    """The most accurate grid point that fits every constraint (ties: the smaller arena, then flash); None
    when none fits."""
    fitting = [g for g in grid if g["fits"]]
    if not fitting:
        return None
    return max(fitting, key=lambda g: (g["accuracy"], -(g["arena_bytes"] or 0), -(g["flash_bytes"] or 0)))


def tflm_top1(run_dir, relpath, tflite_path, data, arena_bytes, log):
    """TFLite-Micro's top-1 of an int8 .tflite on the whole test split, beside LiteRT's (cached at ``relpath``)."""
    def compute():
        from tfmobile.convert.tflm import tflm_accuracy

        with open(tflite_path, "rb") as f:
            tflite = f.read()
        log(f"TFLite-Micro accuracy of {os.path.basename(tflite_path)} on {len(data.splits.y_test)} test images ...")
        return tflm_accuracy(tflite, data.splits.x_test, data.splits.y_test, arena_bytes=arena_bytes,
                             agree_with="litert")

    return run_dir.step(relpath, compute)


def untrained_grid_row(screen, limits):
    """A grid point left untrained (``screen_grid_point``): its measured memory, no accuracy, not fitting."""
    values = screen["values"]
    return {"key": screen["key"], "alpha": screen["alpha"], "resolution": screen["resolution"], "tflite": None,
            "arena_bytes": values.get("peak_sram"), "flash_bytes": values.get("flash"), "accuracy": None,
            "macs": screen["macs"], "fits": False, "trained": False,
            "why_untrained": "its untrained int8 model exceeds " + ", ".join(screen["exceeds"]),
            "verdicts": [verdict(kind, limit, values.get(kind)) for kind, limit in limits.items()]}


def mcu_report(run_dir, data, fin, base_rows, values, limits, log, untrained=()):
    """The report's "mcu": the final model verified in TFLM, the baseline grid (``untrained``: the points that
    cannot fit, measured untrained), the best fitting point."""
    from tfmobile import analysis
    from tfmobile.models import ModelSpec

    spec = ModelSpec.from_dict(fin["spec"])
    fv = values["netadapt"]
    tflm = fin.get("tflm") or {}
    files = tflm.get("files") or {}
    arena = fv.get("peak_sram", tflm.get("arena_bytes"))
    if arena is None:
        from tfmobile import convert

        with open(fin["path"], "rb") as f:
            arena = convert.measure_arena(f.read())["arena_bytes"]
    acc = tflm_top1(run_dir, os.path.join("final", "tflm_accuracy.json"), fin["path"], data, arena, log)
    final = {"tflite": os.path.abspath(fin["path"]), "resolution": int(spec.input_shape[0]), "arena_bytes": arena,
             "flash_bytes": fv.get("flash", fin.get("size_bytes")), "accuracy": fin["accuracy"],
             "tflm_accuracy": acc["accuracy"], "tflm_test_images": acc["n"], "tflm_agreement": acc["agree_with"],
             "macs": int(analysis.profile(spec).macs), "c_array": files.get("cc"), "header": files.get("h"),
             "op_resolver": files.get("resolver"), "tflm_error": tflm.get("error"),
             "budget": {kind: verdict(kind, limit, fv.get(kind)) for kind, limit in limits.items()
                        if kind in MEMORY_KINDS}}
    grid = [grid_row(key, b, values[key], limits,
                     int(analysis.profile(ModelSpec.from_dict(b["spec"])).macs)) for key, b in base_rows]
    grid += [untrained_grid_row(u, limits) for u in untrained]
    best = best_fitting(grid)
    if best is not None:
        directory = dict(base_rows)[best["key"]]["directory"]
        best = dict(best, tflm_accuracy=tflm_top1(run_dir, os.path.join(directory, "tflm_accuracy.json"),
                                                  best["tflite"], data, best["arena_bytes"], log)["accuracy"])
    return {"final": final, "grid": grid, "best_fitting": best,
            "gain_points": None if best is None else 100 * (fin["accuracy"] - best["accuracy"]),
            "latency_note": MCU_LATENCY_NOTE}


def timings(hist, rep, started):
    t0, cpu0 = started
    return {"iterations_wall_seconds": round(sum(h["seconds"] for h in hist), 1),
            "iterations_cpu_seconds": round(sum(h.get("cpu_seconds", 0.0) for h in hist), 1),
            "final_stage_seconds": (rep.get("final") or {}).get("seconds"),
            "baseline_seconds": [b.get("seconds") for b in rep.get("baselines") or []],
            "this_invocation_wall_seconds": round(time.time() - t0, 1),
            "this_invocation_driver_cpu_seconds": round(time.process_time() - cpu0, 1)}
