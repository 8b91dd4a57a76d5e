"""After the loop: long-term fine-tune, QAT, int8 + TFLM export, LiteRT test accuracy, measurement;
the width-multiplier baselines; the comparison; report.json / report.md / netadapt.png.

Each step leaves a file when it is done (``final/final.json``, ``baselines/aALPHA/result.json``,
``final/measurements.json``, training checkpoints resumed by ``train.fit``), so a resumed run skips
what is finished. Everything here takes its inputs explicitly: the settings, the run directory,
the start (``state.Start``), the last checkpoint, the data (``state.RunData``) and the measurer.
"""
import hashlib
import json
import os
import time

from tfmobile.netadapt.config import UNITS


def train_and_export(cfg, data, name, spec, model, directory, epochs, lr, log, teacher=None):
    """``model`` through main_job's float -> QAT -> int8 (+ TFLM) -> LiteRT test accuracy stages in ``directory``
    (resumed there); the row, with the Keras validation accuracy and the spec (also DIRECTORY/spec.json).

    teacher: a Keras model the float stage distils from (``--distill`` weight, ``--distill_temperature``).
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
    row, fmodel, qmodel = job.float_qat_int8(name, model, epochs, lr, fin.qat_epochs, data.calibration,
                                             tflm=fin.tflm, bench=False)
    row["quantization"] = "qat" if qmodel is not None else "ptq"
    row["val_accuracy_keras"] = train.evaluate(fmodel, data.splits.x_val, data.splits.y_val)
    row["spec"] = spec.to_dict()
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


def final_model(cfg, run_dir, data, start_train_epochs, last_checkpoint, log, teacher_checkpoint=None):
    """The NetAdapt model through the final stage (final/final.json); its row without the measurement.

    teacher_checkpoint: the start model, the teacher of ``--distill`` (unused when it is 0).
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
        log(f"final stage: {what}, {fin.qat_epochs} QAT epoch(s), int8 + TFLM")
        row = train_and_export(cfg, data, "netadapt_int8", spec, model, run_dir.sub("final"), epochs, lr, log,
                               teacher=teacher)
        row.update(final_stage=fin.mode, final_stage_chosen_by=chosen_by(cfg), final_stage_what=what,
                   distillation={"weight": fin.distill, "temperature": fin.distill_temperature,
                                 "teacher": "start/checkpoint"} if teacher is not None else None,
                   epochs=epochs, seconds=round(time.time() - t, 1))
        return row

    return run_dir.step(os.path.join("final", "final.json"), compute)


def baseline(cfg, run_dir, data, start, name, alpha, log):
    """A width-multiplier model trained with the NetAdapt model's whole training budget.

    With ``baselines_dir`` (shared by several runs, e.g. the latency and the peak_sram run of the
    benchmark) a baseline is trained once per training setting: its folder name carries a digest
    of everything that decides the trained model.
    """
    from tfmobile import models

    fin, ft = cfg.final, cfg.fine_tune
    epochs = budget_epochs(cfg, start.train_epochs)
    h, w, c = data.input_shape
    bn_momentum = start.point.spec.options.get("bn_momentum", cfg.start.bn_momentum)   # as the start model's
    spec = models.get_spec(name, input_shape=(h, w, c), alpha=alpha, classes=data.splits.num_classes,
                           bn_momentum=bn_momentum)
    setting = {"spec": spec.to_dict(), "epochs": epochs, "qat_epochs": fin.qat_epochs, "lr": cfg.start.lr,
               "batch_size": ft.batch_size, "seed": ft.seed, "data": data.config, "tflm": fin.tflm}
    digest = hashlib.sha1(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:10]
    shared = cfg.execution.baselines_dir
    d = (os.path.join(os.path.abspath(shared), f"{spec.name}_{digest}") if shared
         else run_dir.sub("baselines", f"a{alpha:g}"))

    def compute():
        t = time.time()
        log(f"baseline {spec.name}: {epochs} epochs from scratch (= start training + long-term fine-tune), "
            f"{fin.qat_epochs} QAT epoch(s)")
        row = train_and_export(cfg, data, f"{name}_a{alpha:g}_int8", spec, models.build(spec), d, epochs,
                               cfg.start.lr, log)
        row.update(alpha=alpha, epochs=epochs, seconds=round(time.time() - t, 1), setting_digest=digest)
        return row

    return run_dir.step(os.path.join(d, "result.json"), compute)   # an absolute path stays as it is


def measure_all(cfg, run_dir, measurer, rows):
    """Measure the final model and the baselines (latency: interleaved in one session); cached."""
    path = run_dir.sub("final", "measurements.json")
    done = run_dir.read("final", "measurements.json")
    if done is not None and set(done) != set(rows):   # baselines added on --resume: measure all again
        os.remove(path)
    return run_dir.step(path, lambda: _measure_now(cfg, measurer, rows))


def _measure_now(cfg, measurer, rows):
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


def compare(netadapt, baselines, kind, target_value):
    """Latency (or resource) ratio at equal accuracy and accuracy at equal resource vs the baselines."""
    pts = [{"value": b["measured"], "accuracy": b["accuracy"]} for b in baselines]
    out = {"points": len(pts)}
    if len(pts) >= 2:
        # resource at NetAdapt's accuracy, on the baseline curve (accuracy as x: sorted by accuracy)
        at_acc = interpolate(pts, "accuracy", "value", netadapt["accuracy"])
        out["baseline_value_at_equal_accuracy"] = at_acc
        out["ratio_at_equal_accuracy"] = netadapt["measured"] / at_acc if at_acc else None
        acc = interpolate(pts, "value", "accuracy", netadapt["measured"])
        out["baseline_accuracy_at_equal_value"] = acc
        out["accuracy_gain_at_equal_value"] = netadapt["accuracy"] - acc if acc is not None else None
    fits = [b for b in baselines if b["measured"] <= target_value]
    if fits:
        widest = max(fits, key=lambda b: b["alpha"])
        out["widest_baseline_meeting_target"] = {"alpha": widest["alpha"], "measured": widest["measured"],
                                                 "accuracy": widest["accuracy"],
                                                 "accuracy_gain": netadapt["accuracy"] - widest["accuracy"]}
    return out


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


def final_and_baselines(cfg, run_dir, start, last_checkpoint, data, measurer, log):
    """The report's final, baselines, comparison and final_meets_target: trained, exported, measured together."""
    fin = final_model(cfg, run_dir, data, start.train_epochs, last_checkpoint, log,
                      teacher_checkpoint=start.point.checkpoint)
    rows = {"netadapt": fin}
    base_rows = []
    if cfg.final.baselines:
        name = cfg.start.model if not cfg.start.checkpoint else start.point.spec.family
        for a in cfg.final.baselines:
            b = baseline(cfg, run_dir, data, start, name, a, log)
            rows[f"a{a:g}"] = b
            base_rows.append(b)
    meas = measure_all(cfg, run_dir, measurer, rows)
    fin = dict(fin, measured=meas["netadapt"]["value"], measurement=meas["netadapt"])
    out = {"final": {k: v for k, v in fin.items() if k not in ("spec",)}, "baselines": []}
    out["final"]["spec"] = fin["spec"]
    for a, b in zip(cfg.final.baselines, base_rows):
        m = meas[f"a{a:g}"]
        out["baselines"].append({k: b.get(k) for k in ("alpha", "epochs", "accuracy", "size_bytes", "path",
                                                       "quantization", "tflm", "seconds")}
                                | {"measured": m["value"], "measurement": m})
    out["comparison"] = (compare(fin, out["baselines"], cfg.search.resource, start.target) if base_rows
                         else None)
    out["final_meets_target"] = fin["measured"] <= start.target
    return out


def timings(hist, rep, started):
    t0, cpu0 = started
    return {"iterations_wall_seconds": round(sum(h["seconds"] for h in hist), 1),
            "iterations_cpu_seconds": round(sum(h.get("cpu_seconds", 0.0) for h in hist), 1),
            "final_stage_seconds": (rep.get("final") or {}).get("seconds"),
            "baseline_seconds": [b.get("seconds") for b in rep.get("baselines") or []],
            "this_invocation_wall_seconds": round(time.time() - t0, 1),
            "this_invocation_driver_cpu_seconds": round(time.process_time() - cpu0, 1)}
