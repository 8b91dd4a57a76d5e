"""tf.data input pipelines: one dataset choice, a validation split carved from train, augmentation,
and the default training length.

    data = load_dataset(data_dir=None)                 # Fashion-MNIST: --data_dir, Debian, subset
    splits = train_val_split(data, val_fraction=0.1)   # the test set is never used for choices
    sched = default_schedule(len(splits.x_train))      # batch size, epochs, steps for this much data
    ds = make_dataset(splits.x_train, splits.y_train, (32, 32, 3), sched.batch_size, training=True,
                      augment=default_augment(splits.source))

Every image goes through the ``tfmobile.data.preprocess`` convention: resize to the model
resolution (bilinear), grey repeated to 3 channels when the model wants RGB, float32 in [-1, 1].
Images are resized once (uint8, cached in memory) and augmented per batch. Augmentations are named
(``AUGMENTATIONS``): ``shift`` (pad by ``shift`` = 1/8 of the side with zeros, random crop back)
keeps any label; ``flip`` (random left-right mirror) changes the label of digits, letters, arrows
and anything else whose orientation matters, so it is on by default only for the built-in
Fashion-MNIST (garments are left/right symmetric) and otherwise only when asked for.

Training length is defined in optimizer steps, not epochs: 40 epochs are 80 steps on 200 images at
batch 128 (nothing learnt) and 17,000 on 54,000. ``default_schedule`` picks a batch size that gives
enough steps per epoch and enough epochs for at least ``MIN_STEPS`` steps.
"""
import math
import os
from dataclasses import dataclass

import numpy as np

from tfmobile.data.fashion_mnist import DEBIAN_DIR, SUBSET_DIR, ImageData, load_fashion_mnist
from tfmobile.data.image_dir import is_image_name, load_image_dir, stratified_split
from tfmobile.errors import UserError


@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    class_names: tuple
    notes: tuple = ()   # what the loader left out (ImageData.notes), for the run's report

    @property
    def num_classes(self):
        return len(self.class_names)


def load_keras_fashion_mnist():
    """Fashion-MNIST through keras.datasets (downloads; for users with internet)."""
    import tfmobile  # noqa: F401
    import tf_keras as keras

    try:
        (xtr, ytr), (xte, yte) = keras.datasets.fashion_mnist.load_data()
    except Exception as e:  # network errors come in many types
        raise UserError(f"keras.datasets.fashion_mnist download failed: {str(e).splitlines()[0]}") from None
    return ImageData(xtr, ytr.astype(np.int64), xte, yte.astype(np.int64), source="keras.datasets")


def load_dataset(data_dir=None, subset=False, image_dir=None, keras_datasets=False,
                 image_size=(32, 32), channels=3):
    """The training data as uint8 :class:`ImageData`.

    image_dir: a directory of class subfolders (resized to ``image_size`` when decoded);
    keras_datasets: Fashion-MNIST via keras.datasets (needs internet); otherwise Fashion-MNIST IDX
    files from ``data_dir``, else the Debian package, else (or with ``subset``) the shipped subset.
    A ``data_dir`` that has class subfolders but no IDX files is read as an image directory.
    """
    chosen = [bool(image_dir), bool(keras_datasets), bool(data_dir)]
    if sum(chosen) > 1:
        raise UserError("choose one data source: data_dir, image_dir or keras_datasets")
    if image_dir:
        return load_image_dir(image_dir, size=image_size, channels=channels)
    if keras_datasets:
        return load_keras_fashion_mnist()
    if data_dir and os.path.isdir(data_dir) and not any(
            n.startswith(("train-images", "t10k-images")) for n in os.listdir(data_dir)):
        subdirs = [d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d))]
        if subdirs:
            return load_image_dir(data_dir, size=image_size, channels=channels)
        images = [n for n in os.listdir(data_dir) if is_image_name(n)]
        if images:
            raise UserError(f"{data_dir} holds {len(images)} images but no class subfolders: put each "
                            f"class's images in its own subfolder, {data_dir}/<class>/<image>.png")
        raise UserError(f"Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz] and the other three) not found "
                        f"in {data_dir}, and no class subfolders of images ({data_dir}/<class>/<image>.png) either")
    return load_fashion_mnist(data_dir, subset=subset)


def check_output_outside_data(output_dir, data_dir):
    """UserError when ``output_dir`` is ``data_dir`` or inside it: the next run would read the
    previous run's files (its plot, its exported images) as data, e.g. as a new class."""
    if not output_dir or not data_dir:
        return
    out, data = os.path.realpath(output_dir), os.path.realpath(data_dir)
    if out == data or out.startswith(data.rstrip(os.sep) + os.sep):
        raise UserError(f"--output_dir {output_dir} is inside the data directory {data_dir}: the next run "
                        f"would read this run's files as data; choose an output directory outside it")


def load_splits(data_dir=None, subset=False, image_size=(32, 32), channels=3, val_fraction=0.1, seed=0,
                limit=None, image_dir=None, keras_datasets=False, dataset=None):
    """(dataset, train/val/test splits): the one way a run (main job, training, NetAdapt) reads its data.

    The sources are ``load_dataset``'s; ``dataset``: split this already loaded one instead.
    """
    if dataset is None:
        dataset = load_dataset(data_dir, subset=subset, image_dir=image_dir, keras_datasets=keras_datasets,
                               image_size=image_size, channels=channels)
    return dataset, train_val_split(dataset, val_fraction, seed=seed, limit=limit)


def train_val_split(data, val_fraction=0.1, seed=0, limit=None):
    """Carve a stratified validation split out of the training set; the test set is left alone.

    limit: keep only this many training images (stratified; for quick runs and tests).
    """
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction must be in (0, 1), got {val_fraction}")
    x, y = data.x_train, np.asarray(data.y_train)
    if len(x) == 0:
        raise UserError(f"no training images in {data.source}")
    if len(np.unique(y)) < 2:
        raise UserError(f"{data.source} has training images of {len(np.unique(y))} class only: "
                        "a classifier needs at least 2 classes")
    if limit is not None and limit < len(x):
        if limit < 2 * data.num_classes:
            raise UserError(f"limit must be at least {2 * data.num_classes} images, got {limit}")
        _, keep = stratified_split(y, limit / len(x), seed + 7)
        x, y = x[keep], y[keep]
    tr, va = stratified_split(y, val_fraction, seed)
    if len(va) == 0:
        largest = int(np.bincount(y).max())
        raise UserError(f"too few training images ({len(x)}) for a validation split: no class has more than "
                        f"{largest} training image{'s' if largest > 1 else ''} (a validation image comes from a "
                        f"class with 2 or more); give each class at least 2 training images, or 3 per class "
                        f"folder when the test split is taken from it too")
    if len(tr) == 0:
        raise UserError(f"val_fraction {val_fraction} leaves no training images of {len(x)}: use a smaller one")
    return Splits(x[tr], y[tr], x[va], y[va], data.x_test, np.asarray(data.y_test), data.source,
                  tuple(data.class_names), tuple(getattr(data, "notes", ())))


def resize_uint8(images, input_shape):
    """uint8 [N,H,W(,C)] -> uint8 [N,h,w,c] at the model resolution (bilinear, grey -> RGB)."""
    import tfmobile  # noqa: F401
    import tensorflow as tf

    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise UserError(f"images must be [N,H,W] or [N,H,W,C], got shape {x.shape}")
    h, w, c = input_shape
    if x.shape[1:3] != (h, w):
        out = np.empty((len(x), h, w, x.shape[-1]), np.uint8)
        for s in range(0, len(x), 4096):  # bounded memory for 60k images at 224x224
            r = tf.image.resize(tf.convert_to_tensor(x[s:s + 4096], tf.float32), (h, w), method="bilinear")
            out[s:s + 4096] = np.clip(np.round(r.numpy()), 0, 255).astype(np.uint8)
        x = out
    if x.shape[-1] != c:
        if x.shape[-1] == 1:
            x = np.repeat(x, c, axis=-1)
        elif c == 1:
            x = np.round(x.mean(axis=-1, keepdims=True)).astype(np.uint8)
        else:
            raise UserError(f"cannot map {x.shape[-1]}-channel images to a {c}-channel model input")
    return np.ascontiguousarray(x, np.uint8)


# Random shift, as a fraction of the side (4 px at 32x32). Long runs; short ones may want 0.
DEFAULT_SHIFT = 0.125
AUGMENTATIONS = ("flip", "shift")
# Sources whose classes survive a left-right flip: the built-in Fashion-MNIST copies.
FLIP_SAFE_SOURCES = ("keras.datasets",)


def flips_are_safe(source):
    """True for the built-in Fashion-MNIST (shipped subset, Debian package, keras.datasets) only:
    a user's IDX directory or image folders may hold digits, letters or arrows."""
    if source in FLIP_SAFE_SOURCES:
        return True
    path = os.path.realpath(os.fspath(source))
    return path in (os.path.realpath(SUBSET_DIR), os.path.realpath(DEBIAN_DIR))


def default_augment(source):
    """The augmentations that keep every label of ``source`` (a Splits/ImageData ``source``)."""
    return ("flip", "shift") if flips_are_safe(source) else ("shift",)


def parse_augment(value, source=None):
    """Augmentation names from a flag value or argument.

    ``None``/``True``: ``default_augment(source)``; ``False``, ``""``, ``"none"``: none;
    ``"flip,shift"`` or a sequence of names: those. Returns a tuple in ``AUGMENTATIONS`` order.
    """
    if value is None or value is True:
        return default_augment(source) if source is not None else ("shift",)
    if value is False:
        return ()
    names = value.split(",") if isinstance(value, str) else list(value)
    names = {str(n).strip().lower() for n in names} - {"", "none"}
    unknown = sorted(names - set(AUGMENTATIONS))
    if unknown:
        raise UserError(f"unknown augmentation {', '.join(unknown)}; choose from "
                        f"{', '.join(AUGMENTATIONS)} (comma-separated) or none")
    return tuple(a for a in AUGMENTATIONS if a in names)


def augment_fn(input_shape, augment=AUGMENTATIONS, seed=None, shift=DEFAULT_SHIFT):
    """Per-image augmentation on uint8/float [h,w,c]: the named ``augment`` ops (see
    ``parse_augment``): random left-right flip, random shift of up to ``shift`` of the side."""
    import tfmobile  # noqa: F401
    import tensorflow as tf

    if not (0.0 <= shift < 0.5):
        raise UserError(f"shift must be in [0, 0.5), got {shift}")
    augment = parse_augment(augment)
    h, w, c = input_shape
    ph, pw = (int(round(h * shift)), int(round(w * shift))) if "shift" in augment else (0, 0)
    flip = "flip" in augment

    def fn(img):
        if flip:
            img = tf.image.random_flip_left_right(img, seed=seed)
        if ph == 0 and pw == 0:
            return img
        img = tf.pad(img, [[ph, ph], [pw, pw], [0, 0]])
        return tf.image.random_crop(img, (h, w, c), seed=seed)

    return fn


def make_dataset(images, labels, input_shape, batch_size=128, training=False, augment=None,
                 seed=0, shift=DEFAULT_SHIFT):
    """A batched tf.data.Dataset of (float32 [-1,1] images, int labels) for ``input_shape``.

    training: shuffle every epoch; otherwise fixed order. augment: names or a flag value
    (``parse_augment``); by default training batches are shifted, never flipped (label-safe for
    any data: pass ``default_augment(source)`` for the flips that suit the built-in data).
    """
    import tfmobile  # noqa: F401
    import tensorflow as tf

    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    x = resize_uint8(images, input_shape)
    y = np.asarray(labels, np.int64)
    if len(x) != len(y):
        raise UserError(f"{len(x)} images but {len(y)} labels")
    if len(x) == 0:
        raise UserError("no images to make a dataset from")
    augment = parse_augment(augment if augment is not None else training)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if augment:
        aug = augment_fn(input_shape, augment, shift=shift)
        ds = ds.map(lambda a, b: (aug(a), b), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda a, b: (tf.cast(a, tf.float32) / 127.5 - 1.0, b),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def representative_dataset(images, input_shape, n=100, seed=0):
    """Generator factory for TFLiteConverter.representative_dataset (n real images, batch 1)."""
    from tfmobile.data import sample_images

    x = sample_images(images, input_shape, n, seed)

    def gen():
        for i in range(len(x)):
            yield [x[i:i + 1]]

    return gen


# Default training length (see the module docstring). Measured on the shipped Fashion-MNIST
# subset and on small generated class-folder sets: docs/training.md, "Training length".
MIN_STEPS = 2500
MIN_EPOCHS = 15
BATCH_SIZES = (16, 32, 64, 128)
MIN_STEPS_PER_EPOCH = 64
# (min steps, min passes over the data) per stage: fine-tuning a trained model (QAT, pruning, PQAT) needs far
# fewer steps than training, but a tiny set still needs more than 2 epochs of 11 steps.
STAGE_FLOORS = {"train": (MIN_STEPS, MIN_EPOCHS), "qat": (200, 2), "pqat": (200, 2), "prune": (300, 3)}


@dataclass(frozen=True)
class Schedule:
    """How long a training run is: ``epochs`` x ``steps_per_epoch`` optimizer steps of ``batch_size``.

    An epoch is one validation + checkpoint round (one progress line): one pass over the data, or
    ``passes_per_epoch`` whole passes for a set too small for ``MIN_STEPS_PER_EPOCH`` steps per
    pass (174 images at batch 16 are 11 steps: a round every 11 steps would spend more time on
    checkpoints than on training).
    """

    batch_size: int
    epochs: int
    steps_per_epoch: int
    n_train: int
    rule: str  # how it was chosen, for the report
    passes_per_epoch: int = 1

    @property
    def total_steps(self):
        return self.epochs * self.steps_per_epoch

    @property
    def passes(self):
        """Passes over the training images (fractional when steps_per_epoch caps an epoch)."""
        return round(self.total_steps * self.batch_size / self.n_train, 1)

    def describe(self):
        extra = f", {self.passes_per_epoch} passes per epoch" if self.passes_per_epoch > 1 else ""
        return (f"{self.total_steps} optimizer steps = {self.epochs} epochs x {self.steps_per_epoch} steps of "
                f"batch {self.batch_size} ({self.passes:g} passes over {self.n_train} images{extra}; "
                f"{self.rule})")

    def to_dict(self):
        return {"batch_size": self.batch_size, "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps, "passes": self.passes,
                "passes_per_epoch": self.passes_per_epoch, "train_images": self.n_train, "rule": self.rule,
                "text": self.describe()}


def default_schedule(n_train, batch_size=None, epochs=None, steps_per_epoch=None, stage="train"):
    """The training length for ``n_train`` images; explicit arguments win.

    batch_size: the largest of ``BATCH_SIZES`` that still gives ``MIN_STEPS_PER_EPOCH`` steps per
    pass (16 for tiny sets). epochs: enough for the stage's minimum of optimizer steps and at
    least its minimum of passes (``STAGE_FLOORS``; stage is "train" or a compression: "qat",
    "prune", "pqat"); an epoch of a tiny set is several passes (see ``Schedule``). Given
    ``epochs`` are passes. steps_per_epoch caps an epoch (quick runs; it then repeats the data).
    """
    if stage not in STAGE_FLOORS:
        raise UserError(f"unknown training stage {stage!r}; one of {', '.join(STAGE_FLOORS)}")
    min_steps, min_passes = STAGE_FLOORS[stage]
    if n_train < 1:
        raise UserError("no training images")
    for name, v in (("batch_size", batch_size), ("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if v is not None and v < 1:
            raise UserError(f"{name} must be >= 1, got {v}")
    if batch_size is None:
        fits = [b for b in BATCH_SIZES if n_train / b >= MIN_STEPS_PER_EPOCH]
        batch_size = max(fits) if fits else BATCH_SIZES[0]
    batch_size, n_train = int(batch_size), int(n_train)
    batches = math.ceil(n_train / batch_size)
    if steps_per_epoch:
        return Schedule(batch_size, int(epochs or max(min_passes, math.ceil(min_steps / steps_per_epoch))),
                        min(batches, int(steps_per_epoch)), n_train, "steps per epoch capped")
    if epochs is not None:
        return Schedule(batch_size, int(epochs), batches, n_train, "epochs given")
    per = math.ceil(MIN_STEPS_PER_EPOCH / batches)
    spe = per * batches
    epochs = max(math.ceil(min_passes / per), math.ceil(min_steps / spe))
    return Schedule(batch_size, epochs, spe, n_train, f"at least {min_steps} steps and {min_passes} passes", per)
