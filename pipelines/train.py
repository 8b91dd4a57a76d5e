"""Train a zoo model (float), or fine-tune a float checkpoint with QAT / pruning / PQAT.

    python -m pipelines.train --model mbv2 --alpha 0.35 --resolution 32 --epochs 10 --output_dir runs/mbv2
    python -m pipelines.train --qat --from_checkpoint runs/mbv2/checkpoint --epochs 2 --output_dir runs/mbv2_qat
    python -m pipelines.train --prune 0.5 --from_checkpoint runs/mbv2/checkpoint --epochs 3 --output_dir runs/mbv2_p50
    python -m pipelines.train --pqat --from_checkpoint runs/mbv2_p50/checkpoint --epochs 2 --output_dir runs/mbv2_pqat

Writes ``OUTPUT_DIR/checkpoint`` (usable by ``pipelines.export --weights``) after every epoch,
``metrics.json``, ``history.json`` and TensorBoard logs in ``OUTPUT_DIR/logs``. A killed run
continues from its last checkpoint with ``--resume`` (same flags). Validation accuracy (a split
carved from train, eval-mode BatchNorm) is measured every epoch; the test set only once, at the end.
"""
import functools

from absl import flags

from pipelines import _cli
from tfmobile.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "mbv2", "zoo model name (tfmobile.models.available()).")
flags.DEFINE_float("alpha", 0.35, "width multiplier.")
flags.DEFINE_integer("resolution", 32, "input resolution (square).", upper_bound=_cli.MAX_RESOLUTION)
flags.DEFINE_integer("epochs", None, "epochs (total, including resumed ones; default: enough optimizer "
                     "steps for the amount of data and the stage, tfmobile.data.default_schedule).")
flags.DEFINE_integer("batch_size", None, "batch size (default: chosen for the amount of data, 16-128).")
flags.DEFINE_float("lr", None, "peak learning rate of the cosine schedule (Adam); default 2e-3 float, "
                   "1e-4 QAT/PQAT, 5e-4 pruning.")
flags.DEFINE_string("output_dir", None, "where the checkpoint, metrics and logs go.")
flags.DEFINE_boolean("json", False, "print exactly one JSON object on stdout.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX directory, or a directory of class subfolders "
                    "of images (default: the Debian package, else the shipped subset).")
flags.DEFINE_string("image_dir", None, "a directory of class subfolders of images (PNG/JPEG).")
flags.DEFINE_boolean("keras_datasets", False, "download Fashion-MNIST through keras.datasets.")
flags.DEFINE_boolean("subset", False, "use the small Fashion-MNIST subset shipped in the repo.")
flags.DEFINE_integer("limit", None, "use only this many training images (stratified).")
flags.DEFINE_float("val_fraction", 0.1, "fraction of train held out for validation.")
flags.DEFINE_float("bn_momentum", 0.9, "BatchNorm moving-average momentum (0.9 suits short runs).")
flags.DEFINE_boolean("resume", False, "continue OUTPUT_DIR/checkpoint.")
flags.DEFINE_string("augment", None, "flip, shift (comma-separated) or none; default: label-safe for the data "
                    "(tfmobile.data.default_augment: flips only on the built-in Fashion-MNIST).")
flags.DEFINE_float("shift", None, "random shift augmentation, fraction of the side (0: none; "
                   "default tfmobile.data.DEFAULT_SHIFT = 1/8).")
flags.DEFINE_integer("steps_per_epoch", None, "cap steps per epoch (quick runs).")
flags.DEFINE_integer("seed", 0, "random seed.")
flags.DEFINE_string("from_checkpoint", None, "start from this checkpoint (float for --qat/--prune, "
                    "pruned for --pqat).")
flags.DEFINE_boolean("qat", False, "quantization-aware training from a float checkpoint.")
flags.DEFINE_float("prune", None, "magnitude pruning to this sparsity (e.g. 0.5) from a float checkpoint.")
flags.DEFINE_boolean("structured_2_4", False, "2:4 structured sparsity (with --prune 0.5).")
flags.DEFINE_boolean("pqat", False, "pruning-preserving QAT from a pruned checkpoint.")
flags.DEFINE_boolean("evaluate_test", True, "measure Keras test accuracy once at the end.")


def _compression():
    chosen = [n for n, on in (("qat", FLAGS.qat), ("prune", FLAGS.prune is not None),
                              ("pqat", FLAGS.pqat)) if on]
    if len(chosen) > 1:
        raise UserError(f"choose one of --qat, --prune, --pqat (got {', '.join(chosen)})")
    if FLAGS.structured_2_4 and not chosen == ["prune"]:
        raise UserError("--structured_2_4 goes with --prune 0.5")
    if chosen and not FLAGS.from_checkpoint and not FLAGS.resume:
        raise UserError(f"--{chosen[0]} starts from a checkpoint: pass --from_checkpoint DIR")
    return chosen[0] if chosen else None


def main(argv):
    import tfmobile  # noqa: F401
    from tfmobile import data

    if not FLAGS.output_dir:
        raise UserError("--output_dir is required")
    _cli.check_output(FLAGS.output_dir, directory=True, flag="output_dir")
    compression = _compression()
    for name in ("epochs", "batch_size"):
        if getattr(FLAGS, name) is not None and getattr(FLAGS, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}")
    if FLAGS.resolution < 8:
        raise UserError(f"--resolution must be >= 8, got {FLAGS.resolution}")
    if not 0.0 < FLAGS.bn_momentum < 1.0:
        raise UserError(f"--bn_momentum must be in (0, 1), got {FLAGS.bn_momentum}")
    if FLAGS.structured_2_4 and FLAGS.prune != 0.5:
        raise UserError("--structured_2_4 means 50 % sparsity: use --prune 0.5")

    data.check_output_outside_data(FLAGS.output_dir, FLAGS.data_dir or FLAGS.image_dir)
    # A zoo run's data is loaded (and bad data reported) before TensorFlow is imported.
    load = functools.partial(data.load_dataset, FLAGS.data_dir, subset=FLAGS.subset, image_dir=FLAGS.image_dir,
                             keras_datasets=FLAGS.keras_datasets)
    r = FLAGS.resolution
    dataset = None if FLAGS.from_checkpoint else load(image_size=(r, r), channels=3)
    from tfmobile import train

    spec, dataset = train.run_spec(load, FLAGS.model, alpha=FLAGS.alpha, resolution=r,
                                   bn_momentum=FLAGS.bn_momentum, from_checkpoint=FLAGS.from_checkpoint,
                                   compression=compression, dataset=dataset)
    _, splits = data.load_splits(dataset=dataset, val_fraction=FLAGS.val_fraction, seed=FLAGS.seed,
                                 limit=FLAGS.limit)
    for note in splits.notes:
        _cli.progress(f"note: {note}")
    _cli.progress(f"{spec.name}: {len(splits.x_train)} train / {len(splits.x_val)} val images from "
                  f"{splits.source}; compression={compression or 'none'}")

    base = train.starting_model(spec, FLAGS.from_checkpoint, FLAGS.resume)
    model, metrics = train.fit(base, splits, FLAGS.output_dir, epochs=FLAGS.epochs,
                               batch_size=FLAGS.batch_size, lr=FLAGS.lr, compression=compression,
                               resume=FLAGS.resume, target_sparsity=FLAGS.prune or 0.5,
                               structured_2_4=FLAGS.structured_2_4,
                               steps_per_epoch=FLAGS.steps_per_epoch, augment=FLAGS.augment,
                               shift=FLAGS.shift,
                               seed=FLAGS.seed, verbose=1)
    train.finish_run(model, metrics, splits, FLAGS.output_dir, compression, FLAGS.evaluate_test,
                     FLAGS.from_checkpoint, progress=_cli.progress)
    out = {k: v for k, v in metrics.items() if k != "history"}
    out["epochs_run"] = len(metrics["history"])
    _cli.emit(out, FLAGS.json, _render)
    return 0


def _render(r):
    lines = [f"model: {r['model']} ({r['compression'] or 'float'}), {r['params']} params",
             f"val accuracy: {r['val_accuracy']:.4f} (epoch {r['epochs']})" if r.get("val_accuracy") is not None
             else "val accuracy: n/a"]
    if "test_accuracy_keras" in r:
        lines.append(f"test accuracy (Keras): {r['test_accuracy_keras']:.4f}")
    lines.append(f"train time: {r['total_train_seconds']} s")
    lines.append(f"checkpoint: {r['checkpoint']}")
    return "\n".join(lines)


if __name__ == "__main__":
    _cli.run(main)
