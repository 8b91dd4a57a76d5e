"""Any directory of class-subfolders of images (PNG/JPEG/BMP/GIF), decoded with tf.io.

Layout: ``DIR/<class>/*.png``. If ``DIR`` holds ``train/`` and ``test/`` (each with the same class
subfolders) they are used as the two splits; otherwise every image is a training image and a
stratified test split is held out (``test_fraction``). Images are decoded, resized to ``size`` and
kept as uint8 [N, H, W, C] in an :class:`ImageData`, so they flow through the same pipelines as
Fashion-MNIST.
"""
import os

import numpy as np

from tfmobile.data.fashion_mnist import ImageData
from tfmobile.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def list_image_dir(directory):
    """(paths, labels, class_names) of a class-subfolder directory; UserError for empty/odd trees."""
    if not os.path.isdir(directory):
        raise UserError(f"image directory not found: {directory}")
    classes = sorted(d for d in os.listdir(directory)
                     if os.path.isdir(os.path.join(directory, d)) and not d.startswith("."))
    if not classes:
        raise UserError(f"image directory {directory} has no class subfolders, so no images "
                        f"(expected {directory}/<class>/<image>.png)")
    paths, labels = [], []
    for i, c in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(directory, c))
                       if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        if not files:
            raise UserError(f"class {c!r} in {directory} has no images "
                            f"({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)})")
        paths += [os.path.join(directory, c, f) for f in files]
        labels += [i] * len(files)
    return paths, np.asarray(labels, np.int64), tuple(classes)


def decode_images(paths, size, channels):
    """uint8 [N, h, w, channels] of image files, resized like every training image (bilinear,
    antialiased) to ``size`` = (h, w)."""
    import tfmobile  # noqa: F401
    import tensorflow as tf

    out = np.empty((len(paths), size[0], size[1], channels), np.uint8)
    for i, p in enumerate(paths):
        try:
            raw = tf.io.read_file(p)
            img = tf.io.decode_image(raw, channels=channels, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot decode image {p}: {msg}") from None
        if img.shape[0] != size[0] or img.shape[1] != size[1]:
            img = tf.image.resize(img, size, method="bilinear", antialias=True)
            img = tf.clip_by_value(tf.round(img), 0, 255)
        out[i] = tf.cast(img, tf.uint8).numpy()
    return out


def load_image_dir(directory, size=(32, 32), channels=3, test_fraction=0.2, seed=0):
    """An :class:`ImageData` from a directory of class subfolders (see module docstring)."""
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 or 3, got {channels}")
    size = (int(size[0]), int(size[1]))
    train_dir, test_dir = os.path.join(directory, "train"), os.path.join(directory, "test")
    if os.path.isdir(train_dir) and os.path.isdir(test_dir):
        ptr, ytr, classes = list_image_dir(train_dir)
        pte, yte, classes_te = list_image_dir(test_dir)
        if classes_te != classes:
            raise UserError(f"{train_dir} and {test_dir} have different class folders: "
                            f"{list(classes)} vs {list(classes_te)}")
        xtr, xte = decode_images(ptr, size, channels), decode_images(pte, size, channels)
    else:
        paths, labels, classes = list_image_dir(directory)
        x = decode_images(paths, size, channels)
        tr, te = stratified_split(labels, test_fraction, seed)
        xtr, ytr, xte, yte = x[tr], labels[tr], x[te], labels[te]
    if channels == 1:
        xtr, xte = xtr[..., 0], xte[..., 0]
    return ImageData(xtr, ytr, xte, yte, source=os.path.abspath(directory), class_names=classes)


def stratified_split(labels, fraction, seed=0):
    """(keep_idx, held_idx): ``fraction`` of every class held out (>= 1 image when a class has 2+)."""
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"split fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(fraction * len(idx)))
        if fraction > 0 and n == 0 and len(idx) >= 2:
            n = 1
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))
