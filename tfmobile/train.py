"""Keras training: compile / fit / evaluate, checkpoints, TensorBoard. (The accuracy of exported
.tflite models is tfmobile.evaluation's.)

Checkpoint (docs/CONTRACTS.md): a directory with ``spec.json`` (ModelSpec), ``weights.h5``
(``save_weights``) and ``checkpoint.json`` (``{"compression", "epoch", "metrics"}``); tfmobile also
stores ``optimizer.npz`` (optimizer slots + step) there so that ``--resume`` continues the same
cosine schedule with the same Adam moments. A checkpoint is written into a temporary directory
and swapped in with renames, so a run killed at any moment leaves the last complete one; its
checkpoint.json carries the whole per-epoch history, so history.json (written after it) can always
be rebuilt from it, and ``fit`` removes the temporary directory a kill -9 leaves behind.

Optimizer: Adam with a cosine-decayed learning rate (1-epoch linear warm-up for float training).
For the 5-15 epoch budgets this project can afford on 2 CPU cores, Adam reaches a good accuracy
on these BN-heavy mobile nets with no per-model tuning, where SGD+momentum needs more epochs and a
tuned rate; the cosine tail anneals to 1 % of the peak rate so the last epoch is the one to keep.
"""
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import tfmobile  # noqa: F401  (legacy Keras)
import tensorflow as tf
import tf_keras as keras

from tfmobile.compress import COMPRESSIONS
from tfmobile.errors import UserError
from tfmobile.io import json_default, shareable_mode, write_json

CHECKPOINT_DIR = "checkpoint"
DEFAULT_LR = {None: 2e-3, "qat": 1e-4, "prune": 5e-4, "pqat": 1e-4}


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def _spec_json(model):
    from tfmobile import models

    spec = models.spec_of(model)
    if spec is None:
        raise UserError("model was not built by tfmobile.models (no spec to store in a checkpoint)")
    return spec


def save_checkpoint(model, directory, compression=None, extra=None, optimizer=None, spec=None):
    """Write ``directory`` (spec.json, weights.h5, checkpoint.json[, optimizer.npz]) atomically.

    extra: merged into checkpoint.json (``epoch`` and ``metrics`` live there).
    """
    if compression not in COMPRESSIONS:
        raise UserError(f"unknown compression {compression!r}; one of {COMPRESSIONS}")
    spec = spec or _spec_json(model)
    directory = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=_temp_prefix(directory), dir=parent)
    try:
        os.chmod(tmp, shareable_mode(directory=True))
        with open(os.path.join(tmp, "spec.json"), "w", encoding="utf-8") as f:
            f.write(spec.to_json())
        model.save_weights(os.path.join(tmp, "weights.h5"), save_format="h5")
        if optimizer is not None:
            _save_optimizer(optimizer, os.path.join(tmp, "optimizer.npz"))
        info = {"compression": compression, "epoch": 0, "metrics": {}}
        info.update(extra or {})
        with open(os.path.join(tmp, "checkpoint.json"), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2, default=json_default)
        old = directory + ".old"
        if os.path.exists(old):
            shutil.rmtree(old)
        if os.path.exists(directory):
            os.replace(directory, old)
        os.replace(tmp, directory)
        if os.path.exists(old):
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _temp_prefix(directory):
    return "." + os.path.basename(directory) + "."


def remove_stale_temps(directory):
    """Remove the temporary directories of checkpoint saves that were killed (``kill -9``, power loss).

    Only one process trains into an output dir, so any such directory is a dead save's. Returns
    how many were removed.
    """
    directory = os.path.abspath(os.fspath(directory))
    parent, prefix = os.path.dirname(directory), _temp_prefix(directory)
    if not os.path.isdir(parent):
        return 0
    stale = [n for n in os.listdir(parent) if n.startswith(prefix) and os.path.isdir(os.path.join(parent, n))]
    for name in stale:
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    return len(stale)


def _resumed_history(info, output_dir):
    """Per-epoch history up to the checkpoint's epoch: from checkpoint.json (older checkpoints:
    history.json, which a kill may have left one epoch behind)."""
    history = info.get("history")
    if not isinstance(history, list):
        hist_path = os.path.join(output_dir, "history.json")
        history = []
        if os.path.isfile(hist_path):
            with open(hist_path, encoding="utf-8") as f:
                history = json.load(f)
    return [h for h in history if isinstance(h, dict) and h.get("epoch", 0) <= int(info["epoch"])]


def _resolve(directory):
    """A checkpoint dir, or its ``.old`` twin when a kill landed between the two renames."""
    directory = os.path.abspath(os.fspath(directory))
    for d in (directory, directory + ".old"):
        if os.path.isfile(os.path.join(d, "checkpoint.json")):
            return d
    if os.path.isdir(directory) and os.path.isfile(os.path.join(directory, CHECKPOINT_DIR, "checkpoint.json")):
        return os.path.join(directory, CHECKPOINT_DIR)  # a training output_dir
    raise UserError(f"not a tfmobile checkpoint (no checkpoint.json): {directory}")


def checkpoint_info(directory):
    """checkpoint.json of a checkpoint directory (or of a training output_dir's last checkpoint)."""
    d = _resolve(directory)
    try:
        with open(os.path.join(d, "checkpoint.json"), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"corrupt checkpoint {d}: {e}") from None
    if not isinstance(info, dict) or info.get("compression") not in COMPRESSIONS:
        raise UserError(f"corrupt checkpoint {d}: bad checkpoint.json")
    info["path"] = d
    return info


def checkpoint_spec(directory):
    from tfmobile.models import ModelSpec

    return ModelSpec.load(os.path.join(_resolve(directory), "spec.json"))


def _same_architecture(a, b):
    da, db = a.to_dict(), b.to_dict()
    keys = ("family", "input_shape", "blocks", "classes", "include_top", "pooling")
    return all(da.get(k) == db.get(k) for k in keys)


def load_checkpoint(directory, expect=None, optimizer=None):
    """Rebuild the model of a checkpoint (spec -> build -> compression wrappers -> weights).

    expect: a ModelSpec the checkpoint must match (UserError for another architecture).
    optimizer: if given and the checkpoint stores optimizer state, it is restored into it.
    """
    from tfmobile import models

    d = _resolve(directory)
    info = checkpoint_info(d)
    spec = checkpoint_spec(d)
    if expect is not None and not _same_architecture(spec, expect):
        raise UserError(
            f"checkpoint {d} is a {spec.name} ({spec.family}, input {list(spec.input_shape)}, "
            f"{spec.classes} classes), not the requested {expect.name} ({expect.family}, input "
            f"{list(expect.input_shape)}, {expect.classes} classes)")
    model = models.build(spec)
    compression = info["compression"]
    if compression:
        from tfmobile import compress

        model = compress.apply(model, compression)
        _tag_spec(model, spec)
    try:
        if compression:
            with compress.quantize_scope():
                model.load_weights(os.path.join(d, "weights.h5"))
        else:
            model.load_weights(os.path.join(d, "weights.h5"))
    except (ValueError, OSError, KeyError) as e:
        raise UserError(f"checkpoint {d} does not match its spec ({spec.name}): "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    if optimizer is not None and os.path.isfile(os.path.join(d, "optimizer.npz")):
        _load_optimizer(optimizer, model, os.path.join(d, "optimizer.npz"))
    return model


def _tag_spec(model, spec):
    """Remember the float spec on a wrapped (QAT/pruned) model whose clone lost it."""
    from tfmobile import models

    if models.spec_of(model) is None:
        models.attach_spec(model, spec)
    return model


def _save_optimizer(optimizer, path):
    """Into the checkpoint's temporary directory (the directory is what is swapped in atomically)."""
    np.savez(path, **{f"v{i}": v.numpy() for i, v in enumerate(_opt_vars(optimizer))})


def _opt_vars(optimizer):
    vs = optimizer.variables
    return list(vs() if callable(vs) else vs)


def _load_optimizer(optimizer, model, path):
    with np.load(path) as z:
        values = [z[f"v{i}"] for i in range(len(z.files))]
    optimizer.build(model.trainable_variables)
    variables = _opt_vars(optimizer)
    if len(variables) != len(values) or any(v.shape != a.shape for v, a in zip(variables, values)):
        sys.stderr.write("[tfmobile] optimizer state does not match; resuming with fresh Adam moments\n")
        optimizer.iterations.assign(int(values[0]) if values and np.ndim(values[0]) == 0 else 0)
        return
    for v, a in zip(variables, values):
        v.assign(a)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def make_optimizer(lr, total_steps, warmup_steps=0, clipnorm=None):
    """Adam on a cosine-decayed rate (to 1 % of ``lr``), with an optional linear warm-up.

    clipnorm: clip the global gradient norm (a step at a high rate on a small batch can throw a
    BN-heavy net back to chance; docs/training.md, "Training length and the main job's recipe").
    """
    if not (lr > 0 and np.isfinite(lr)):
        raise UserError(f"learning rate must be a positive number, got {lr}")
    if clipnorm is not None and not (clipnorm > 0 and np.isfinite(clipnorm)):
        raise UserError(f"gradient clip norm must be a positive number, got {clipnorm}")
    total_steps = max(1, int(total_steps))
    warmup_steps = min(int(warmup_steps), total_steps // 2)
    if warmup_steps:
        schedule = keras.optimizers.schedules.CosineDecay(
            lr / 10, decay_steps=total_steps - warmup_steps, alpha=0.01,
            warmup_target=lr, warmup_steps=warmup_steps)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=total_steps, alpha=0.01)
    return keras.optimizers.Adam(learning_rate=schedule, global_clipnorm=clipnorm)


def compile_model(model, optimizer):
    from_logits = not _ends_in_softmax(model)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                  metrics=["accuracy"])
    return model


def _ends_in_softmax(model):
    try:
        act = _spec_json(model).classifier_activation
        if _spec_json(model).include_top:
            return act == "softmax"
    except UserError:
        pass
    last = model.layers[-1]
    layer = getattr(last, "layer", last)  # tfmot wrappers
    act = getattr(layer, "activation", None)
    name = getattr(act, "__name__", str(act))
    return name == "softmax" or type(layer).__name__ == "Softmax"


# --------------------------------------------------------------------------------------------
# knowledge distillation (Hinton et al. 2015): soft targets of a frozen teacher mixed with the labels
# --------------------------------------------------------------------------------------------
DEFAULT_TEMPERATURE = 4.0


def check_distillation(distill, temperature):
    """UserError for a soft-target weight outside [0, 1] or a temperature that is not > 0."""
    if not (0.0 <= float(distill) <= 1.0):
        raise UserError(f"distillation weight must be in [0, 1] (0: off), got {distill}")
    if not (float(temperature) > 0 and math.isfinite(float(temperature))):
        raise UserError(f"distillation temperature must be a finite number > 0, got {temperature}")


def _as_logits(outputs, from_logits):
    """Logits of a classifier's outputs (a softmax's probabilities are turned back with a log)."""
    return outputs if from_logits else tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0))


def distillation_loss(labels, student_logits, teacher_logits, distill, temperature):
    """Per-example (1 - W) * cross-entropy(labels) + W * T^2 * KL(teacher_T || student_T).

    T^2 keeps the soft term's gradients on the scale of the hard one's whatever the temperature
    (Hinton et al., section 2); KL rather than the soft cross-entropy so that a student matching its
    teacher has a soft loss of 0.
    """
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    hard = keras.losses.sparse_categorical_crossentropy(labels, student_logits, from_logits=True)
    t = float(temperature)
    teacher_log_p = tf.nn.log_softmax(teacher_logits / t, axis=-1)
    student_log_p = tf.nn.log_softmax(student_logits / t, axis=-1)
    soft = tf.reduce_sum(tf.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1) * t * t
    return (1.0 - distill) * hard + distill * soft


def _distillation_model(student, teacher, distill, temperature):
    """A Keras model whose output is [student logits | teacher logits] (teacher frozen, in eval mode), compiled
    loss-ready: training it with ``fit`` trains the student on the distillation loss, and its validation
    reports the student's accuracy (the loss it reports, train and val, is the distillation loss)."""
    classes = int(student.output_shape[-1])
    if tuple(teacher.input_shape[1:]) != tuple(student.input_shape[1:]) or int(teacher.output_shape[-1]) != classes:
        raise UserError(f"the teacher (input {list(teacher.input_shape[1:])}, {teacher.output_shape[-1]} classes) "
                        f"does not fit the student (input {list(student.input_shape[1:])}, {classes} classes)")
    inputs = keras.Input(student.input_shape[1:], name="distillation_input")
    student_out = _as_logits(student(inputs), not _ends_in_softmax(student))
    # the same layers under another name: a teacher of the student's architecture has the student's name
    renamed = keras.Model(teacher.inputs, teacher.outputs, name="distillation_teacher")
    renamed.trainable = False
    teacher_out = _as_logits(renamed(inputs, training=False), not _ends_in_softmax(teacher))
    both = keras.layers.Concatenate(name="student_teacher_logits")([student_out, teacher_out])
    model = keras.Model(inputs, both, name="distillation")

    def loss(labels, logits):
        return distillation_loss(labels, logits[:, :classes], logits[:, classes:], distill, temperature)

    def accuracy(labels, logits):   # the student's
        return keras.metrics.sparse_categorical_accuracy(labels, logits[:, :classes])

    return model, loss, keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")


def _create_step_variables(model, optimizer):
    """The optimizer's slots and the compiled loss's and metrics' variables, made before the first step.

    Keras makes them lazily inside the first trace of the train function, and a tf.function that creates
    variables is traced twice: measured 10.1 s -> 5.3 s for a 10-step fit of mbv2 at 32x32 (1 thread, under
    load), the fixed cost of every NetAdapt proposal (a new architecture each time). Shapes only: the model
    is not called, so nothing it holds (BatchNorm statistics, tfmot's ranges and masks) changes.
    """
    import tensorflow as tf

    optimizer.build(model.trainable_variables)
    y_pred = tf.zeros((1,) + tuple(model.output_shape[1:]))
    model.compiled_loss.build(y_pred)
    model.compiled_metrics.build(y_pred, tf.zeros((1,), tf.int64))


class _EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch (validation already run in eval mode): checkpoint + metrics.json.

    student: the model saved (the trained model itself, or the student inside a distillation model).
    """

    def __init__(self, output_dir, compression, spec, history, started_epoch_time, on_epoch=None, student=None):
        super().__init__()
        self.output_dir, self.compression, self.spec = output_dir, compression, spec
        self.history, self.t0, self.on_epoch, self.student = history, started_epoch_time, on_epoch, student

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        opt = self.model.optimizer
        lr = opt.learning_rate
        lr = float(lr(opt.iterations)) if callable(lr) else float(lr)
        entry = {"epoch": epoch + 1, **logs, "lr": lr, "seconds": round(time.time() - self.t0, 2)}
        self.history.append(entry)
        model = self.student if self.student is not None else self.model
        if self.compression == "prune":  # a pruning checkpoint holds the stripped model (CONTRACTS)
            from tfmobile import compress
            model = compress.strip(model)
        # the history travels inside the checkpoint: a kill between the two writes loses nothing
        save_checkpoint(model, os.path.join(self.output_dir, CHECKPOINT_DIR),
                        compression=self.compression, optimizer=opt, spec=self.spec,
                        extra={"epoch": epoch + 1, "metrics": entry, "history": self.history})
        write_json(os.path.join(self.output_dir, "history.json"), self.history)
        sys.stderr.write(
            f"[tfmobile] epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f} "
            f"acc {logs.get('accuracy', float('nan')):.4f} val_acc {logs.get('val_accuracy', float('nan')):.4f} "
            f"({entry['seconds']:.0f} s)\n")
        sys.stderr.flush()
        if self.on_epoch:
            self.on_epoch(entry)


class ScalarLogger(keras.callbacks.Callback):
    """TensorBoard event files (scalars per epoch: loss, accuracy, val_*, lr) under ``log_dir``.

    tensorflow-cpu 2.21 no longer depends on the ``tensorboard`` package, and keras' TensorBoard
    callback needs it for ``tf.summary.scalar``; ``tf.summary.write`` with the scalar plugin's
    metadata is core TF and yields the same events, readable by ``tensorboard --logdir``.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self.writers = {}

    def _writer(self, name):
        if name not in self.writers:
            self.writers[name] = tf.summary.create_file_writer(os.path.join(self.log_dir, name))
        return self.writers[name]

    def on_epoch_end(self, epoch, logs=None):
        from tensorflow.core.framework import summary_pb2

        meta = summary_pb2.SummaryMetadata()
        meta.plugin_data.plugin_name = "scalars"
        logs = dict(logs or {})
        opt = self.model.optimizer
        lr = opt.learning_rate
        logs["learning_rate"] = float(lr(opt.iterations)) if callable(lr) else float(lr)
        for key, value in logs.items():
            split = "validation" if key.startswith("val_") else "train"
            tag = "epoch_" + (key[4:] if split == "validation" else key)
            with self._writer(split).as_default():
                tf.summary.write(tag, tf.constant(float(value), tf.float32), step=epoch,
                                 metadata=meta.SerializeToString())
        for w in self.writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        for w in self.writers.values():
            w.close()


def prepare_model(model, compression=None, target_sparsity=0.5, structured_2_4=False,
                  total_steps=1):
    """Wrap a float (or, for pqat, pruned) model for ``compression``; returns (model, callbacks)."""
    if compression is None:
        return model, []
    from tfmobile import compress

    spec = _spec_json(model)
    if compression == "qat":
        out, cbs = compress.qat(model), []
    elif compression == "prune":
        if not 0.0 < target_sparsity < 1.0:
            raise UserError(f"prune target sparsity must be in (0, 1), got {target_sparsity}")
        end = max(1, int(0.7 * total_steps))
        out = compress.prune(model, target_sparsity, begin_step=0, end_step=end,
                             structured_2_4=structured_2_4)
        cbs = compress.pruning_callbacks()
    elif compression == "pqat":
        out, cbs = compress.pqat(model), []
    else:
        raise UserError(f"unknown compression {compression!r}")
    return _tag_spec(out, spec), cbs


def fit(model, splits, output_dir, epochs=None, batch_size=None, lr=None, compression=None,
        resume=False, target_sparsity=0.5, structured_2_4=False, steps_per_epoch=None,
        augment=None, verbose=1, warmup_epochs=None, seed=0, tensorboard=True, on_epoch=None,
        shift=None, clipnorm=None, teacher=None, distill=0.0, temperature=DEFAULT_TEMPERATURE):
    """Train ``model`` (float, or wrapped here for ``compression``) on ``splits``.

    Length: ``epochs`` / ``batch_size`` when given, else ``tfmobile.data.default_schedule`` for the
    number of training images and the stage (a step-based default; fine-tuning for a compression
    needs fewer steps than training). augment: ``None`` = label-safe default for the data
    (``tfmobile.data.default_augment``), else names / a flag value (``parse_augment``).
    Saves ``output_dir/checkpoint`` after every epoch (validation accuracy measured in eval mode
    first), ``history.json``, ``metrics.json`` and TensorBoard logs under ``output_dir/logs``. Stderr
    gets one line per epoch (ours; Keras' own progress output is off) and, unless ``verbose=0``, a
    first line with the schedule and augmentation.
    resume: continue from ``output_dir/checkpoint`` (same architecture and compression required).
    teacher / distill / temperature: knowledge distillation from ``teacher`` (a Keras classifier of the
    same input and classes, frozen and run in eval mode): the loss is ``distillation_loss`` with the
    soft-target weight ``distill`` (0: off, plain cross-entropy) at ``temperature``. The checkpoints hold
    the student only; a resume takes the teacher again.
    Returns (trained model, metrics dict); ``metrics["warnings"]`` lists problems such as a
    validation accuracy near chance (also written to stderr).
    """
    check_distillation(distill, temperature)
    if distill and teacher is None:
        raise UserError("distillation needs a teacher model")
    keras.utils.set_random_seed(seed)
    spec = _spec_json(model)
    input_shape = tuple(spec.input_shape)
    lr = DEFAULT_LR[compression] if lr is None else float(lr)
    from tfmobile import data as tdata

    schedule = tdata.default_schedule(len(splits.x_train), batch_size=batch_size, epochs=epochs,
                                      steps_per_epoch=steps_per_epoch, stage=compression or "train")
    batch_size, epochs, steps = schedule.batch_size, schedule.epochs, schedule.steps_per_epoch
    augment = tdata.parse_augment(augment, splits.source)
    shift = tdata.DEFAULT_SHIFT if shift is None else shift

    train_ds = tdata.make_dataset(splits.x_train, splits.y_train, input_shape, batch_size,
                                  training=True, augment=augment, seed=seed, shift=shift)
    val_ds = tdata.make_dataset(splits.x_val, splits.y_val, input_shape, max(batch_size, 256))
    if steps != int(np.ceil(len(splits.x_train) / batch_size)):  # capped, or several passes per epoch
        train_ds = train_ds.repeat()
    total_steps = schedule.total_steps
    if warmup_epochs is None:
        warmup_epochs = 1 if (compression is None and epochs >= 4) else 0
    # at least 2 % of the run: one epoch of a tiny set is a handful of steps
    warmup_steps = max(warmup_epochs * steps, total_steps // 50) if warmup_epochs else 0
    optimizer = make_optimizer(lr, total_steps, warmup_steps=warmup_steps, clipnorm=clipnorm)

    ckpt_dir = os.path.join(output_dir, CHECKPOINT_DIR)
    initial_epoch, history = 0, []
    stale = remove_stale_temps(ckpt_dir)
    has_ckpt = any(os.path.isfile(os.path.join(d, "checkpoint.json")) for d in (ckpt_dir, ckpt_dir + ".old"))
    if has_ckpt and not resume:
        raise UserError(f"{output_dir} already holds a checkpoint: pass --resume to continue it, "
                        f"or choose another --output_dir")
    if resume and not has_ckpt:
        sys.stderr.write(f"[tfmobile] no complete checkpoint; starting from epoch 0 ({output_dir}"
                         f"{f'; removed {stale} unfinished checkpoint(s)' if stale else ''})\n")
    if resume and has_ckpt:
        info = checkpoint_info(ckpt_dir)
        if info["compression"] != compression:
            raise UserError(f"checkpoint in {output_dir} is a {info['compression'] or 'float'} run, "
                            f"not {compression or 'float'}; resume it with the same compression flag")
        if int(info["epoch"]) > epochs:
            raise UserError(f"checkpoint in {output_dir} is at epoch {info['epoch']}, beyond --epochs {epochs}: "
                            f"resume with --epochs >= {info['epoch']} (epochs counts the resumed ones)")
        model = load_checkpoint(ckpt_dir, expect=spec)
        extra_cbs = []
        if compression == "prune":  # stripped in the checkpoint: wrap again, same schedule
            model, extra_cbs = prepare_model(_tag_spec(model, spec), "prune", target_sparsity,
                                             structured_2_4, total_steps)
        opt_path = os.path.join(info["path"], "optimizer.npz")
        if os.path.isfile(opt_path):
            _load_optimizer(optimizer, model, opt_path)
        initial_epoch = int(info["epoch"])
        history = _resumed_history(info, output_dir)
        optimizer.iterations.assign(initial_epoch * steps)
        sys.stderr.write(f"[tfmobile] resuming {spec.name} from epoch {initial_epoch} of {epochs}\n")
    else:
        model, extra_cbs = prepare_model(model, compression, target_sparsity, structured_2_4, total_steps)
    compile_model(model, optimizer)   # the model returned is compiled with the optimizer that trained it
    trained, teacher_trainable = model, None
    if distill:
        teacher_trainable, teacher.trainable = teacher.trainable, False   # frozen: no optimizer slots, no updates
        trained, loss, accuracy = _distillation_model(model, teacher, float(distill), float(temperature))
        trained.compile(optimizer=optimizer, loss=loss, metrics=[accuracy])
    _create_step_variables(trained, optimizer)

    os.makedirs(output_dir, exist_ok=True)
    callbacks = list(extra_cbs)
    if tensorboard:
        callbacks.append(ScalarLogger(os.path.join(output_dir, "logs")))
    callbacks.append(_EpochCheckpoint(output_dir, compression, spec, history, time.time(), on_epoch, student=model))
    t0 = time.time()
    if initial_epoch < epochs and verbose:
        sys.stderr.write(f"[tfmobile] {spec.name} {compression or 'float'}: {schedule.describe()}; "
                         f"augment: {', '.join(augment) or 'none'}"
                         f"{f'; distilled (weight {distill:g}, T {temperature:g})' if distill else ''}\n")
    try:
        if initial_epoch < epochs:
            with contextlib.redirect_stdout(sys.stderr):  # stdout stays one JSON object with --json
                trained.fit(train_ds, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                            validation_data=val_ds, callbacks=callbacks, verbose=0)  # our line, not Keras'
    finally:
        if teacher_trainable is not None:
            teacher.trainable = teacher_trainable
    seconds = time.time() - t0
    val_acc = history[-1].get("val_accuracy") if history else None
    warnings = []
    chance = near_chance(val_acc, splits.y_val, len(splits.class_names))
    if chance:
        warnings.append(chance_message(val_acc, chance, schedule, len(splits.x_train), splits.source))
        sys.stderr.write(f"[tfmobile] warning: {warnings[-1]}\n")
    metrics = {
        "model": spec.name, "family": spec.family, "input_shape": list(input_shape),
        "compression": compression, "epochs": epochs, "resumed_from_epoch": initial_epoch,
        "batch_size": batch_size, "steps_per_epoch": steps, "steps": int(optimizer.iterations.numpy()),
        "schedule": schedule.to_dict(), "lr": lr, "optimizer": "adam+cosine",
        "clipnorm": clipnorm,
        "distillation": {"weight": float(distill), "temperature": float(temperature)} if distill else None,
        "augment": list(augment), "shift": float(shift) if "shift" in augment else 0.0,
        "train_images": int(len(splits.x_train)), "val_images": int(len(splits.x_val)),
        "data_source": splits.source, "params": int(model.count_params()),
        "val_accuracy": val_acc,
        "train_accuracy": history[-1].get("accuracy") if history else None,
        "train_seconds": round(seconds, 1),
        "total_train_seconds": round(sum(h["seconds"] for h in history), 1),
        "checkpoint": os.path.abspath(ckpt_dir), "history": history, "warnings": warnings,
    }
    if compression == "prune":
        metrics["target_sparsity"] = target_sparsity
        metrics["structured_2_4"] = bool(structured_2_4)
    write_json(os.path.join(output_dir, "metrics.json"), metrics)
    return model, metrics


def near_chance(val_accuracy, y_val, num_classes):
    """The chance accuracy when ``val_accuracy`` is within a quarter of the way from it to 100 %.

    Chance is the larger of 1/classes and the most frequent validation class (always guessing it).
    Returns None when the model learnt something (or there is no validation accuracy).
    """
    if val_accuracy is None or len(y_val) == 0:
        return None
    counts = np.bincount(np.asarray(y_val, np.int64), minlength=num_classes)
    chance = max(1.0 / max(num_classes, 1), counts.max() / counts.sum())
    return chance if val_accuracy < chance + 0.25 * (1.0 - chance) else None


def chance_message(val_accuracy, chance, schedule, n_train, source):
    """What a near-chance run means and what to try, in one line."""
    return (f"validation accuracy {100 * val_accuracy:.1f} % is near chance ({100 * chance:.1f} %): the "
            f"model has not learnt the classes of {source}. It ran {schedule.total_steps} optimizer steps "
            f"({schedule.passes:g} passes over {n_train} training images at batch {schedule.batch_size}). "
            f"Try more steps (--epochs {max(2, math.ceil(2 * schedule.passes))}), a smaller "
            f"--batch_size, a lower --lr, --augment none, more images per class, and check that the "
            f"class folders hold different images.")


def evaluate(model, images, labels, batch_size=256):
    """Top-1 accuracy of a Keras model (eval mode) on uint8 images (resized/preprocessed here)."""
    from tfmobile.data import make_dataset

    spec = _spec_json(model)
    ds = make_dataset(images, labels, tuple(spec.input_shape), batch_size)
    correct = n = 0
    for x, y in ds:
        p = model(x, training=False).numpy().argmax(-1)
        correct += int((p == y.numpy()).sum())
        n += len(p)
    return correct / max(n, 1)


# --------------------------------------------------------------------------------------------
# a training run's start and end (python -m pipelines.train)
# --------------------------------------------------------------------------------------------
def run_spec(load_dataset, model="mbv2", alpha=0.35, resolution=32, bn_momentum=0.9, from_checkpoint=None,
             compression=None, dataset=None):
    """(spec, dataset) of a training run.

    The architecture is the starting checkpoint's for a compression run (which must be of the kind
    ``compression`` starts from: float for QAT / pruning, pruned for PQAT), else the zoo ``model``'s
    with as many classes as the data has. load_dataset(image_size=(h, w), channels=c) loads the data
    at the architecture's input size, unless ``dataset`` was loaded already (a zoo run loads it
    before TensorFlow is imported, so that bad data is reported at once).
    """
    from tfmobile import models

    if from_checkpoint:
        info = checkpoint_info(from_checkpoint)
        want = {"qat": None, "prune": None, "pqat": "prune", None: None}[compression]
        if info["compression"] != want:
            raise UserError(f"{from_checkpoint} is a {info['compression'] or 'float'} checkpoint; "
                            f"--{compression or 'float training'} needs a {want or 'float'} one")
        spec = checkpoint_spec(from_checkpoint)
    else:
        spec = models.get_spec(model, input_shape=(resolution, resolution, 3), alpha=alpha, classes=10,
                               bn_momentum=bn_momentum)
    h, w, c = spec.input_shape
    dataset = dataset or load_dataset(image_size=(h, w), channels=c)
    if not from_checkpoint and dataset.num_classes != spec.classes:
        spec = models.get_spec(model, input_shape=(h, w, c), alpha=alpha, classes=dataset.num_classes,
                               bn_momentum=bn_momentum)
    if dataset.num_classes != spec.classes:
        raise UserError(f"checkpoint has {spec.classes} classes but the data has {dataset.num_classes}")
    return spec, dataset


def starting_model(spec, from_checkpoint=None, resume=False):
    """The model ``fit`` starts from: the starting checkpoint's (it carries its spec), or a fresh
    build of ``spec`` (a resumed run replaces it with its own checkpoint inside ``fit``)."""
    from tfmobile import models

    if from_checkpoint and not resume:
        return load_checkpoint(from_checkpoint)
    return models.build(spec)


def finish_run(model, metrics, splits, output_dir, compression=None, evaluate_test=True, from_checkpoint=None,
               progress=None):
    """``metrics`` (from ``fit``) completed with the sparsity report of a pruned / PQAT model, the
    Keras test accuracy (measured once, here) and the starting checkpoint; written again to
    OUTPUT_DIR/metrics.json and returned."""
    if compression in ("prune", "pqat"):
        from tfmobile import compress

        report_model = compress.strip(model) if compression == "prune" else model
        try:
            metrics["sparsity"] = compress.sparsity_report(report_model)
        except Exception as e:  # noqa: BLE001  (the report is informative; training already succeeded)
            if progress:
                progress(f"sparsity report failed: {e}")
    if evaluate_test and len(splits.x_test):
        metrics["test_accuracy_keras"] = evaluate(model, splits.x_test, splits.y_test)
    if from_checkpoint:
        metrics["from_checkpoint"] = os.path.abspath(from_checkpoint)
    write_json(os.path.join(output_dir, "metrics.json"), metrics)
    return metrics


def fit_or_load(make_model, splits, output_dir, epochs, compression=None, **fit_kwargs):
    """A restartable training stage: (model, metrics) of the run in ``output_dir``.

    A finished run (its checkpoint at ``epochs`` or beyond) is loaded with its metrics.json, not
    trained again; an unfinished one is resumed; otherwise ``make_model()`` is trained. The model
    is returned as its checkpoint holds it (pruning wrappers stripped).
    """
    ckpt_dir = os.path.join(output_dir, CHECKPOINT_DIR)
    started = os.path.isfile(os.path.join(ckpt_dir, "checkpoint.json"))
    if started and _finished(ckpt_dir, epochs):
        with open(os.path.join(output_dir, "metrics.json"), encoding="utf-8") as f:
            return load_checkpoint(ckpt_dir), json.load(f)
    model, metrics = fit(make_model(), splits, output_dir, epochs=epochs, compression=compression,
                         resume=started, **fit_kwargs)
    if compression == "prune":
        from tfmobile import compress

        model = compress.strip(model)   # keeps the model's spec
    return model, metrics


def _finished(ckpt_dir, epochs):
    try:
        return checkpoint_info(ckpt_dir)["epoch"] >= epochs
    except (UserError, KeyError, TypeError):
        return False
