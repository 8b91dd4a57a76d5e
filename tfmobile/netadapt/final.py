"""After the loop: long-term fine-tune, QAT, int8 + TFLM export, LiteRT test accuracy, measurement;
the width-multiplier baselines; the comparison; report.json / report.md / netadapt.png.

Each step leaves a file when it is done (``final/final.json``, ``baselines/aALPHA/result.json``,
training checkpoints resumed by ``train.fit``), so a resumed run skips what is finished.

The stages are tfmobile.train's resumable fit and tfmobile.evaluation.measure_variant (the main
job's measurement); tfmobile.main_job.Job is not used because it refuses an existing output directory,
and this stage must resume inside one.
"""
import os
import time

from tfmobile.netadapt.config import UNITS


def _train_float_and_qat(run, model, directory, epochs, lr):
    """(float model, QAT model or None) after ``epochs`` float epochs and cfg.qat_epochs of QAT."""
    from tfmobile import train

    cfg = run.cfg
    if epochs > 0:
        model, _ = train.fit(model, run.splits, os.path.join(directory, "float"), epochs=epochs, lr=lr,
                             batch_size=cfg.batch_size, seed=cfg.seed, resume=True, verbose=2)
    qmodel = None
    if cfg.qat_epochs > 0:
        qmodel, _ = train.fit(model, run.splits, os.path.join(directory, "qat"), epochs=cfg.qat_epochs,
                              compression="qat", batch_size=cfg.batch_size, seed=cfg.seed, resume=True, verbose=2)
    return model, qmodel


def export_and_evaluate(run, name, spec, float_model, qat_model, directory):
    """int8 .tflite (QAT if there is one, else PTQ) + TFLM files, LiteRT test accuracy; the row."""
    from tfmobile import evaluation, train
    from tfmobile.io import write_json

    tfl = run.int8(qat_model if qat_model is not None else float_model)
    row = evaluation.measure_variant(name, tfl, directory, run.splits.x_test, run.splits.y_test, tflm=run.cfg.tflm,
                                     bench=False)
    row["quantization"] = "qat" if qat_model is not None else "ptq"
    row["val_accuracy_keras"] = train.evaluate(float_model, run.splits.x_val, run.splits.y_val)
    row["spec"] = spec.to_dict()
    write_json(os.path.join(directory, "spec.json"), spec.to_dict())
    return row


def budget_epochs(run):
    """The whole training budget of the NetAdapt model: start training + long-term fine-tune epochs
    (what a baseline, or the found architecture trained from scratch, gets)."""
    return int(run.start.get("train_epochs") or run.cfg.epochs) + run.cfg.long_epochs


def final_training(run, last_checkpoint, spec):
    """(starting model, epochs, peak lr, description) of the final stage.

    ``fine_tune`` (NetAdapt's long-term fine-tune): the loop's last weights, ``long_epochs`` at
    ``long_lr``. ``from_scratch``: the found architecture ``spec`` freshly initialised and trained with
    the baselines' budget (``budget_epochs``, at ``lr``) — in the benchmark that beat the
    width-multiplier curve where the fine-tuned weights only reached it (docs/netadapt.md).
    """
    from tfmobile import models, train

    cfg = run.cfg
    if cfg.final == "from_scratch":
        epochs = budget_epochs(run)
        return models.build(spec), epochs, cfg.lr, f"{epochs} epoch(s) of the found architecture from scratch"
    return (train.load_checkpoint(last_checkpoint), cfg.long_epochs, cfg.long_lr,
            f"{cfg.long_epochs} long-term fine-tune epoch(s)")


def final_model(run, last_checkpoint):
    """The NetAdapt model through the final stage (resumable); its row without the measurement."""
    from tfmobile.models import ModelSpec

    done = run.dir.read("final", "final.json")
    if done is not None:
        return done
    t = time.time()
    cfg = run.cfg
    spec = ModelSpec.load(os.path.join(last_checkpoint, "spec.json"))
    model, epochs, lr, what = final_training(run, last_checkpoint, spec)
    run.log(f"final stage: {what}, {cfg.qat_epochs} QAT epoch(s), int8 + TFLM")
    fmodel, qmodel = _train_float_and_qat(run, model, run.dir.sub("final", "train"), epochs, lr)
    row = export_and_evaluate(run, "netadapt_int8", spec, fmodel, qmodel, run.dir.sub("final"))
    row.update(final_stage=cfg.final, epochs=epochs, seconds=round(time.time() - t, 1))
    run.dir.write(row, "final", "final.json")
    return row


def baseline(run, name, alpha):
    """A width-multiplier model trained with the NetAdapt model's whole training budget.

    With ``baselines_dir`` (shared by several runs, e.g. the latency and the peak_sram run of the
    benchmark) a baseline is trained once per training setting: its folder name carries a digest
    of everything that decides the trained model.
    """
    import hashlib
    import json

    from tfmobile import models
    from tfmobile.io import write_json

    cfg = run.cfg
    epochs = budget_epochs(run)
    h, w, c = run.input_shape
    bn_momentum = run.start["spec"]["options"].get("bn_momentum", cfg.bn_momentum)   # as the start model's
    spec = models.get_spec(name, input_shape=(h, w, c), alpha=alpha, classes=run.splits.num_classes,
                           bn_momentum=bn_momentum)
    setting = {"spec": spec.to_dict(), "epochs": epochs, "qat_epochs": cfg.qat_epochs, "lr": cfg.lr,
               "batch_size": cfg.batch_size, "seed": cfg.seed, "data": run.data_config, "tflm": cfg.tflm}
    digest = hashlib.sha1(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:10]
    d = (os.path.join(os.path.abspath(cfg.baselines_dir), f"{spec.name}_{digest}") if cfg.baselines_dir
         else run.dir.sub("baselines", f"a{alpha:g}"))
    result = os.path.join(d, "result.json")
    if os.path.isfile(result):
        with open(result, encoding="utf-8") as f:
            return json.load(f)
    t = time.time()
    run.log(f"baseline {spec.name}: {epochs} epochs from scratch (= start training + long-term fine-tune), "
            f"{cfg.qat_epochs} QAT epoch(s)")
    fmodel, qmodel = _train_float_and_qat(run, models.build(spec), os.path.join(d, "train"), epochs, cfg.lr)
    row = export_and_evaluate(run, f"{name}_a{alpha:g}_int8", spec, fmodel, qmodel, d)
    row.update(alpha=alpha, epochs=epochs, seconds=round(time.time() - t, 1), setting_digest=digest)
    write_json(result, row)
    return row


def measure_all(run, rows):
    """Measure the final model and the baselines (latency: interleaved in one session); cached."""
    done = run.dir.read("final", "measurements.json")
    if done is not None and set(done) == set(rows):
        return done
    models = {}
    for key, row in rows.items():
        with open(row["path"], "rb") as f:
            models[key] = f.read()
    if run.cfg.resource == "latency":
        out = run.measurer.measure_many(models, run.cfg.baseline_rounds)
    else:
        from tfmobile.models import ModelSpec

        out = {k: run.measurer.measure(b, run.cfg.resource, ModelSpec.from_dict(rows[k]["spec"]).to_json(indent=None))
               for k, b in models.items()}
    run.dir.write(out, "final", "measurements.json")
    return out


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


def finish(run, status):
    from tfmobile.io import write_text
    from tfmobile.netadapt import report as report_mod

    cfg = run.cfg
    hist = run.dir.history()
    rep = {"status": status, "resource": cfg.resource, "unit": UNITS[cfg.resource],
           "target_value": run.target_value, "target_fraction": cfg.target, "select": cfg.select,
           "run_id": run.manifest["run_id"], "workers": run.pool.describe() if run.pool else None,
           "start": {k: run.start[k] for k in ("measured", "predicted", "val_accuracy", "train_epochs")},
           "start_measurement": run.start["measurement"], "iterations": hist,
           "reached": reached(hist, run.start), "config": cfg.fingerprint()}
    rep["start"]["model"] = run.start["spec"]["name"]
    if status == "met":
        last = run.current()["checkpoint"]
        fin = final_model(run, last)
        rows = {"netadapt": fin}
        base_rows = []
        if cfg.baselines:
            name = cfg.model if not cfg.checkpoint else run.start["spec"]["family"]
            for a in cfg.baselines:
                b = baseline(run, name, a)
                rows[f"a{a:g}"] = b
                base_rows.append(b)
        meas = measure_all(run, rows)
        fin = dict(fin, measured=meas["netadapt"]["value"], measurement=meas["netadapt"])
        rep["final"] = {k: v for k, v in fin.items() if k not in ("spec",)}
        rep["final"]["spec"] = fin["spec"]
        rep["baselines"] = []
        for a, b in zip(cfg.baselines, base_rows):
            m = meas[f"a{a:g}"]
            rep["baselines"].append({k: b.get(k) for k in ("alpha", "epochs", "accuracy", "size_bytes", "path",
                                                           "quantization", "tflm", "seconds")}
                                    | {"measured": m["value"], "measurement": m})
        rep["comparison"] = compare(fin, rep["baselines"], cfg.resource, run.target_value) if base_rows else None
        rep["final_meets_target"] = fin["measured"] <= run.target_value
    it_wall = sum(h["seconds"] for h in hist)
    it_cpu = sum(h.get("cpu_seconds", 0.0) for h in hist)
    rep["timings"] = {"iterations_wall_seconds": round(it_wall, 1), "iterations_cpu_seconds": round(it_cpu, 1),
                      "final_stage_seconds": (rep.get("final") or {}).get("seconds"),
                      "baseline_seconds": [b.get("seconds") for b in rep.get("baselines") or []],
                      "this_invocation_wall_seconds": round(time.time() - run.t0, 1),
                      "this_invocation_driver_cpu_seconds": round(time.process_time() - run.cpu0, 1)}
    rep["prediction_error"] = [{"iteration": h["iteration"], "predicted": h["predicted"], "measured": h["measured"],
                                "relative_error": h["prediction_error"],
                                "relative_error_of_step": h["prediction_error_scaled"]} for h in hist]
    run.dir.write(rep, "report.json")
    report_mod.plot(rep, run.dir.sub("netadapt.png"))
    write_text(run.dir.sub("report.md"), report_mod.markdown(rep))
    rep["report_md"] = run.dir.sub("report.md")
    rep["output_dir"] = run.dir.path
    return rep
