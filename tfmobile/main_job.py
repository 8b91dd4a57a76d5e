"""The main job as library stages: float training -> PTQ int8 -> QAT int8 -> (pruning -> PQAT int8)
-> each variant exported and measured (LiteRT accuracy on the test set, sizes, sparsity, latency,
TFLite-Micro arena) -> report (report.json, report.md, accuracy_latency_size.png).

    job = main_job.Job(output_dir, splits, progress=print)
    fmodel = job.train_float(spec)                 # epochs=None: the step-based default schedule
    rows = job.measure(job.compressed_variants(fmodel, prune=0.5))
    report = job.report(spec, rows, ...)

``run`` strings them together for ``python -m pipelines.run``; NetAdapt's final stage and the
benchmarks call ``compressed_variants`` / ``measure`` / ``report`` on a float model they trained
themselves. Every accuracy reported is the exported .tflite's in LiteRT, not Keras'.
"""
import os
import time

from tfmobile import compress, convert, data, evaluation, models, train
from tfmobile.data import DEFAULT_SHIFT
from tfmobile.errors import UserError
from tfmobile.io import atomic_path, check_writable, write_json, write_text

PLOT_NAME = "accuracy_latency_size.png"
# The main job's float recipe (pipelines.train keeps 32x32, 2e-3, no clipping and a 1/8 shift, the
# full-data table's; docs/training.md, "Training length and the main job's recipe"): at 32x32
# MobileNetV2's 32x stride leaves 1x1 features and the subset run under-fits (76.8 % at 32x32,
# 86.2 % at 48x48, same recipe and seed); a 1/16 shift and a high rate fit the step budget, and the
# clipped gradient norm keeps 5e-3 from the loss spikes 1e-2 showed (a 30-epoch run fell to 27 %
# mid-way).
MAIN_JOB_RESOLUTION = 48
MAIN_JOB_LR = 5e-3          # for batches of MAIN_JOB_LR_BATCH; see main_job_lr
MAIN_JOB_LR_BATCH = 32
MAIN_JOB_CLIPNORM = 1.0
MAIN_JOB_SHIFT = 0.0625


def main_job_lr(batch_size):
    """The float run's peak rate: ``MAIN_JOB_LR`` at batch 32 and above, scaled down linearly for the
    smaller batches of tiny sets (1,080 rendered digits at batch 16 sat at chance for 1,100 steps at
    5e-3 and ended at 80 %; at 2.5e-3 they learnt from the first epoch, 100 %)."""
    return MAIN_JOB_LR * min(1.0, batch_size / MAIN_JOB_LR_BATCH)


def check_options(epochs=None, qat_epochs=None, prune_epochs=None, batch_size=None, bench_runs=1,
                  bench_threads=1, prune=None, structured_2_4=False, augment=None, shift=DEFAULT_SHIFT,
                  clipnorm=None):
    """UserError for option values the job cannot run with (before anything slow starts);
    ``None`` lengths mean the default schedule."""
    data.parse_augment(augment)
    if not 0.0 <= shift < 0.5:
        raise UserError(f"--shift must be in [0, 0.5), got {shift}")
    if clipnorm is not None and not clipnorm >= 0:
        raise UserError(f"--clipnorm must be >= 0 (0: no clipping), got {clipnorm}")
    for name, value in (("epochs", epochs), ("qat_epochs", qat_epochs), ("prune_epochs", prune_epochs),
                        ("batch_size", batch_size), ("bench_runs", bench_runs),
                        ("bench_threads", bench_threads)):
        if value is not None and value < 1:
            raise UserError(f"--{name} must be >= 1, got {value}")
    if prune is not None and not 0.0 < prune < 1.0:
        raise UserError(f"--prune must be in (0, 1), got {prune}")
    if structured_2_4 and prune != 0.5:
        raise UserError("--structured_2_4 goes with --prune 0.5")


def load_splits(resolution, data_dir=None, full_data=False, limit=None, val_fraction=0.1):
    """(dataset, train/val/test splits) for the job: the shipped subset unless ``full_data`` or
    ``data_dir`` (Fashion-MNIST IDX or a class-subfolder image tree) says otherwise."""
    if full_data and not data_dir and not os.path.isdir(data.DEBIAN_DIR):
        raise UserError(f"--full_data needs --data_dir or the Debian package dataset-fashion-mnist "
                        f"({data.DEBIAN_DIR}); without them the job runs on the shipped subset")
    return data.load_splits(data_dir, subset=not (full_data or data_dir), image_size=(resolution, resolution),
                            val_fraction=val_fraction, limit=limit)


def check_new_output_dir(output_dir):
    """UserError when ``output_dir`` already holds a run (its checkpoints would be resumed or mixed)."""
    for sub in ("float", "qat", "prune", "pqat"):
        if os.path.isfile(os.path.join(output_dir, "train", sub, "checkpoint", "checkpoint.json")):
            raise UserError(f"{output_dir} already holds a run; choose a new --output_dir")


class Job:
    """One run's output directory, data and timings; each method is one stage."""

    def __init__(self, output_dir, splits, batch_size=None, steps_per_epoch=None, progress=None, augment=None,
                 shift=DEFAULT_SHIFT, resume=None):
        """resume: None for the main job (a new output directory), or ``{"seed": s, "verbose": v}`` for a
        stage that continues inside a directory it may have started (NetAdapt's final stage and baselines):
        every fit resumes its checkpoint."""
        if resume is None:
            check_new_output_dir(output_dir)
        self.output_dir, self.splits = output_dir, splits
        self.augment = data.parse_augment(augment, splits.source)  # label-safe default for the data
        self.fit_options = dict(batch_size=batch_size, steps_per_epoch=steps_per_epoch, augment=self.augment,
                                shift=shift)
        self.resume_options = {} if resume is None else dict(resume, resume=True)
        self.progress = progress or (lambda message: None)
        self.timings, self.metrics = {}, {}
        self.started = time.time()

    def stage(self, name, fn):
        """Run ``fn`` as the stage ``name``: announced, timed into ``timings``."""
        self.progress(f"{name} ...")
        t = time.time()
        result = fn()
        self.timings[name] = round(time.time() - t, 1)
        return result

    def _fit(self, stage_name, key, model, **fit_kwargs):
        out, met = self.stage(stage_name, lambda: train.fit(
            model, self.splits, os.path.join(self.output_dir, "train", key), **self.fit_options,
            **self.resume_options, **fit_kwargs))
        self.metrics[key] = met
        return out

    def train_float(self, spec, epochs=None, lr=None, clipnorm=None):
        return self.fine_tune_float(models.build(spec), epochs, lr, clipnorm)

    def fine_tune_float(self, model, epochs=None, lr=None, clipnorm=None):
        return self._fit("float training", "float", model, epochs=epochs, lr=lr, clipnorm=clipnorm)

    def qat_int8(self, float_model, qat_epochs, calibration):
        """(QAT model, its int8 .tflite): QAT fine-tuning of ``float_model``, then the int8 export."""
        qmodel = self._fit("QAT fine-tuning", "qat", float_model, epochs=qat_epochs, compression="qat")
        return qmodel, self.stage("QAT int8 export", lambda: convert.to_tflite(
            qmodel, "int8", representative_data=calibration))

    def measure_one(self, name, tflite, bench_runs=50, bench_threads=1, tflm=True, bench=True):
        """The row of one exported variant (tfmobile.evaluation.measure_variant): LiteRT test accuracy, sizes,
        sparsity, latency (``bench``), TFLM arena (``tflm``)."""
        return self.stage(f"measure {name}", lambda: evaluation.measure_variant(
            name, tflite, self.output_dir, self.splits.x_test, self.splits.y_test, bench_runs=bench_runs,
            threads=bench_threads, tflm=tflm, bench=bench))

    def float_qat_int8(self, name, model, epochs, lr, qat_epochs, calibration, tflm=True, bench=True):
        """Float training -> QAT -> int8 (+ TFLM) export -> evaluation of one model: (row, float model, QAT model).

        epochs=0: ``model`` as it is (already trained); qat_epochs=0: post-training int8 of the float model,
        and QAT model None. The main job runs the same stages (``train_float``, ``qat_int8``,
        ``measure_one``) with the float32 / PTQ / pruned variants between them.
        """
        fmodel = self.fine_tune_float(model, epochs, lr) if epochs > 0 else model
        if qat_epochs > 0:
            qmodel, tfl = self.qat_int8(fmodel, qat_epochs, calibration)
        else:
            qmodel, tfl = None, self.stage("PTQ int8 export", lambda: convert.to_tflite(
                fmodel, "int8", representative_data=calibration))
        return self.measure_one(name, tfl, tflm=tflm, bench=bench), fmodel, qmodel

    def calibration_images(self, input_shape, n=200):
        """``n`` real training images for int8 calibration, preprocessed like training images."""
        return data.sample_images(self.splits.x_train, input_shape, n=n)

    def compressed_variants(self, float_model, qat_epochs=None, prune=None, prune_epochs=None,
                            structured_2_4=False):
        """[(name, .tflite bytes, is_int8)]: float32, PTQ int8, QAT int8 and, with ``prune``, the
        pruned + PQAT int8 model; the QAT / pruning runs fine-tune ``float_model``."""
        calib = self.calibration_images(tuple(float_model.input_shape[1:]))
        variants = [
            ("float32", self.stage("float export", lambda: convert.to_tflite(float_model, "float")), False),
            ("ptq_int8", self.stage("PTQ int8 export", lambda: convert.to_tflite(
                float_model, "int8", representative_data=calib)), True)]
        _, qat_tflite = self.qat_int8(float_model, qat_epochs, calib)
        variants.append(("qat_int8", qat_tflite, True))
        if prune is not None:
            pmodel = self._fit("pruning", "prune", float_model, epochs=prune_epochs, compression="prune",
                               target_sparsity=prune, structured_2_4=structured_2_4)
            ppmodel = self._fit("PQAT fine-tuning", "pqat", compress.strip(pmodel), epochs=qat_epochs,
                                compression="pqat")
            tag = "2_4" if structured_2_4 else f"{int(round(100 * prune))}"
            variants.append((f"pruned{tag}_qat_int8", self.stage("pruned+QAT int8 export", lambda: convert.to_tflite(
                ppmodel, "int8", representative_data=calib)), True))
        return variants

    def measure(self, variants, bench_runs=50, bench_threads=1, tflm=True):
        """One row per variant (tfmobile.evaluation.measure_variant); TFLM for the QAT-trained int8 ones."""
        return [self.measure_one(name, tfl, bench_runs, bench_threads, tflm=tflm and is_int8 and name != "ptq_int8")
                for name, tfl, is_int8 in variants]

    def report(self, spec, rows, bench_runs=50, bench_threads=1, **settings):
        """report.json, report.md and the plot in the output directory; returns the report dict.

        settings: the job's options to record (alpha, prune, structured_2_4, lr, clipnorm, shift).
        """
        stages = {key: self.metrics[key] for key in ("float", "qat", "prune", "pqat") if key in self.metrics}
        notes = list(self.splits.notes) + [w for m in stages.values() for w in m.get("warnings", [])]  # near chance
        for r in rows:
            if r.get("float_ops"):
                notes.append(f"{r['variant']}: ops left in float: {', '.join(r['float_ops'])}")
            notes += [f"{r['variant']}: latency: {w}" for w in r.get("latency_warnings") or []]
            if (r.get("tflm") or {}).get("error"):
                notes.append(f"{r['variant']}: TFLite-Micro export failed: {r['tflm']['error']}")
        keras_val = {f"{key}_val_accuracy_keras": (self.metrics[key]["val_accuracy"] if key in self.metrics
                                                   else None) for key in ("float", "qat", "prune", "pqat")}
        splits = self.splits
        report = {
            "model": spec.name, "family": spec.family, "input_shape": list(spec.input_shape),
            "alpha": settings.get("alpha"), "data_source": splits.source,
            "train_images": len(splits.x_train), "val_images": len(splits.x_val),
            "test_images": len(splits.x_test), "classes": splits.num_classes,
            "epochs": stages["float"]["epochs"] if "float" in stages else None,
            "qat_epochs": stages["qat"]["epochs"] if "qat" in stages else None,
            "training": {key: dict(m["schedule"], steps_run=m["steps"]) for key, m in stages.items()},
            "augment": list(self.augment), "lr": settings.get("lr"), "clipnorm": settings.get("clipnorm"),
            "shift": settings.get("shift"),
            "prune": settings.get("prune"),
            "structured_2_4": settings.get("structured_2_4", False), **keras_val,
            "variants": rows, "timings_s": self.timings, "total_seconds": round(time.time() - self.started, 1),
            "latency_note": f"LiteRT, {bench_threads} thread(s), {bench_runs} runs, this host's CPU",
            "notes": notes, "cpu_count": os.cpu_count(),
        }
        write_report(report, self.output_dir)
        return report


def run(model="mbv2", alpha=0.35, resolution=None, epochs=None, qat_epochs=None,
        prune_epochs=None, prune=None, structured_2_4=False, batch_size=None, lr=None, augment=None, shift=None,
        clipnorm=None,
        full_data=False, data_dir=None, limit=None,
        bn_momentum=0.9, bench_runs=50, bench_threads=1, tflm=True, steps_per_epoch=None,
        output_dir=None, progress=None):
    """The whole main job (``python -m pipelines.run``); returns the report dict.

    Lengths left at ``None`` follow ``tfmobile.data.default_schedule`` (step-based, for the amount
    of data); ``augment=None`` is the label-safe default for the data (``data.default_augment``);
    ``resolution`` / ``lr`` / ``shift`` / ``clipnorm`` (the float run's global gradient-norm clip;
    0: none) left at ``None`` are the ``MAIN_JOB_*`` recipe (``lr``: ``main_job_lr`` of the batch size).
    """
    resolution = MAIN_JOB_RESOLUTION if resolution is None else resolution
    shift = MAIN_JOB_SHIFT if shift is None else shift
    clipnorm = MAIN_JOB_CLIPNORM if clipnorm is None else clipnorm
    check_options(epochs, qat_epochs, prune_epochs, batch_size, bench_runs, bench_threads, prune,
                  structured_2_4, augment, shift, clipnorm)
    output_dir = output_dir or os.path.join("runs", time.strftime("run-%Y%m%d-%H%M%S"))
    check_writable(output_dir, directory=True, what="--output_dir")
    check_new_output_dir(output_dir)
    dataset, splits = load_splits(resolution, data_dir, full_data, limit)
    if lr is None:
        lr = main_job_lr(data.default_schedule(len(splits.x_train), batch_size=batch_size).batch_size)
    job = Job(output_dir, splits, batch_size=batch_size, steps_per_epoch=steps_per_epoch, progress=progress,
              augment=augment, shift=shift)
    spec = models.get_spec(model, input_shape=(resolution, resolution, 3), alpha=alpha,
                           classes=dataset.num_classes, bn_momentum=bn_momentum)
    job.progress(f"{spec.name} on {splits.source}: {len(splits.x_train)} train / {len(splits.x_val)} val / "
                 f"{len(splits.x_test)} test images")
    fmodel = job.train_float(spec, epochs, lr=lr, clipnorm=clipnorm or None)
    variants = job.compressed_variants(fmodel, qat_epochs, prune, prune_epochs, structured_2_4)
    rows = job.measure(variants, bench_runs, bench_threads, tflm)
    return job.report(spec, rows, bench_runs, bench_threads, alpha=alpha, prune=prune,
                      structured_2_4=structured_2_4, lr=lr, shift=shift, clipnorm=clipnorm)


# --------------------------------------------------------------------------------------------
# report: markdown + plot
# --------------------------------------------------------------------------------------------
def write_report(report, output_dir):
    """report.json, accuracy_latency_size.png and report.md; adds their paths to ``report``."""
    write_json(os.path.join(output_dir, "report.json"), report)
    plot(report, os.path.join(output_dir, PLOT_NAME))
    write_text(os.path.join(output_dir, "report.md"), render_markdown(report))
    report["report_md"] = os.path.abspath(os.path.join(output_dir, "report.md"))
    report["plot_png"] = os.path.abspath(os.path.join(output_dir, PLOT_NAME))
    return report


def render_markdown(report):
    lines = [f"# tfmobile run: {report['model']}", "",
             f"Data: {report['data_source']} ({report['train_images']} train / {report['val_images']} "
             f"validation / {report['test_images']} test images). Accuracy is top-1 of the exported "
             f".tflite run in LiteRT on the test set; latency is tfmobile.bench ({report['latency_note']}).",
             "", "| variant | accuracy | size (bytes) | gzip (bytes) | weight sparsity | latency median (ms) "
             "| p90 (ms) | TFLM arena (bytes) |", "|---|---|---|---|---|---|---|---|"]
    for r in report["variants"]:
        lat = r.get("latency_ms") or {}
        arena = (r.get("tflm") or {}).get("arena_bytes", "-")
        lines.append(f"| {r['variant']} | {100 * r['accuracy']:.2f} % | {r['size_bytes']} | {r['gzip_bytes']} "
                     f"| {100 * r['weight_sparsity']:.1f} % | {_fmt(lat.get('median_ms'))} "
                     f"| {_fmt(lat.get('p90_ms'))} | {arena} |")
    if report.get("training"):
        lines += ["", f"Training length (augmentation: {', '.join(report['augment']) or 'none'}):", ""]
        lines += [f"- {key}: {t['text']}" for key, t in report["training"].items()]
    lines += ["", "Wall time on this host (seconds):", ""]
    for k, v in report["timings_s"].items():
        lines.append(f"- {k}: {v}")
    lines += ["", f"![accuracy vs latency vs size]({PLOT_NAME})", ""]
    if report.get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


def _fmt(v):
    return "-" if v is None else f"{v:.3f}"


def plot(report, path):
    """Accuracy vs latency (x) with marker area proportional to the .tflite size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["variants"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    biggest = max(r["size_bytes"] for r in rows)
    for r in rows:
        lat = (r.get("latency_ms") or {}).get("median_ms")
        x = lat if lat is not None else 0.0
        ax.scatter([x], [100 * r["accuracy"]], s=60 + 900 * r["size_bytes"] / biggest, alpha=0.55,
                   label=f"{r['variant']}: {r['size_bytes'] / 1024:.0f} KiB (gzip {r['gzip_bytes'] / 1024:.0f} KiB)")
    ax.set_xlabel(f"median latency (ms), {report['latency_note']}")
    ax.set_ylabel("test accuracy (%) of the .tflite in LiteRT")
    ax.set_title(f"{report['model']}: accuracy vs latency (marker area ~ model size)", fontsize=10)
    ax.grid(True, alpha=0.3)
    leg = ax.legend(fontsize=7, loc="best", markerscale=0.4)
    for h in leg.legend_handles if hasattr(leg, "legend_handles") else leg.legendHandles:
        h.set_sizes([40])
    xs = [(r.get("latency_ms") or {}).get("median_ms") or 0.0 for r in rows]
    ax.set_xlim(0, max(xs) * 1.5 + 1e-3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
